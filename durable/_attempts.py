"""Attempting an activity under its retry policy: attempts, timeouts, backoffs.

The executor hands each activity step here. Attempts run on trio: an async
activity is awaited on the run's task (or, when the runtime is hosted on
asyncio, runs as an asyncio task on the host loop: :mod:`durable._asyncio`), a
sync one runs in a worker thread (or inline, for the simulator's hooks). An
async activity written for the other loop fails at once, with the fix in its
message (LoopMismatchError), and is not retried. An attempt that raises is reported (the
record is made by :mod:`durable._core.records`, which asks the policy whether it
is retried), durably, before the wait for the next one, so a crash during a
backoff resumes it where it was. ``sys.exit()`` in an activity fails the attempt
like any error: it must not stop the process that runs every other run.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ._asyncio import Guest, needs_other_loop
from ._core import events as ev
from ._core import records as rec
from ._core.commands import ActivityCall, ActivityInfo, current_activity
from ._core.errors import AttemptTimeout
from ._core.machine import Step
from ._hooks import Hooks

if TYPE_CHECKING:
    from ._executor import WallClock


class Attempts:
    """The attempts of one run's activities (see the module docstring)."""

    def __init__(self, run_id: str, clock: WallClock, hooks: Hooks, host: Guest | None = None) -> None:
        self.run_id = run_id
        self.clock = clock
        self.hooks = hooks
        #: The guest whose asyncio loop runs async activities; None: they run on trio.
        self.host = host
        # Hooks nobody overrides, on trio, are skipped on the hot path.
        self._direct = type(hooks) is Hooks and host is None

    async def run(
        self,
        step: Step,
        command: ActivityCall,
        report: Callable[[ev.Event], Awaitable[None]],
        may_release: Callable[[], bool] | None,
    ) -> ev.ActivityCompleted | ev.ActivityFailed | None:
        """Attempt an activity until it succeeds or fails for good; return its outcome event.

        Each failed attempt that will be retried is recorded durably through
        ``report`` (straight into the journal, or to a group's loop) before the wait.
        If ``may_release`` says so once that record is durable, it returns None: the
        run is let go during the backoff, and the next attempt is made when it is due.
        """
        policy = command.policy
        started_at = step.scheduled_at if step.scheduled_at is not None else self.clock()
        attempt = step.failed_attempts + 1
        if step.retry_at is not None:
            await self.clock.sleep_until(step.retry_at)
        while True:
            limit = (
                policy.timeout
                if policy.total_timeout is None  # no budget to cut it: no need to read the clock
                else policy.attempt_limit(now=self.clock(), started_at=started_at)
            )
            try:
                value = await self._attempt(step.seq, command, attempt, limit)
            except (Exception, SystemExit) as exc:
                # sys.exit() inside an activity fails that attempt like any error: it
                # must not stop the process that runs every other run (a worker).
                error = self._explained(exc, command)
                failure = rec.attempt_failed(step, command, attempt, error, self.clock(), started_at)
                if isinstance(failure, ev.ActivityFailed):
                    return failure
                await report(failure)
                if may_release is not None and may_release():
                    return None
                await self.hooks.point("backoff", self.run_id, step.seq)
                await self.clock.sleep_until(failure.retry_at)
                attempt += 1
                continue
            return rec.activity_returned(step, command, value, attempt, self.clock())

    async def _attempt(self, seq: int, command: ActivityCall, attempt: int, limit: float | None) -> Any:
        activity = command.activity
        info = ActivityInfo(self.run_id, seq, attempt, activity.name, command.policy.retries + 1)
        token = current_activity.set(info)
        try:
            if limit is None and activity.is_async and self._direct:
                return await activity.fn(*command.call_args, **command.call_kwargs)
            call = self._call(activity.fn, activity.is_async, command.call_args, command.call_kwargs)
            if limit is None:
                return await self.hooks.run_attempt(info, call)
            with trio.move_on_after(limit):
                return await self.hooks.run_attempt(info, call)
            raise AttemptTimeout(activity.name, self.run_id, seq, attempt, limit)
        finally:
            current_activity.reset(token)

    def _explained(self, exc: BaseException, command: ActivityCall) -> BaseException:
        """``exc``, or the LoopMismatchError it means: an async activity written for the
        other loop (with ``exc`` as its cause and its traceback)."""
        if not command.activity.is_async:
            return exc
        mismatch = needs_other_loop(exc, command.activity.name, "trio" if self.host is None else "asyncio")
        if mismatch is None:
            return exc
        mismatch.__cause__ = exc
        return mismatch.with_traceback(exc.__traceback__)

    def _call(
        self, fn: Callable[..., Any], is_async: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[[], Awaitable[Any]]:
        if is_async and self.host is not None:
            return functools.partial(self.host.run_activity, functools.partial(fn, *args, **kwargs))
        return _call(fn, is_async, not is_async and self.hooks.sync_activities_in_thread, args, kwargs)


def _call(
    fn: Callable[..., Any],
    is_async: bool,
    in_thread: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Callable[[], Awaitable[Any]]:
    if is_async:
        return functools.partial(fn, *args, **kwargs)
    if in_thread:
        # A sync activity runs in a worker thread; on timeout the thread is abandoned
        # (Python cannot kill it) and the attempt counts as failed.
        return functools.partial(
            trio.to_thread.run_sync, functools.partial(fn, *args, **kwargs), abandon_on_cancel=True
        )

    async def inline() -> Any:
        return fn(*args, **kwargs)

    return inline
