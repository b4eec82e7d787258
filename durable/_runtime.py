"""Running workflows: :class:`Runtime` for services, :func:`run` for scripts.

A :class:`Runtime` owns a trio nursery with one task per loaded run. Starting
a run id that exists attaches to it (resuming it if it is unfinished), so
``start`` is safe to call again after a crash: it never starts a second run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import uuid
from collections.abc import Collection, Sequence
from typing import Any, TypeVar

import attrs
import trio

from . import _asyncio
from ._asyncio import Guest, Hosting, current_guest, on_asyncio, on_trio
from ._core import events as ev
from ._core.commands import ChildCall, Workflow, call_text, lookup_workflow
from ._core.errors import (
    DurableError,
    DurableInternalError,
    ErrorInfo,
    RunConflictError,
    RunLockedError,
    RunNotRetryableError,
    UnknownRunError,
    UnknownWorkflowError,
)
from ._core.ids import check_run_id
from ._core.machine import Replay, replay
from ._core.outcomes import (
    STATUS,
    Continued,
    Outcome,
    Raised,
    Returned,
    Stopped,
    outcome_of,
    result_of,
    status_of,
)
from ._core.values import encode_call, encode_value, load_stored, loads, same_value
from ._executor import Released, RunExecution, WallClock
from ._hooks import NO_HOOKS, Hooks
from ._inbox import drop_messages, forget_journaled, journal_messages, send
from ._loops import Loop, check_loop
from ._retry import retry_here
from ._store import Holder, JournalWriter, Opened, Store
from ._store_from import store_from
from ._telemetry import drive as traced_drive
from ._telemetry import run_telemetry, start_context
from ._watch import StoreWatch, ended

R = TypeVar("R")
_log = logging.getLogger("durable")
#: How many more due runs a worker asks for than it has room for: some of them are
#: taken by other workers between the answer and the open.
_DUE_SLACK = 16


class RunHandle:
    """A run started or attached to by a :class:`Runtime`.

    Attributes:
        run_id: the run's id.
        workflow: the workflow's journal name.
    """

    def __init__(self, run_id: str, workflow: str, args: bytes) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.args = args
        self._done = trio.Event()
        self._outcome: Outcome | None = None
        self._error: BaseException | None = None
        #: Set when the runtime let the run go while it waits, forgetting it (a worker):
        #: the run's end is then read from the store.
        self._let_go = trio.Event()
        self._store: Store | None = None
        #: How this runtime came to run it, for a worker's log: ``"started"`` (nothing
        #: had executed it), ``"resumed"`` (a run let go while it waited, or one whose
        #: process crashed), ``"retried"`` (``durable retry`` left it to be taken) or
        #: ``"taken over"`` (from ``_previous``, a holder that died).
        self._taken = "started"
        self._previous: Holder | None = None

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id!r} of {self.workflow!r}: {self.status}>"

    @property
    def status(self) -> str:
        """What this runtime knows of the run, without reading the store: ``"running"``
        (this runtime executes it: doing a step, or waiting in memory for a timer or a
        signal), ``"waiting"`` (let go while it waits: it runs again when due, here or in
        another process), ``"completed"``, ``"failed"`` (the workflow raised),
        ``"cancelled"`` or ``"error"`` (durable could not continue it: divergence, storage
        failure..., or this runtime stopped before it finished). The store's view, with
        the states of ``durable ls`` (``queued``, ``waiting`` for a run kept in memory,
        ``stalled``...), is ``ClientHandle.status()``."""
        if self._error is not None:
            return "error"
        if self._outcome is None:
            return "waiting" if self._let_go.is_set() else "running"
        if isinstance(self._outcome, Stopped):
            return "cancelled"
        return "completed" if isinstance(self._outcome, Returned) else "failed"

    def _finish(self, outcome: Outcome) -> None:
        self._outcome = outcome
        self._done.set()

    def _abort(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def _release(self, store: Store) -> None:
        """The runtime forgot the run while it waits: :meth:`result` reads its end from ``store``."""
        self._store = store
        self._let_go.set()

    async def _settled(self) -> None:
        """Wait until the run ends here or is let go."""
        async with trio.open_nursery() as nursery:

            async def wait(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait, self._done)
            nursery.start_soon(wait, self._let_go)

    @on_trio
    async def result(self) -> Any:
        """Wait for the run to end and return the workflow's result.

        Raises:
            WorkflowFailed: the workflow raised (the failure is journaled).
            Cancelled: the run was cancelled.
            NonDeterminismError, StoreError, ...: durable could not continue the run;
                nothing was journaled after the problem, so it can resume once fixed.
        """
        await self._settled()
        if not self._done.is_set() and self._store is not None:
            self._finish(await _end_in_store(self._store, self.run_id))
        if self._error is not None:
            raise self._error
        if self._outcome is None:
            raise DurableInternalError(f"run {self.run_id!r}: its handle finished without an outcome")
        return result_of(self._outcome, run_id=self.run_id, workflow=self.workflow)


class Runtime:
    """Runs workflows in a trio or asyncio program: ``async with durable.Runtime(store) as rt: ...``.

    Under asyncio (``asyncio.run``, a FastAPI lifespan) it works as under trio, and
    ``async def`` activities run on the asyncio loop, so asyncio libraries work in them.

    Args:
        store: a store, a directory for a :class:`FileStore`, or None for the
            embedded default (``$DURABLE_STORE`` or ``./.durable``).
        hooks: advanced: executor hooks (:class:`durable.lowlevel.Hooks`), used by the simulator.
        poll: how often (seconds) to look for signals and cancel requests that other
            processes left in the store for the runs held here; None never looks (only
            this runtime signals its runs). A store that notifies (PostgreSQL) wakes the
            runtime sooner.
        clock_anchor: advanced: the wall-clock time (epoch seconds) that trio's clock reads as
            "now" when the runtime starts; default ``time.time()``. The simulator fixes it so
            journals are byte-identical from run to run.
        waiting_cache: how many runs this runtime holds in memory before it lets a run
            that waits (a timer, a signal, a retry backoff of a second or more) go: the
            run is released to the store, which records when it is due, and replayed
            when its time comes or a message arrives. 0 releases every waiting run (what
            ``durable worker`` does); None keeps them all. Needs ``poll`` (the runtime
            looks for its released runs' messages).

    Leaving the ``async with`` block stops runs still in flight (their
    activities are cancelled); everything journaled stays, and ``recover()``
    resumes them later.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        *,
        hooks: Hooks | None = None,
        poll: float | None = 0.2,
        clock_anchor: float | None = None,
        waiting_cache: int | None = 10_000,
    ) -> None:
        self.store = store_from(store)
        if waiting_cache is not None and not (isinstance(waiting_cache, int) and waiting_cache >= 0):
            raise ValueError(f"waiting_cache must be a number of runs >= 0 or None (got {waiting_cache!r})")
        self.waiting_cache = waiting_cache if poll is not None else None
        #: Messages for the runs held here, and the runs it let go (durable._watch).
        self._watch = StoreWatch(self)
        #: Set by take_due(): this runtime takes whatever the store says is due, its own
        #: released runs included, so it keeps no memory of a run it lets go.
        self._serving = False
        self.hooks = hooks if hooks is not None else NO_HOOKS
        if poll is not None and not poll > 0:
            raise ValueError(f"poll must be a positive number of seconds or None (got {poll!r})")
        self._poll = poll
        self._clock_anchor = clock_anchor
        self._handles: dict[str, RunHandle] = {}
        self._executions: dict[str, RunExecution] = {}
        #: How many runs stopped executing here, ended or let go (not failed), and an
        #: event set (and replaced) at each: a worker waiting for work looks again, as a slot is free
        #: and the run let go may be due sooner than it planned to look (durable._worker).
        self._runs_stopped = 0
        self._a_run_stopped = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        #: The trio guest this runtime runs in when its trio run is hosted on asyncio
        #: (its async activities run on the host loop); under asyncio, the task that
        #: holds its nursery there (durable._asyncio).
        self._host: Guest | None = None
        self._hosting: Hosting | None = None
        self._clock: WallClock | None = None
        self._children = _Children(self)

    async def __aenter__(self) -> Runtime:
        if on_asyncio():  # trio runs as a guest on this asyncio loop (durable._asyncio)
            hosting = Hosting()
            await hosting.enter(self._enter, self._exit)
            self._hosting = hosting
            return self
        await self._enter()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._hosting is None:
            await self._exit()
            return
        hosting, self._hosting = self._hosting, None
        await hosting.leave()

    async def _enter(self) -> None:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self._clock = WallClock(self._clock_anchor)
        self._host = current_guest()
        if self._poll is not None:
            self._nursery.start_soon(self._watch.run, self._poll)

    async def _exit(self) -> None:
        if self._nursery is None:
            raise DurableInternalError("the runtime is leaving a context it never entered")
        self._nursery.cancel_scope.cancel()
        try:
            # Run tasks keep their errors in their handles, so the nursery only ever
            # ends with cancellations; the body's own exception propagates unwrapped.
            await self._nursery_cm.__aexit__(None, None, None)
        finally:
            self._nursery = None
            self._stop_handles()

    def _stop_handles(self) -> None:
        """The runs still in progress here as the runtime stops: their handles' ``result()``
        says so, rather than wait for an end that will not come here."""
        for handle in self._handles.values():
            if not handle._done.is_set() and not handle._let_go.is_set():
                handle._abort(
                    DurableError(
                        f"run {handle.run_id!r} did not finish here: its Runtime stopped (its `async "
                        "with` block ended) while the run was in progress. Its journal keeps what it "
                        "did; it resumes when a Runtime or a worker starts it again"
                    )
                )

    def _running(self) -> tuple[trio.Nursery, WallClock]:
        if self._nursery is None or self._clock is None:
            raise RuntimeError("use the Runtime inside `async with durable.Runtime(...) as rt:`")
        return self._nursery, self._clock

    @on_trio
    async def start(
        self, workflow: Workflow[..., Any], *args: Any, id: str | None = None, **kwargs: Any
    ) -> RunHandle:
        """Start a run of ``workflow``, or attach to the run ``id`` if it exists.

        Raises:
            RunConflictError: run ``id`` exists with another workflow or other arguments.
            SerializationError: an argument cannot be stored in the journal.
        """
        _, clock = self._running()
        check_workflow(workflow, "start")
        run_id = check_run_id(id) if id is not None else uuid.uuid4().hex
        encoded = encode_call(args, kwargs, what=f"workflow {workflow.name!r}")
        handle = self._handles.get(run_id)
        if handle is not None:
            _check_same(run_id, handle.workflow, handle.args, workflow.name, encoded)
            return handle
        # Open (not read, then open): an existing journal is scanned once.
        try:
            opened = await self.store.open(run_id)
        except RunLockedError as locked:
            return await _attach_finished(self.store, run_id, workflow, encoded, locked)
        if opened is not None:
            return await self._attach(run_id, opened, workflow, encoded)
        trace = start_context(run_id, workflow.name)  # "" unless the application traces
        started = ev.RunStarted(run_id, workflow.name, encoded, clock(), traceparent=trace)
        writer = await self.store.create(started)
        if writer is None:  # created by someone else meanwhile
            return await self.start(workflow, *args, id=run_id, **kwargs)
        return self._launch(workflow, [started], writer, resumed=False)

    async def _attach(
        self, run_id: str, opened: Opened, workflow: Workflow[..., Any], encoded: bytes
    ) -> RunHandle:
        started = opened.events[0]
        if not isinstance(started, ev.RunStarted):
            raise DurableInternalError(f"run {run_id!r}: an opened journal does not start with RunStarted")
        last = opened.events[-1]
        had_args = _first_args(started, encoded)
        same_call = started.workflow == workflow.name and same_value(had_args, encoded)
        if isinstance(last, ev.TERMINAL) or not same_call:
            opened.writer.close()
            _check_same(run_id, started.workflow, had_args, workflow.name, encoded)
            if not isinstance(last, ev.TERMINAL):
                raise DurableInternalError(f"run {run_id!r}: attached as finished, but not ended")
            return _finished(started, last)
        await self.hooks.point("recovering", run_id, None)
        return self._launch(workflow, opened.events, opened.writer, resumed=True)

    def _launch(
        self, workflow: Workflow[..., Any], events: list[ev.Event], writer: JournalWriter, *, resumed: bool
    ) -> RunHandle:
        nursery, clock = self._running()
        started = events[0]
        if not isinstance(started, ev.RunStarted):
            raise DurableInternalError("a run launched from a journal without RunStarted")
        handle = self._handles.get(started.run_id)  # a run it let go and takes back
        if handle is None or handle._done.is_set():
            handle = RunHandle(started.run_id, started.workflow, started.args)
            self._handles[started.run_id] = handle
        self._watch.let_go.pop(started.run_id, None)
        try:
            # Replayed here, before start() returns, so that the run can take signals at once.
            core = replay(workflow, events)
        except Exception as exc:
            writer.close()
            self._finished(handle, exc)
            return handle
        # A run that a Client created, and that nothing has executed yet, starts
        # here for the first time: not a recovery (no RunResumed on its timeline).
        recovery = resumed and any(not isinstance(e, ev.Message) for e in events[1:])
        handle._taken = _how_taken(events) if recovery else "started"
        execution = self._execution(core, writer, clock, resumed=recovery, journal=events)
        self._executions[handle.run_id] = execution
        nursery.start_soon(self._drive, handle, execution, resumed)
        return handle

    def _execution(
        self,
        core: Replay,
        writer: JournalWriter,
        clock: WallClock,
        *,
        resumed: bool,
        journal: Sequence[ev.Event] = (),
    ) -> RunExecution:
        """An execution of a run (an incarnation of it) by this runtime; ``journal``: what
        ``core`` replayed (the heartbeats of earlier attempts, for the next ones)."""
        return RunExecution(
            core,
            writer,
            clock,
            self.hooks,
            resumed=resumed,
            journal=journal,
            children=self._children,
            release=self._watch.may_release,
            activity_host=self._host,
            telemetry=run_telemetry(core.started),
        )

    async def _drive(self, handle: RunHandle, execution: RunExecution, opened: bool) -> None:
        try:
            if opened:  # messages left while no process held it
                await self._take_messages(handle.run_id)
            outcome = await traced_drive(execution)
            while isinstance(outcome, Continued):  # follow the chain of fresh journals
                execution = await _continue(self, execution, outcome)
                outcome = await traced_drive(execution)
            if isinstance(outcome, Released):
                await self.store.release(execution.writer, outcome.due)
                if self._serving:  # the store's due index brings it back: keep nothing of it
                    del self._handles[handle.run_id]
                    handle._release(self.store)
                else:
                    self._watch.release(handle.run_id, outcome.due)
                return  # the handle waits for the run's end, here or elsewhere
            await ended(self.store, handle.run_id, status_of(outcome))
        except Exception as exc:
            self._finished(handle, exc)
        else:
            handle._finish(outcome)
        finally:
            # The execution that ended, and the next incarnation's if _continue failed
            # after putting it in place.
            current = self._executions.pop(handle.run_id, None)
            for over in [execution] if current in (None, execution) else [execution, current]:
                over.writer.close()
                over.replaced.set()
            if handle._error is None:  # not one that failed: taken again at once, it would spin
                self._runs_stopped += 1
                self._a_run_stopped.set()
                self._a_run_stopped = trio.Event()

    def _finished(self, handle: RunHandle, error: Exception) -> None:
        """Durable could not continue the run: a later start() may try again."""
        handle._abort(error)
        if self._handles.get(handle.run_id) is handle:
            del self._handles[handle.run_id]

    @on_trio
    async def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send the signal ``name`` with ``payload`` to the run ``run_id``.

        The signal is journaled (and durable) before this returns; the run takes
        it at its next ``durable.wait_signal(name)``, now or after a recovery.
        A run that another process holds (a ``durable worker``) gets it through
        the store's inbox: it is durable there when this returns, and that
        process journals it within its ``poll`` interval. A run loaded nowhere
        gets it in its journal at once, delivered when it is recovered.

        Raises:
            UnknownRunError: there is no run ``run_id``.
            RunConflictError: the run has finished.
            SerializationError: the payload cannot be journaled.
        """
        _, clock = self._running()
        if not isinstance(name, str) or not name:
            raise TypeError(f"a signal name must be a non-empty str (got {name!r})")
        encoded = encode_value(payload, what=f"the payload of signal {name!r}")
        await _deliver(self, run_id, ev.SignalReceived(name, encoded, clock()))

    @on_trio
    async def cancel(self, run_id: str, reason: str = "") -> None:
        """Cancel the run ``run_id``: ``durable.Cancelled`` is thrown into it at its current
        ``yield`` and its in-flight activities are cancelled.

        The request is durable before this returns, so it survives a crash: in the
        journal, or, for a run another process holds, in the store's inbox until
        that process journals it. A run loaded nowhere is cancelled when it is
        recovered. The workflow may catch ``Cancelled`` and yield cleanup steps;
        if it lets it out, the run ends as cancelled.

        Raises:
            UnknownRunError: there is no run ``run_id``.
            RunConflictError: the run has finished.
        """
        _, clock = self._running()
        if not isinstance(reason, str):
            raise TypeError(f"a cancel reason must be a str (got {reason!r})")
        await _deliver(self, run_id, ev.CancelRequested(reason, clock()))

    @on_trio
    async def retry(self, run_id: str, reason: str = "") -> RunHandle:
        """Run the failed run ``run_id`` again, here, with the current code; return its handle.

        Its failure is superseded by a journaled ``RunRetried`` (durable when this
        returns; the history stays in the journal and ``durable show`` draws it).
        Replay feeds the steps that completed before the failure from the journal
        (none runs again), and the step the workflow raised from runs again live
        with fresh attempts (``activity_info().attempt`` is 1 again). If the workflow
        raised by itself (a bug since fixed), the fixed code goes on from that point.
        A failed child run that such a step ran is retried first. A crash at any
        point loses nothing: ``recover()`` or a worker continues the run.

        Args:
            reason: why, kept in the journal (for ``durable show``).

        Raises:
            UnknownRunError: there is no run ``run_id``.
            RunNotRetryableError: the run has not failed (it runs or waits, completed,
                was cancelled), or a step to run again ran a child run that was cancelled.
            UnknownWorkflowError: its workflow is not defined in this process (nothing
                is journaled: import the module that defines it).
            NonDeterminismError: the current code does not replay the run's journal up
                to its failure (nothing is journaled; see ``durable replay``).
            RunLockedError: another process holds the run.
        """
        _, clock = self._running()
        if run_id in self._executions:
            raise RunNotRetryableError(run_id, "running")
        workflow, opened = await retry_here(self.store, run_id, reason, clock)
        await self.hooks.point("recovering", run_id, None)
        return self._launch(workflow, opened.events, opened.writer, resumed=True)

    async def _take_messages(self, run_id: str) -> None:
        execution = self._executions.get(run_id)
        if execution is None:
            return

        async def journal(message: ev.Message) -> None:
            if not await execution.deliver(message):
                raise _Continuing

        try:
            await journal_messages(self.store, run_id, execution.core.messages_seen, journal)
        except _Continuing:
            pass  # they stay in the inbox, for the next incarnation (see _continue)
        except RunConflictError:  # the run ended before it took them
            await drop_messages(self.store, run_id)

    @property
    def running(self) -> int:
        """How many runs this runtime is executing now."""
        return len(self._executions)

    async def _until_a_run_stops(self, since: int) -> None:
        """Wait until a run executing here ends or is let go, unless one did since
        ``self._runs_stopped`` was ``since``."""
        if self._runs_stopped == since:
            await self._a_run_stopped.wait()

    @on_trio
    async def recover(self, *, limit: int | None = None) -> list[RunHandle]:
        """Resume every unfinished run in the store that no other process is running.

        Returns the handles of the runs resumed. A run whose workflow is not
        defined in this process gets a handle whose ``result()`` raises
        :class:`UnknownWorkflowError`; a run whose journal is damaged, one that
        raises :class:`JournalCorruptError` (the other runs are resumed all the same).

        Args:
            limit: resume at most this many runs (a worker's free capacity), so
                that workers sharing a store share its runs.
        """
        self._running()
        ids = [run_id for run_id in await self.store.unfinished() if run_id not in self._handles]
        return await self._open_and_launch(ids, limit)

    async def _open_and_launch(self, ids: list[str], limit: int | None) -> list[RunHandle]:
        """Open the runs (up to ``limit``; skipping those held elsewhere) and launch them."""
        handles: list[RunHandle] = []
        for run_id, opened in zip(ids, await self.store.open_many(ids, limit=limit), strict=True):
            if isinstance(opened, RunLockedError) or opened is None:
                continue  # another process is running it, or it vanished meanwhile
            if isinstance(opened, Exception):
                handle = RunHandle(run_id, "?", b"")
                handle._abort(opened)  # a damaged journal: durable cannot continue it
                handles.append(handle)
                continue
            handle_or_none = await _recovered(self, run_id, opened)
            if handle_or_none is not None:
                handles.append(handle_or_none)
        return handles

    @on_trio
    async def take_due(self, *, limit: int, exclude: Collection[str] = ()) -> list[RunHandle]:
        """Take up to ``limit`` runs that are due now and that no process holds: new runs
        nobody took, runs let go whose time came or that got a message, runs whose
        holder died. What ``durable worker`` calls with its free capacity.

        Returns the handles of the runs taken, as :meth:`recover` does. ``exclude``: runs
        not to take (a worker's runs it cannot run: their workflow is not defined here).
        """
        _, clock = self._running()
        self._serving = True
        if limit <= 0:
            return []
        # Asked for more than the limit: runs taken meanwhile by others are skipped.
        ids = await self.store.due_runs(clock(), limit + _DUE_SLACK + len(exclude))
        ids = [run_id for run_id in ids if run_id not in self._executions and run_id not in exclude]
        return await self._open_and_launch(ids, limit)


async def _recovered(runtime: Runtime, run_id: str, opened: Opened) -> RunHandle | None:
    """Launch a run that recovery opened in ``runtime`` (None if it had finished meanwhile)."""
    started = opened.events[0]
    if not isinstance(started, ev.RunStarted):
        raise DurableInternalError(f"run {run_id!r}: a recovered journal does not start with RunStarted")
    if isinstance(opened.events[-1], ev.TERMINAL):
        opened.writer.close()
        # Listed as due by an entry its end left behind.
        await ended(runtime.store, run_id, STATUS[type(opened.events[-1])])
        return None
    workflow = lookup_workflow(started.workflow)
    if workflow is None:
        opened.writer.close()
        handle = RunHandle(run_id, started.workflow, started.args)
        handle._abort(UnknownWorkflowError(started.workflow, run_id))
        return handle
    await runtime.hooks.point("recovering", run_id, None)
    handle = runtime._launch(workflow, opened.events, opened.writer, resumed=True)
    handle._previous = opened.previous
    if opened.previous is not None and handle._taken == "resumed":
        handle._taken = "taken over"
    return handle


async def _attach_finished(
    store: Store, run_id: str, workflow: Workflow[..., Any], encoded: bytes, locked: RunLockedError
) -> RunHandle:
    """Another process holds the run open: attach only if it has finished meanwhile."""
    events = await store.read(run_id)
    last = events[-1] if events else None
    if not isinstance(last, ev.TERMINAL):
        raise locked
    started = events[0] if events else None
    if not isinstance(started, ev.RunStarted):
        raise DurableInternalError(f"run {run_id!r}: a finished journal does not start with RunStarted")
    _check_same(run_id, started.workflow, _first_args(started, encoded), workflow.name, encoded)
    return _finished(started, last)


async def _deliver(runtime: Runtime, run_id: str, message: ev.Message) -> None:
    """Journal a message from outside into a run: through its execution if it runs in
    ``runtime``, else through the store's inbox (see :mod:`durable._inbox`)."""
    while (execution := runtime._executions.get(run_id)) is not None:
        if await execution.deliver(message):
            return
        await execution.replaced.wait()  # it continued as new: the next incarnation takes it
    await send(runtime.store, run_id, message)


def _how_taken(events: list[ev.Event]) -> str:
    """``"retried"`` for a run a retry left to be taken (its last record, messages aside,
    is ``RunRetried``), else ``"resumed"``."""
    last = next((e for e in reversed(events) if not isinstance(e, ev.Message)), None)
    return "retried" if isinstance(last, ev.RunRetried) else "resumed"


async def _continue(runtime: Runtime, previous: RunExecution, outcome: Continued) -> RunExecution:
    """Start the next incarnation of a run that continued as new, in a fresh journal.

    The messages the old incarnation holds and never took (signals no
    ``wait_signal`` took, a cancel request that came as it ended) carry over,
    exactly once: they are posted to the run's inbox with their ids, durably,
    before the fresh journal replaces the old one, then journaled first thing in
    the new incarnation. A crash before the replacement replays the old journal
    and posts them again (a post of a message id already waiting is a no-op); a
    crash after it finds them in the inbox.
    """
    core = previous.core
    run_id = core.run_id
    started = ev.RunStarted(
        run_id,
        core.workflow.name,
        outcome.args,
        previous.clock(),
        core.incarnation + 1,
        core.next_seq,
        # The same trace goes on (the one derived for a run journaled without one, too).
        previous.telemetry.traceparent if previous.telemetry is not None else core.started.traceparent,
    )
    carried = _carried_messages(core)
    await forget_journaled(runtime.store, run_id, core.messages_seen)
    for message in carried:
        await runtime.store.post(run_id, message)
    writer = await runtime.store.restart(started, previous.writer)
    execution = runtime._execution(Replay(core.workflow, started), writer, previous.clock, resumed=False)
    runtime._executions[run_id] = execution
    previous.replaced.set()
    try:
        for message in carried:  # first: they are older than what waits in the inbox
            if not await execution.deliver(message):
                break  # it continued as new at once: they wait in the inbox for the next
        await runtime._take_messages(run_id)  # removes the carried ones, journals any newer
    except RunConflictError:  # the new incarnation ended at once: nobody will take them
        await drop_messages(runtime.store, run_id)
    return execution


class _Children:
    """Runs the child workflows of a runtime's runs (the executor's ChildRunner)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def child_outcome(self, child_id: str, call: ChildCall) -> tuple[bytes, ErrorInfo | None]:
        """Start (or attach to) a child run here and wait for its end: ``(result, error)``.

        A child that another process holds is waited for by reading its journal.
        """
        try:
            handle = await self.runtime.start(call.workflow, *call.call_args, id=child_id, **call.call_kwargs)
        except RunLockedError:
            return await self._outcome_elsewhere(child_id)
        await handle._done.wait()
        if handle._error is not None:
            raise handle._error  # durable cannot continue the child, so not the parent either
        if handle._outcome is None:
            raise DurableInternalError(f"child run {child_id!r} ended without an outcome")
        return _child_outcome(handle._outcome)

    async def start_child(self, child_id: str, call: ChildCall) -> bool:
        """Start (or attach to) a child run, here or held elsewhere, without waiting for its
        end; True if it has ended already."""
        try:
            handle = await self.runtime.start(call.workflow, *call.call_args, id=child_id, **call.call_kwargs)
        except RunLockedError:  # another process runs it
            return False
        return handle._done.is_set()

    async def _outcome_elsewhere(self, run_id: str) -> tuple[bytes, ErrorInfo | None]:
        return _child_outcome(await _end_in_store(self.runtime.store, run_id, self.runtime._poll or 0.2))

    async def cancel_child(self, child_id: str, reason: str) -> None:
        """Cancel a child run whose parent gave its step up; nothing if it has ended."""
        with contextlib.suppress(RunConflictError, UnknownRunError):
            await self.runtime.cancel(child_id, reason)


_NONE = encode_value(None, what="None")


class _Continuing(Exception):
    """The run continued as new while its messages were being journaled."""


def _carried_messages(core: Replay) -> list[ev.Message]:
    """What the old incarnation never took, each with a message id: one it came with,
    or one derived from its place in the journal, the same at every recovery."""
    carried: list[ev.Message] = []
    for index, message in enumerate(core.unconsumed_messages()):
        if message.message_id:
            carried.append(message)
            continue
        key = f"{core.run_id}\0{core.incarnation}\0{index}".encode()
        carried.append(attrs.evolve(message, message_id="carried-" + hashlib.sha256(key).hexdigest()[:32]))
    return carried


def _child_outcome(outcome: Outcome) -> tuple[bytes, ErrorInfo | None]:
    """A child run's outcome as its parent journals it (``ChildCompleted``)."""
    if isinstance(outcome, Returned):
        return outcome.result, None
    if isinstance(outcome, Raised):
        return _NONE, outcome.error
    if not isinstance(outcome, Stopped):
        raise DurableInternalError(
            "in _child_outcome: a child's outcome is none of returned, raised or cancelled"
        )
    return _NONE, ErrorInfo("Cancelled", outcome.reason)


def check_workflow(workflow: object, verb: str) -> None:
    """Refuse anything but a workflow, with a hint for a call of one."""
    if isinstance(workflow, ChildCall):
        name = workflow.workflow.fn.__name__
        raise TypeError(
            f"{verb}() takes the workflow and its arguments separately: "
            f"{verb}({name}, ...), not {verb}({name}(...)) (calling a workflow "
            "makes a child-workflow command, for use inside another workflow)"
        )
    if not isinstance(workflow, Workflow):
        raise TypeError(f"{verb}() needs a function decorated with @durable.workflow (got {workflow!r})")


async def _end_in_store(store: Store, run_id: str, poll: float = 0.2) -> Outcome:
    """Wait for the end of a run that another process runs (or will run), read from its journal."""
    while True:
        token = store.change_token()
        events = await store.read(run_id)
        if events and isinstance(events[-1], ev.TERMINAL):
            return outcome_of(events[-1])
        await store.wait_for_change(poll, since=token)


def _finished(started: ev.RunStarted, last: ev.RunCompleted | ev.RunFailed | ev.RunCancelled) -> RunHandle:
    """The handle of a run whose journal ends with its outcome."""
    handle = RunHandle(started.run_id, started.workflow, started.args)
    handle._finish(outcome_of(last))
    return handle


def _check_no_loop_running() -> None:
    """Refuse ``durable.run`` inside async code: it would block the running loop for the
    whole run (trio), or fail deep in asyncio (``asyncio.run`` in a running loop)."""
    running = None
    asyncio = sys.modules.get("asyncio")  # not imported here: a loop runs only if it was
    if trio.lowlevel.in_trio_run():
        running = "a trio"
    elif asyncio is not None:
        with contextlib.suppress(RuntimeError):  # no running loop
            asyncio.get_running_loop()
            running = "an asyncio"
    if running is not None:
        raise RuntimeError(
            f"durable.run() runs its own event loop and blocks until the run ends, but {running} "
            "event loop is running here: in async code, use `async with durable.Runtime(store) as "
            "rt:`, then `handle = await rt.start(workflow, ..., id=...)` and `await handle.result()`"
        )


def _first_args(started: ev.RunStarted, given: bytes) -> bytes:
    """The arguments a run was started with, as far as the journal tells: a run that
    continued as new holds only its latest arguments, so any are taken as its own."""
    return started.args if started.incarnation == 0 else given


def _check_same(run_id: str, had_workflow: str, had_args: bytes, workflow: str, args: bytes) -> None:
    if had_workflow != workflow:
        raise RunConflictError(
            f"run {run_id!r} already exists as a run of workflow {had_workflow!r}; it cannot "
            f"be started again as {workflow!r} (choose another id)",
            run_id=run_id,
        )
    if not same_value(had_args, args):
        had, now = load_stored(had_args, run_id=run_id, what="the run's arguments"), loads(args)
        raise RunConflictError(
            f"run {run_id!r} of workflow {workflow!r} already exists with arguments "
            f"{_show_call(had)}, not {_show_call(now)}; a run id names one run (choose another id)",
            run_id=run_id,
        )


def _show_call(call: list[Any]) -> str:
    args, kwargs = call
    return call_text(args, kwargs, limit=None)


def run(
    workflow: Workflow[..., R],
    *args: Any,
    id: str | None = None,
    store: Store | str | os.PathLike[str] | None = None,
    loop: Loop = "trio",
    **kwargs: Any,
) -> R:
    """Run (or resume) the run ``id`` of ``workflow`` to completion and return its result.

    Synchronous: it starts the event loop itself, trio unless ``loop="asyncio"``
    (for ``async def`` activities written for asyncio libraries). Without ``id``
    a new unique id is made; without ``store`` it uses the embedded default
    (``$DURABLE_STORE`` or ``./.durable``).

    Raises:
        WorkflowFailed: the workflow raised.
    """

    check_workflow(workflow, "durable.run")
    check_loop(loop)
    _check_no_loop_running()

    async def main() -> Any:
        async with Runtime(store) as runtime:
            handle = await runtime.start(workflow, *args, id=id, **kwargs)
            return await handle.result()

    try:
        result: R = trio.run(main) if loop == "trio" else _asyncio.run(main)
    except BaseExceptionGroup as group:
        # Ctrl-C reaches trio's tasks and comes out grouped: a script sees it as itself.
        if group.split(KeyboardInterrupt)[1] is None:
            raise KeyboardInterrupt from None
        raise
    return result
