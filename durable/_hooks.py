"""Hooks: where a simulator (or a tracer) can watch and steer the executor.

The default :class:`Hooks` does nothing and costs one ``await`` per activity
attempt and per point. The crash simulator subclasses it to record every
execution, inject activity faults and crash at chosen points.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ._core.commands import ActivityInfo


class Hooks:
    """Observation and fault-injection points of the executor. Subclass to use."""

    #: Run sync activities in a worker thread (True) or inline on the trio thread.
    #: The simulator runs them inline, so virtual time cannot jump while one runs.
    sync_activities_in_thread: bool = True

    async def run_attempt(self, info: ActivityInfo, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one activity attempt: ``await call()``. Override to observe or inject faults."""
        return await call()

    def heartbeat(self, info: ActivityInfo) -> bool:
        """Whether a ``durable.heartbeat()`` of attempt ``info`` reaches durable (True).
        Called at each heartbeat, in the activity's own thread, after its details were
        checked; the simulator drops some to test ``heartbeat_timeout``."""
        return True

    def produce(self, name: str, run_id: str, seq: int, make: Callable[[], Any]) -> Any:
        """Produce the value of a side effect (``durable.now()``, ``random()``...): ``make()``."""
        return make()

    async def point(self, name: str, run_id: str, seq: int | None) -> None:
        """A named point in the executor: ``"activity-returned"`` (an attempt returned, its
        completion not yet journaled), ``"backoff"`` (a failed attempt is journaled, the wait
        starts), ``"timer"`` (a timer's deadline is journaled, the wait starts), ``"recovering"``
        (a process opened an unfinished run and is about to replay it)."""


NO_HOOKS = Hooks()
