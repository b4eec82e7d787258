"""The trio executor: carries out what the replay core asks, journaling first.

One :class:`RunExecution` drives one run. It replays the journal into a
:class:`~durable._core.machine.Replay`, then loops: journal the next command, run
it (activities with their retry policy), journal the outcome and make it
durable, and only then feed it to the core. Every event the executor appends
goes through ``core.apply`` too, so the live path and the replay path are the
same code. The executor builds no record itself: it tells the core what
happened (a step started, an attempt raised, an activity returned, a timer
fired) and journals the record :mod:`durable._core.records` makes of it, so
what a record holds (and whether a failed attempt is retried) is decided in
the pure core.

Waiting: an execution given a ``release`` policy stops when all its run does
is wait (:func:`~durable._core.actions.waits_until`: timers, signal waits,
retry backoffs, their deadlines journaled) and the policy agrees: it makes the
journal durable and returns :class:`Released` instead of an outcome, and its
runtime lets the run go (the store records when it is due). Whoever takes the
run when it is due replays it to where it was, exactly as after a crash.

Time: the executor measures every wait on trio's clock and converts to wall
time only to journal it (:class:`WallClock`), so retry waits and timeouts run
on ``trio.testing.MockClock`` in tests and in the simulator.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ._asyncio import Guest
from ._attempts import Attempts, Heartbeats
from ._core import events as ev
from ._core import records as rec
from ._core.actions import (
    CloseCancelled,
    Finish,
    RecordPatch,
    RecordValue,
    RunActivity,
    RunChild,
    RunGroup,
    StepAction,
    WaitForSignal,
    WaitTimer,
    next_action,
    waits_for_children,
    waits_until,
)
from ._core.commands import ActivityCall, ChildCall
from ._core.errors import (
    DurableInternalError,
    ErrorInfo,
    RunConflictError,
)
from ._core.machine import Replay, Step
from ._core.outcomes import Continued, Outcome, terminal_event
from ._core.primitives import SideEffect, WaitSignal
from ._hooks import Hooks
from ._store import JournalWriter
from ._telemetry import waited

if TYPE_CHECKING:
    from ._telemetry import RunTelemetry

_WALL_OFFSET: trio.lowlevel.RunVar[float] = trio.lowlevel.RunVar("durable_wall_offset")


class WallClock:
    """Wall-clock time read off trio's clock, anchored to ``time.time()`` once per ``trio.run``.

    Waits and deadlines follow trio's clock (monotonic, or virtual under
    ``MockClock``), and journaled times stay comparable across processes. Every
    runtime in one ``trio.run`` shares the anchor, so virtual time runs on
    continuously from one to the next. An explicit ``anchor`` (the wall time
    that trio's clock reads as now) re-anchors it.
    """

    def __init__(self, anchor: float | None = None) -> None:
        self._clock = trio.lowlevel.current_clock()
        if anchor is not None:
            _WALL_OFFSET.set(anchor - self._clock.current_time())
        try:
            self._offset = _WALL_OFFSET.get()
        except LookupError:
            self._offset = time.time() - self._clock.current_time()
            _WALL_OFFSET.set(self._offset)

    def __call__(self) -> float:
        return self._offset + self._clock.current_time()

    async def sleep_until(self, wall_time: float) -> None:
        await trio.sleep(max(0.0, wall_time - self()))


#: A run let go while it waits for a child run is looked at again after this many
#: seconds at the latest (see RunExecution._due).
CHILD_RECHECK = 300.0


def _may_wait(action: Any, children_started: set[int]) -> bool:
    """Whether an action may be a wait (checked before it is carried out): not a fresh
    activity (the hot path), and a child step (alone or in a group) only once its child
    surely exists."""
    kind = type(action)
    if kind is RunActivity:
        return bool(action.step.retry_at)
    if kind is RunGroup:
        return _children_known(action, children_started)
    return kind is not RunChild or action.step.seq in children_started


def _due(core: Replay, clock: WallClock) -> float | None:
    """When the run has work again if all it does is wait (see waits_until): a run
    waiting for a child is also looked at again after CHILD_RECHECK, in case the
    child's end could not wake it (a crash right after the child ended)."""
    due = waits_until(core)
    if due is not None and waits_for_children(core):
        due = min(due, clock() + CHILD_RECHECK)
    return due


async def start_child_runs(
    core: Replay, children: ChildRunner | None, group: RunGroup, started: set[int]
) -> bool:
    """Start the pending child runs of ``group`` that are not in ``started`` (adding each
    one that is now waited for); False if one of them had ended already: its outcome
    is work to do."""
    all_waiting = True
    for child in group.actions:
        step, command = child.step, child.step.command
        if type(child) is not RunChild or step.seq not in core.pending or step.seq in started:
            continue
        if children is None or step.child_id is None or not isinstance(command, ChildCall):
            raise DurableInternalError(f"run {core.run_id!r}: child step {step.seq} cannot start")
        if await children.start_child(step.child_id, command):
            all_waiting = False  # ended: its outcome is there to take
        else:
            started.add(step.seq)
    return all_waiting


def _children_known(group: RunGroup, started: set[int], pending: Collection[int] | None = None) -> bool:
    """Whether every child run of ``group`` (of its ``pending`` steps) is known to exist."""
    return all(
        type(a) is not RunChild or a.step.seq in started
        for a in group.actions
        if pending is None or a.step.seq in pending
    )


@attrs.frozen
class Released:
    """What :meth:`RunExecution.drive` returns when it let its run go because all the
    run does is wait: ``due`` is the wall-clock time it has work to do again
    (:data:`~durable._core.actions.ON_MESSAGE`: when a message comes)."""

    due: float


#: Asked with the time a waiting run is due: may the execution let it go now?
ReleasePolicy = Callable[[float], bool]


class ChildRunner(Protocol):
    """What runs child workflows for an execution (the :class:`~durable.Runtime`)."""

    async def child_outcome(self, child_id: str, call: ChildCall) -> tuple[bytes, ErrorInfo | None]:
        """Start (or attach to) the child run and wait for its end: ``(result, error)``."""

    async def start_child(self, child_id: str, call: ChildCall) -> bool:
        """Start the child run (nothing if it exists), without waiting for its end; True
        if it has ended already (its outcome is there to take)."""

    async def cancel_child(self, child_id: str, reason: str) -> None:
        """Ask the child run to stop (durably); nothing if it has ended."""


class RunExecution:
    """Drive one run to its end: replay, then execute and journal live."""

    def __init__(
        self,
        core: Replay,
        writer: JournalWriter,
        clock: WallClock,
        hooks: Hooks,
        *,
        resumed: bool,
        children: ChildRunner | None = None,
        release: ReleasePolicy | None = None,
        activity_host: Guest | None = None,
        journal: Sequence[ev.Event] = (),  # what core replayed: its heartbeats, for the next attempts
        telemetry: RunTelemetry | None = None,
    ) -> None:
        self.core = core
        #: Spans and metrics of what this execution carries out (None: nothing to emit).
        self.telemetry = telemetry
        self.writer = writer
        self.clock = clock
        self.hooks = hooks
        self.resumed = resumed
        self.children = children
        self._release = release
        #: Child steps whose child run this execution made sure exists (it may be let go then).
        self._children_started: set[int] = set()
        #: Set once the execution decided to let its run go: messages then go through
        #: the store (see deliver()).
        self.released = False
        # The hot path skips what does nothing: hooks nobody overrides, syncs of a
        # store that never syncs.
        self._plain_hooks = type(hooks) is Hooks
        beats = Heartbeats(clock, hooks, self._append, writer.flush, rec.journaled_heartbeats(core, journal))
        self._attempts = Attempts(core.run_id, clock, hooks, beats, activity_host, telemetry)
        self._syncs = writer.syncs
        # What replay fed the core is durable (the store made the journal so when it
        # opened it): only values journaled from now on make an activity sync first.
        core.values_durable()
        # Signals are delivered by other tasks: they wait while this one is between
        # appending events and applying them (_committing), so the journal order is
        # the order the core sees. _signalled wakes a wait_signal step.
        self._committing = False
        self._committed = trio.Event()
        self._signalled = trio.Event()
        self._step_scope: trio.CancelScope | None = None
        #: Set when this execution is over: its run ended, or it continued as new and
        #: the next incarnation's execution took its place (messages then go there).
        self.replaced = trio.Event()
        #: How each of the core's actions is carried out (durable._core.actions).
        self._perform: dict[type[Any], Callable[[Any], Awaitable[None]]] = {
            RecordPatch: self._record_patch,
            CloseCancelled: self._close_cancelled,
            RunActivity: self._run_activity_alone,
            WaitTimer: self._run_timer,
            RecordValue: self._record_value,
            WaitForSignal: self._wait_signal,
            RunChild: self._run_child_workflow,
            RunGroup: self._run_group,
        }

    def _append(self, event: ev.Event) -> None:
        self.writer.append(event)
        self.core.apply(event)

    async def drive(self) -> Outcome | Released:
        """Run until the workflow returns or raises; return the journaled outcome. Or, with
        a release policy, until all the run does is wait: then :class:`Released`."""
        if self.resumed:
            self._append(rec.resumed(self.clock(), os.getpid()))
        core = self.core
        while core.outcome is None:
            # One cancel scope for many steps (entering one per step would cost a third
            # of a step): a cancel request cancels it to stop the steps running, and the
            # loop goes on in a fresh one.
            released = None  # stays None when a cancel request interrupts the steps
            with trio.CancelScope() as self._step_scope:
                released = await self._run_until_stopped()
            self._step_scope = None
            if released is not None:
                return released
        while True:  # what the ended run leaves to do: close its cancelled steps, then finish
            action = next_action(core)
            if isinstance(action, Finish):
                break
            await self._perform[type(action)](action)
        if action.journaled:  # journaled before a crash (a continuation not yet carried out)
            return action.outcome
        await self._commit([terminal_event(action.outcome, self.clock())])
        return action.outcome

    async def _run_until_stopped(self) -> Released | None:
        """Carry out what the core asks, action by action, until the workflow ends (or a
        cancel request interrupts, or the run is let go while it waits)."""
        core = self.core
        perform = self._perform
        with self._attempts.heartbeats.received():  # the activities it runs heartbeat here
            while core.outcome is None:
                action = next_action(core)
                # A fresh activity (the hot path) is work: only other actions may be waits. A
                # child step only once this execution made sure the child run exists.
                if self._release is not None and _may_wait(action, self._children_started):
                    released = await self._release_if_waiting()
                    if released is not None:
                        return released
                await perform[type(action)](action)
        return None

    def _may_release(self) -> bool:
        """Whether the run only waits now and the policy lets it go (the wait actions ask
        this once their deadline is journaled, and return early if so)."""
        if self._release is None:
            return False
        due = _due(self.core, self.clock)
        return due is not None and self._release(due)

    async def _release_if_waiting(self) -> Released | None:
        due = _due(self.core, self.clock)
        if due is None or self._release is None or not self._release(due):
            return None
        # From here a message for the run goes through the store (deliver() says no), so
        # none can land in the journal after the decision and be left unseen.
        self.released = True
        if self._syncs:
            await self.writer.sync()  # what it waits for is durable before it is let go
        return Released(due)

    async def _record_patch(self, action: RecordPatch) -> None:
        self._append(rec.patch_reached(self.core, self.clock()))

    async def _run_activity_alone(self, action: RunActivity) -> None:
        step = action.step
        command = step.command
        if not isinstance(command, ActivityCall):
            raise DurableInternalError(f"run {self.core.run_id!r}: step {step.seq} is no activity")
        if action.journal_start:
            self._append(rec.started(self.core, step, self.clock()))
        # _durable_start, inline on the hot path
        if action.durable_start and self._syncs:
            await self.writer.sync()
        else:
            self.writer.flush()
        self.core.unsynced_value = False
        result = await self._attempts.run(step, command, self._record_durably, self._may_release)
        if result is None:
            return  # in a retry backoff, and let go (the loop returns Released)
        if not self._plain_hooks:
            await self.hooks.point("activity-returned", self.core.run_id, step.seq)
        if self._committing:  # a signal is being recorded right now
            await self._commit([result])
            return
        self.writer.append(result)
        if self._syncs:
            self._committing = True  # inline fast path of _commit()
            try:
                await self.writer.sync()
            finally:
                self._committing = False
                self._committed.set()
                self._committed = trio.Event()
        self.core.apply(result)

    async def _durable_start(self, durable: bool) -> None:
        """Make what was journaled durable before a step goes on, if the core's action
        says so; else only hand it to the store (a flush), so that others see it."""
        if durable and self._syncs:
            await self.writer.sync()
        else:
            self.writer.flush()
        self.core.values_durable()

    async def _close_cancelled(self, action: CloseCancelled) -> None:
        """Journal the losers of a race, the rest of a failed gather and the steps a cancel
        request stopped as cancelled; a child run among them is cancelled first."""
        for step in action.steps:
            seq = step.seq
            if step.child_id is not None:
                if self.children is None:
                    raise DurableInternalError(f"run {self.core.run_id!r} has a child step but no runner")
                reason = f"its parent run {self.core.run_id!r} cancelled step {seq}"
                await self.children.cancel_child(step.child_id, reason)
            self._append(rec.step_cancelled(seq, self.clock()))

    async def _run_child_workflow(self, action: RunChild) -> None:
        step = action.step
        command = step.command
        if not isinstance(command, ChildCall):
            raise DurableInternalError(f"run {self.core.run_id!r}: step {step.seq} is no child run")
        if action.journal_start:
            self._append(rec.started(self.core, step, self.clock()))
        # Durable before the child exists: its arguments may carry recorded values.
        await self._durable_start(action.durable_start)
        if self._release is not None:
            if self.children is None or step.child_id is None:
                raise DurableInternalError(f"run {self.core.run_id!r}: child step {step.seq} cannot start")
            ended = await self.children.start_child(step.child_id, command)  # exists before we go
            if not ended:
                self._children_started.add(step.seq)
                if self._may_release():
                    return  # the loop lets the run go; the child's end wakes it
        await self._record_durably(await self._child_outcome(step, command))

    async def _child_outcome(self, step: Step, command: ChildCall) -> ev.ChildCompleted:
        if self.children is None:
            raise TypeError(f"{command.describe()} needs a durable.Runtime to run child workflows")
        if step.child_id is None:
            raise DurableInternalError(f"run {self.core.run_id!r}: child step {step.seq} has no run id")
        result, error = await self.children.child_outcome(step.child_id, command)
        return rec.child_ended(step, result, error, self.clock())

    async def _record_durably(self, event: ev.Event) -> None:
        """Append, make durable, then let the workflow see it (write-ahead)."""
        await self._commit([event])

    async def _commit(self, events: list[ev.Event], acks: list[trio.Event | None] | None = None) -> None:
        """Append ``events``, make them durable, then apply them in order, as one unit."""
        while self._committing:
            await self._committed.wait()
        self._committing = True
        try:
            for event in events:
                self.writer.append(event)
            if self._syncs:
                await self.writer.sync()
            for index, event in enumerate(events):
                self.core.apply(event)
                ack = acks[index] if acks else None
                if ack is not None:
                    ack.set()
        finally:
            self._committing = False
            self._committed.set()
            self._committed = trio.Event()

    async def deliver(self, event: ev.SignalReceived | ev.CancelRequested) -> bool:
        """Record a signal or a cancel request for this run (``Runtime.signal`` / ``cancel``).

        Returns False, recording nothing, when the run has just continued as new (the
        message belongs to its next incarnation) or is being let go while it waits (the
        message goes through the store): wait for :attr:`replaced`, then send it again.
        """
        while self._committing:
            await self._committed.wait()
        if self.released or isinstance(self.core.outcome, Continued):
            return False
        if self.core.outcome is not None:
            raise RunConflictError(
                f"run {self.core.run_id!r} has finished; {ev.message_text(event)} was not delivered",
                run_id=self.core.run_id,
            )
        running = set(self.core.pending)
        # Appended and applied at once (no await between), so it cannot fall between
        # another event's append and apply. Like a recorded value, it is made durable
        # before the next activity can carry it out of the process (the core notes it
        # as an unsynced value), and before this call returns to the sender.
        self._append(event)
        if self._step_scope is not None and running - set(self.core.pending):
            self._step_scope.cancel()  # a cancel request stopped the step running inline
        self._signalled.set()
        self._signalled = trio.Event()
        if self._syncs:
            await self.writer.sync()
        return True

    async def _wait_signal(self, action: WaitForSignal) -> None:
        step = action.step
        command = step.command
        if not isinstance(command, WaitSignal):
            raise DurableInternalError(f"run {self.core.run_id!r}: step {step.seq} waits for no signal")
        told = not step.awaited
        if told:  # what it waits for, for the tools (durable ls, show, signal)
            self._append(rec.signal_awaited(step, command.name, self.clock()))
        if action.journal_start:  # its timeout's deadline
            self._append(rec.started(self.core, step, self.clock()))
            if action.durable_start and self._syncs:
                await self.writer.sync()
                told = False
        if self._may_release():
            return  # the loop lets the run go
        if told and self._syncs:
            # Not for durability (nothing leaves the process), but so that other processes
            # see what the run waits for while it is kept here: a store such as PostgreSQL
            # shows an append only once it is committed. One sync per wait.
            await self.writer.sync()
        await waited(self, self._until_signalled(step), step, f"wait_signal {command.name}")

    async def _until_signalled(self, step: Step) -> None:
        """Wait until the signal ``step`` waits for arrives (another task journals it), or
        its timeout passes (journaled here)."""
        while step.seq in self.core.pending:
            arrived, deadline = self._signalled, math.inf if step.fire_at is None else step.fire_at
            with trio.move_on_after(max(0.0, deadline - self.clock())):
                await arrived.wait()
                continue
            if step.seq in self.core.pending:  # the timeout passed first
                await self._record_durably(rec.timer_fired(step, self.clock()))

    async def _run_group(self, action: RunGroup) -> None:
        """Run the steps of a gather or race side by side.

        Child tasks never touch the journal (but for heartbeat records, which replay
        ignores): they send their events here, and this loop appends them in the
        order they arrive, makes them durable, and only then applies them, so the
        journal order is the order the workflow sees and replay reproduces it.
        """
        steps = [child.step for child in action.actions]
        group = steps[0].group
        if group is None:
            raise DurableInternalError(f"run {self.core.run_id!r}: step {steps[0].seq} is in no group")
        await self._start_children(action)
        # A worker lets the run go only once its child runs exist (and none has ended).
        if self._may_release() and await start_child_runs(
            self.core, self.children, action, self._children_started
        ):
            return  # all its steps wait: the loop lets the run go
        running = [child for child in action.actions if child.step.seq in self.core.pending]
        if not running:
            return
        send, receive = trio.open_memory_channel[tuple[ev.Event, trio.Event | None]](math.inf)
        async with trio.open_nursery() as nursery:
            for child in running:
                nursery.start_soon(self._run_child, child, send)
            while any(seq in self.core.pending for seq in group.seqs):
                batch = [await receive.receive()]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._commit([event for event, _ in batch], [ack for _, ack in batch])
                # What is left only waits, its child runs known to exist (a child's end is
                # journaled in the child run, and wakes this one): the loop lets it go.
                known = self._release is not None and _children_known(
                    action, self._children_started, self.core.pending
                )
                if known and self._may_release():
                    break
            nursery.cancel_scope.cancel()  # the race is won, the gather failed or finished, or it waits

    async def _start_children(self, group: RunGroup) -> None:
        """Journal each child's first record, in step order; side effects resolve at once.
        Then make them durable if the core says so (a deadline, a child, a value)."""
        for child in group.actions:
            step = child.step
            if isinstance(child, RecordValue):
                if step.seq in self.core.pending:  # else a value recorded before it won the race
                    self._record_value_now(step)
            elif child.journal_start:
                self._append(rec.started(self.core, step, self.clock()))
        await self._durable_start(group.durable_start)

    async def _run_child(
        self, child: StepAction, send: trio.MemorySendChannel[tuple[ev.Event, trio.Event | None]]
    ) -> None:
        step = child.step
        command = step.command
        if isinstance(child, WaitTimer):
            if not self._plain_hooks:
                await self.hooks.point("timer", self.core.run_id, step.seq)
            if step.fire_at is None:
                raise DurableInternalError(f"run {self.core.run_id!r}: timer step {step.seq} has no deadline")
            await waited(self, self.clock.sleep_until(step.fire_at), step, "sleep")
            await send.send((rec.timer_fired(step, self.clock()), None))
            return
        if isinstance(child, RunChild) and isinstance(command, ChildCall):
            await send.send((await self._child_outcome(step, command), None))
            return
        if not (isinstance(child, RunActivity) and isinstance(command, ActivityCall)):
            raise DurableInternalError(f"run {self.core.run_id!r}: step {step.seq} cannot run in a group")

        async def report(event: ev.Event) -> None:
            ack = trio.Event()
            await send.send((event, ack))
            await ack.wait()

        result = await self._attempts.run(step, command, report, None)
        if result is None:
            raise DurableInternalError(f"run {self.core.run_id!r}: step {step.seq} was let go in a group")
        if not self._plain_hooks:
            await self.hooks.point("activity-returned", self.core.run_id, step.seq)
        await send.send((result, None))

    async def _run_timer(self, action: WaitTimer) -> None:
        step = action.step
        if action.journal_start:
            self._append(rec.started(self.core, step, self.clock()))
            if action.durable_start and self._syncs:  # a restart waits only what is left
                await self.writer.sync()
            if self._may_release():
                return  # the loop lets the run go
        if not self._plain_hooks:
            await self.hooks.point("timer", self.core.run_id, step.seq)
        if step.fire_at is None:
            raise DurableInternalError(f"run {self.core.run_id!r}: timer step {step.seq} has no deadline")
        await waited(self, self.clock.sleep_until(step.fire_at), step, "sleep")
        self._append(rec.timer_fired(step, self.clock()))

    async def _record_value(self, action: RecordValue) -> None:
        self._record_value_now(action.step)

    def _record_value_now(self, step: Step) -> None:
        # Journaled before the workflow sees the value; it becomes durable with the
        # next sync, before anything that depends on it can leave the process.
        command = step.command
        if not isinstance(command, SideEffect):
            raise DurableInternalError(f"run {self.core.run_id!r}: step {step.seq} records no value")
        now = self.clock()
        run_id = self.core.run_id

        def produce() -> Any:
            return self.hooks.produce(command.name, run_id, step.seq, lambda: command.fn(now))

        self._append(rec.value_recorded(step, command.name, produce, now))


__all__ = ["ChildRunner", "RunExecution", "WallClock"]
