"""What a runtime watches in its store: messages for the runs it holds, and the runs it let go.

Other processes (a :class:`~durable.Client`, ``durable signal``) leave signals
and cancel requests in the store's inbox for a run this runtime holds: the
watch journals them into the run (:meth:`Runtime._take_messages`). A run this
runtime let go while it waits (``waiting_cache``) is taken back when it is due:
its time came (the watch sleeps until the earliest), or a message made it due
(the store's due index says so). If another process took it first, its handle
follows it there: it reads the run's end from the store.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING

import trio

from ._core import events as ev
from ._core.errors import RunLockedError, StoreError, UnknownRunError
from ._core.ids import parent_run_id
from ._core.outcomes import STATUS, outcome_of

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._store import Store

_log = logging.getLogger("durable")
#: A run that waits less than this (seconds) keeps its place: letting it go and
#: taking it back would cost more than the wait.
SHORT_WAIT = 1.0


async def ended(store: Store, run_id: str, status: str) -> None:
    """The run's end (``status``: completed, failed, cancelled) is durable: wake its
    parent (if it is a child run a parent may have let go waiting for it), then take
    it out of the due index. A crash in between leaves it listed, and whoever takes
    it finds it ended and does both."""
    parent = parent_run_id(run_id)
    if parent is not None:
        with contextlib.suppress(UnknownRunError, ValueError):
            await store.wake(parent)
    await store.ended(run_id, status)


class StoreWatch:
    """The watch of one runtime (see the module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        #: The runs the runtime let go, with when each is due.
        self.let_go: dict[str, float] = {}
        self._taking: set[str] = set()
        #: The wait of the watch between two looks, while it waits.
        self._waiting: trio.CancelScope | None = None

    def release(self, run_id: str, due: float) -> None:
        """Remember that the runtime let ``run_id`` go until ``due``: the watch takes it
        back then. A watch already waiting (until its next poll, or a later due time)
        wakes in time for it: with a long poll (the simulator's is a day), a run let go
        for ten minutes would otherwise come back only at the next look."""
        self.let_go[run_id] = due
        if self._waiting is not None:
            _, clock = self.runtime._running()
            wake_at = trio.current_time() + max(0.0, due - clock())
            self._waiting.deadline = min(self._waiting.deadline, wake_at)

    def may_release(self, due: float) -> bool:
        """The release policy of the runtime's executions: a run waiting until ``due`` is
        let go if the wait is not short and the runtime holds more runs than its
        ``waiting_cache``."""
        runtime = self.runtime
        if runtime.waiting_cache is None or runtime._clock is None:
            return False
        return due - runtime._clock() >= SHORT_WAIT and len(runtime._executions) > runtime.waiting_cache

    async def run(self, poll: float) -> None:
        """Watch until the runtime closes, looking at least every ``poll`` seconds."""
        reported: set[str] = set()
        runtime = self.runtime
        while True:
            try:
                token = self.store.change_token()
                if runtime._executions:
                    held = runtime._executions.keys()
                    for run_id in sorted((await self.store.runs_with_messages()) & held):
                        await self._take_messages_of_one(run_id, reported)
                if self.let_go:
                    await self._take_back(runtime._running()[1]())
                await self._wait_for_change(poll, token)
            except StoreError as exc:
                # The store is unavailable for now (a database restart...): the
                # messages wait, durably, until it answers again.
                _log.warning("durable: cannot look at the store (%s); trying again", exc)
                await trio.sleep(max(poll, 1.0))

    async def _wait_for_change(self, poll: float, token: int) -> None:
        """Wait for a change in the store, or until the next run let go here is due."""
        _, clock = self.runtime._running()
        soonest = min(self.let_go.values(), default=math.inf) - clock()
        waiting = trio.move_on_after(max(0.0, soonest))
        self._waiting = waiting
        try:
            with waiting:
                await self.store.wait_for_change(poll, since=token)
        finally:
            self._waiting = None

    async def _take_messages_of_one(self, run_id: str, reported: set[str]) -> None:
        """Take one run's messages; a failure that is this run's alone (a damaged message
        file) is reported once and keeps no other run from its messages."""
        try:
            await self.runtime._take_messages(run_id)
        except StoreError as exc:
            if run_id not in reported:
                reported.add(run_id)
                _log.warning("durable: cannot take the messages of run %r (%s)", run_id, exc)
        else:
            reported.discard(run_id)

    async def _take_back(self, now: float) -> None:
        """Take back the runs let go here that are due now: by their time, or by what the
        store's due index says (a message came)."""
        mine = set(self.let_go)
        due = await self.store.due_runs(now, len(mine), among=mine)
        due += [run_id for run_id, when in self.let_go.items() if when <= now and run_id not in due]
        for run_id in due:
            if run_id in self.let_go and run_id not in self._taking:
                self._taking.add(run_id)
                try:
                    await self._take_back_one(run_id)
                finally:
                    self._taking.discard(run_id)

    async def _take_back_one(self, run_id: str) -> None:
        runtime = self.runtime
        handle = runtime._handles.get(run_id)
        try:
            opened = await self.store.open(run_id)
        except RunLockedError:
            # Another process (a worker) took it: its handle follows it there.
            self.let_go.pop(run_id, None)
            if handle is not None:
                del runtime._handles[run_id]
                handle._release(self.store)
            return
        except StoreError as exc:
            self.let_go.pop(run_id, None)
            if handle is not None:
                runtime._finished(handle, exc)
            return
        if opened is None:
            self.let_go.pop(run_id, None)
            return
        last = opened.events[-1]
        if isinstance(last, ev.TERMINAL):  # another process took it and ended it
            self.let_go.pop(run_id, None)
            opened.writer.close()
            await ended(self.store, run_id, STATUS[type(last)])
            if handle is not None and not handle._done.is_set():
                handle._finish(outcome_of(last))
            return
        from ._runtime import _recovered  # noqa: PLC0415 - _runtime imports this module

        taken = await _recovered(runtime, run_id, opened)
        if self.let_go.pop(run_id, None) is not None:
            # Not launched (a launch forgets it): its workflow is no longer defined in
            # this process. Kept, it would be taken back at every turn of the watch;
            # its handle ends with the reason, and the run waits in the store for a
            # process that defines it.
            error = taken._error if taken is not None else None
            if handle is not None and isinstance(error, Exception):
                runtime._finished(handle, error)
