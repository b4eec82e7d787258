"""Unit tests without a runtime: run a workflow's logic with its activities stubbed by name.

Theory of operation
-------------------
No trio, no store, no real time: the pure replay core is driven directly
(:func:`durable._core.actions.next_action`, the answers the trio executor
carries out), and each action is answered here, in *virtual* time:

* an activity call by its stub, in no time;
* ``durable.now()`` by the virtual clock, ``durable.random()`` and
  ``durable.uuid4()`` by draws from the seed (the same value for the same step
  on every run), ``durable.side_effect(fn)`` by calling ``fn``;
* ``durable.sleep`` by moving the clock to the timer's deadline;
* ``durable.wait_signal`` by the signals the test gives, each arriving at its
  own virtual time (a signal that arrives before the wait is kept, as the
  journal keeps it), or by its timeout (``SignalTimeout`` at the ``yield``);
* a child workflow by running it the same way, with the same stubs;
* a cancel request at its virtual time (``Cancelled`` at the ``yield``).

Every answer is a journal record applied to the core, so values travel
through the journal's encoding and the workflow sees exactly what it would
see for real; the records are kept in :attr:`StubbedRun.journal`.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import random
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

import durable
from durable._core import records as rec
from durable._core.actions import (
    Action,
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
)
from durable._core.commands import ChildCall
from durable._core.durations import parse_duration
from durable._core.machine import Step
from durable._core.outcomes import Raised, Returned, Stopped, terminal_event
from durable._core.primitives import SideEffect, WaitSignal
from durable.lowlevel import (
    ActivityCompleted,
    ActivityFailed,
    CancelRequested,
    ChildCompleted,
    Event,
    Replay,
    RunStarted,
    SignalAwaited,
    SignalReceived,
    current_activity,
    dumps_value,
    loads_value,
)

from ._world import EPOCH

Stub = Any  # a value, an exception (instance or class), or a function of the call's arguments
#: A signal a test sends: ``(name, payload)`` arrives at the start, ``(name, payload, at)``
#: ``at`` (seconds or a duration text such as ``"2h"``) after the start.
SignalSpec = tuple[str, Any] | tuple[str, Any, float | str]


@attrs.frozen
class Call:
    """One activity call the workflow made: its journal name and arguments."""

    activity: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.activity}({', '.join(parts)})"


@attrs.frozen
class StubbedRun:
    """What :func:`run_stubbed` observed.

    Attributes:
        calls: every activity call, in order (a child workflow's calls included).
        value: what the workflow returned (None if it raised or was cancelled).
        error: the error the workflow raised, as the journal keeps it (None if it returned).
        journal: the run's journal records, as the runtime would have written them.
        elapsed: the virtual seconds the run took (its sleeps and waits; activities take none).
        cancelled: the reason of the cancel request that ended the run (None if none did).
        unused_signals: the signals sent that the workflow never took (it waited for
            other names, or ended first), by name, in the order they were sent.
    """

    calls: list[Call]
    value: Any
    error: durable.ErrorInfo | None
    journal: list[Event] = attrs.Factory(list)
    elapsed: float = 0.0
    cancelled: str | None = None
    unused_signals: tuple[str, ...] = ()

    @property
    def result(self) -> Any:
        """The returned value; raises :class:`durable.WorkflowFailed` if the workflow raised,
        :class:`durable.Cancelled` if a cancel request ended it."""
        if self.cancelled is not None:
            raise durable.Cancelled("stubbed", self.cancelled)
        if self.error is not None:
            first = self.journal[0] if self.journal else None
            workflow = first.workflow if isinstance(first, RunStarted) else "workflow"
            raise durable.WorkflowFailed("stubbed", workflow, self.error)
        return self.value

    @property
    def activities(self) -> list[str]:
        """The names of the activities called, in order."""
        return [call.activity for call in self.calls]


def run_stubbed(
    workflow: durable.Workflow[..., Any],
    *args: Any,
    stubs: Mapping[str, Stub],
    signals: Sequence[SignalSpec] = (),
    cancel_at: float | str | None = None,
    start: float | datetime.datetime = EPOCH,
    seed: int = 0,
    **kwargs: Any,
) -> StubbedRun:
    """Run ``workflow(*args, **kwargs)`` in virtual time, each activity answered by ``stubs[name]``.

    A stub is a value (returned), an exception instance or class (the step fails
    as if its retries were exhausted: ``durable.ActivityError`` is raised at the
    ``yield``), or a callable (called with the activity's arguments; what it
    returns or raises decides the step). Activities take no virtual time.

    Args:
        stubs: the answer of each activity, by its journal name.
        signals: ``(name, payload)`` or ``(name, payload, at)``: the signal ``name``
            arrives ``at`` (seconds, or a duration such as ``"2h"``; default 0) after
            the start. A signal that arrives before the workflow waits for it is kept
            for its wait; a wait whose timeout passes first raises ``durable.SignalTimeout``.
        cancel_at: a cancel request arrives this long after the start
            (``durable.Cancelled`` is raised at the ``yield`` the workflow is at).
        start: the virtual wall clock at the start (a timestamp or an aware datetime);
            ``durable.now()`` reads this clock.
        seed: decides ``durable.random()`` and ``durable.uuid4()`` (each step draws
            from the seed, so the same call gives the same values).

    Raises:
        KeyError: an activity has no stub (the message lists the stubs given).
        RuntimeError: the workflow waits for a signal that never arrives (no timeout).
    """
    if not isinstance(workflow, durable.Workflow):
        raise TypeError(f"run_stubbed needs a @durable.workflow function (got {workflow!r})")
    t0 = start.timestamp() if isinstance(start, datetime.datetime) else float(start)
    arrivals = [_arrival(spec, t0) for spec in signals]
    if cancel_at is not None:
        at = t0 + parse_duration(cancel_at, what="cancel_at")
        arrivals.append((at, CancelRequested("cancel_at", at)))
    arrivals.sort(key=lambda arrival: arrival[0])  # stable: signals of one instant keep their order
    driver = _Driver(stubs, seed, t0, arrivals)
    encoded = dumps_value([list(args), dict(sorted(kwargs.items()))])
    run = driver.run(workflow, "stubbed", encoded)
    for name in dict.fromkeys(run.unused_signals):
        # Most often a misspelt name: the test then checks the timeout branch, not the one it meant.
        warnings.warn(_unused_signal_text(name, run.journal), UnusedSignalWarning, stacklevel=2)
    return run


def _unused_signal_text(name: str, journal: Sequence[Event]) -> str:
    waited = sorted({event.name for event in journal if isinstance(event, SignalAwaited)})
    if name in waited:
        why = "it came after the workflow's wait for it had ended"
    elif waited:
        why = f"the workflow waited for {', '.join(map(repr, waited))} only"
    else:
        why = "the workflow waited for no signal"
    return f"run_stubbed: signal {name!r} was never taken: {why}"


class UnusedSignalWarning(UserWarning):
    """:func:`run_stubbed` was given a signal the workflow never took."""


def _arrival(spec: SignalSpec, t0: float) -> tuple[float, Event]:
    if not isinstance(spec, tuple) or len(spec) not in (2, 3) or not isinstance(spec[0], str):
        raise TypeError(f"a signal is (name, payload) or (name, payload, at) (got {spec!r})")
    at = t0 + (parse_duration(spec[2], what="signal arrival") if len(spec) == 3 else 0.0)
    return at, SignalReceived(spec[0], dumps_value(spec[1]), at)


class _Driver:
    """Carries out the core's actions for one run (and its children) in virtual time."""

    def __init__(
        self,
        stubs: Mapping[str, Stub],
        seed: int,
        t: float,
        arrivals: list[tuple[float, Event]],
        answers: Mapping[int, Event] | None = None,
    ):
        self.stubs = stubs
        self.seed = seed
        self.t = t
        #: Messages still to arrive (signals, a cancel request), in time order.
        self.arrivals = arrivals
        self.calls: list[Call] = []
        #: Outcomes by step (of a recorded journal) that answer activities and children
        #: instead of stubs: how the simulator re-records a run with one input changed.
        self.answers = answers

    def run(self, workflow: durable.Workflow[..., Any], run_id: str, encoded: bytes) -> StubbedRun:
        """Run the workflow to its end; its children share this driver's clock and calls."""
        started_at = self.t
        first = RunStarted(run_id, workflow.name, encoded, self.t)
        journal: list[Event] = [first]
        core = Replay(workflow, first)

        def apply(event: Event) -> None:
            journal.append(event)
            core.apply(event)

        while True:
            if core.outcome is None and self.arrivals and self.arrivals[0][0] <= self.t:
                apply(self.arrivals.pop(0)[1])  # a message due now arrives before the next step
                continue
            action = next_action(core)
            if isinstance(action, Finish):
                apply(terminal_event(action.outcome, self.t))
                break
            self._perform(core, action, apply)
        outcome = core.outcome
        elapsed = self.t - started_at
        unused = tuple(
            message.name
            for message in [*core.unconsumed_messages(), *(event for _, event in self.arrivals)]
            if isinstance(message, SignalReceived)
        )
        if isinstance(outcome, Returned):
            return StubbedRun(self.calls, loads_value(outcome.result), None, journal, elapsed, None, unused)
        if isinstance(outcome, Stopped):
            return StubbedRun(self.calls, None, None, journal, elapsed, outcome.reason, unused)
        if isinstance(outcome, Raised):
            return StubbedRun(self.calls, None, outcome.error, journal, elapsed, None, unused)
        if self.answers is not None:  # re-recording a journal (sim._hashseed): it ends here
            return StubbedRun(self.calls, None, None, journal, elapsed)
        raise TypeError("run_stubbed cannot follow durable.continue_as_new: test each incarnation alone")

    def _perform(self, core: Replay, action: Action, apply: Callable[[Event], None]) -> None:
        if isinstance(action, RecordPatch):  # reached live: the new code path
            apply(rec.patch_reached(core, self.t))
        elif isinstance(action, CloseCancelled):  # the losers of a race, steps a cancel stopped
            for lost in action.steps:
                apply(rec.step_cancelled(lost.seq, self.t))
        elif isinstance(action, RunGroup):
            self._group(core, action, apply)
        elif isinstance(action, StepAction):
            self._start(core, action, apply)
            if action.step.seq in core.pending:
                self._finish(core, action, apply)

    def _start(self, core: Replay, action: StepAction, apply: Callable[[Event], None]) -> None:
        """Journal the step's first records (a value is produced at once)."""
        step = action.step
        command = step.command
        if isinstance(action, RecordValue) and isinstance(command, SideEffect):
            apply(rec.value_recorded(step, command.name, self._producer(core, step), self.t))
            return
        if isinstance(action, WaitForSignal) and isinstance(command, WaitSignal) and not step.awaited:
            apply(rec.signal_awaited(step, command.name, self.t))
        if getattr(action, "journal_start", False):
            apply(rec.started(core, step, self.t))

    def _finish(self, core: Replay, action: StepAction, apply: Callable[[Event], None]) -> None:
        """Carry the started step to its end, unless a message arrives first (the loop
        then asks the core again)."""
        step = action.step
        if isinstance(action, RunActivity):
            apply(self._answer(step))
        elif isinstance(action, RunChild):
            apply(self._child(step))
        elif isinstance(action, WaitTimer | WaitForSignal):
            deadline = math.inf if step.fire_at is None else step.fire_at
            if isinstance(step.command, WaitSignal) and deadline == math.inf and not self.arrivals:
                name = step.command.name
                raise RuntimeError(
                    f"run_stubbed: the workflow waits at step {step.seq} for signal {name!r} forever "
                    f"(no timeout, and no more signals arrive): give one, as signals=[({name!r}, "
                    "payload)], or (name, payload, at) to arrive later"
                )
            if self._wait_until(deadline, apply):
                apply(rec.timer_fired(step, self.t))

    def _group(self, core: Replay, action: RunGroup, apply: Callable[[Event], None]) -> None:
        """A gather or race: start every step, then end the first one due (activities and
        children now, in step order; then the earliest timer)."""
        for child in action.actions:
            if child.step.seq in core.pending:
                self._start(core, child, apply)
        running = [child for child in action.actions if child.step.seq in core.pending]
        now = [child for child in running if isinstance(child, RunActivity | RunChild)]
        timers = sorted(
            (child for child in running if child.step.fire_at is not None),
            key=lambda c: c.step.fire_at or 0.0,
        )
        for child in (now or timers)[:1]:
            self._finish(core, child, apply)

    def _wait_until(self, deadline: float, apply: Callable[[Event], None]) -> bool:
        """Move the clock to ``deadline`` (True), or to the next message's arrival if that
        comes first (False: it is delivered, and the core is asked again)."""
        if self.arrivals and self.arrivals[0][0] <= deadline:
            at, event = self.arrivals.pop(0)
            self.t = max(self.t, at)
            apply(attrs.evolve(event, t=self.t))
            return False
        self.t = max(self.t, deadline)
        return True

    def _producer(self, core: Replay, step: Step) -> Callable[[], Any]:
        command = step.command
        assert isinstance(command, SideEffect)
        draw = random.Random(f"{self.seed}/{core.run_id}/{step.seq}/{command.name}")
        if command.name == "durable.random":
            return draw.random
        if command.name == "durable.uuid4":
            return lambda: uuid.UUID(int=draw.getrandbits(128), version=4)
        clock = self.t
        return lambda: command.fn(clock)

    def _answer(self, step: Step) -> Event:
        command = step.command
        assert isinstance(command, durable.ActivityCall)
        self.calls.append(Call(command.name, command.call_args, command.call_kwargs))
        if self.answers is not None:
            recorded = self.answers.get(step.seq)
            if isinstance(recorded, ActivityCompleted | ActivityFailed):
                return attrs.evolve(recorded, t=self.t)
            return ActivityCompleted(step.seq, dumps_value(None), 1, self.t)
        return _answer(step.seq, command, self.stubs, self.t)

    def _child(self, step: Step) -> Event:
        """A child workflow, run here with the same stubs and clock (messages go to the parent)."""
        command = step.command
        assert isinstance(command, ChildCall) and step.child_id is not None
        if self.answers is not None:
            recorded = self.answers.get(step.seq)
            if isinstance(recorded, ChildCompleted):
                return attrs.evolve(recorded, t=self.t)
            return rec.child_ended(step, dumps_value(None), None, self.t)
        arrivals, self.arrivals = self.arrivals, []
        try:
            child = self.run(command.workflow, step.child_id, command.encoded_args)
        finally:
            self.arrivals = arrivals
        if child.cancelled is not None:
            error = durable.ErrorInfo("durable.Cancelled", child.cancelled)
            return rec.child_ended(step, dumps_value(None), error, self.t)
        return rec.child_ended(step, dumps_value(child.value), child.error, self.t)


def _answer(
    seq: int, command: durable.ActivityCall, stubs: Mapping[str, Stub], t: float
) -> ActivityCompleted | ActivityFailed:
    if command.name not in stubs:
        given = ", ".join(sorted(stubs)) or "none"
        raise KeyError(f"no stub for activity {command.name!r} (stubs given: {given})")
    stub = stubs[command.name]
    try:
        value = _call_stub(stub, command) if callable(stub) and not _is_exception(stub) else stub
    except Exception as exc:
        return _failed(seq, exc, t)
    if _is_exception(value):
        return _failed(seq, value() if isinstance(value, type) else value, t)
    return ActivityCompleted(seq, dumps_value(value), 1, t)


def _failed(seq: int, exc: BaseException, t: float) -> ActivityFailed:
    error = durable.ErrorInfo.with_traceback_of(exc)
    return ActivityFailed(seq, error, 1, t)


def _is_exception(value: object) -> bool:
    return isinstance(value, BaseException) or (isinstance(value, type) and issubclass(value, BaseException))


def _call_stub(stub: Callable[..., Any], command: durable.ActivityCall) -> Any:
    return stub(*command.call_args, **command.call_kwargs)


@contextlib.contextmanager
def in_activity(
    run_id: str = "test-run",
    seq: int = 0,
    attempt: int = 1,
    activity: str = "test",
    max_attempts: int = 1,
    heartbeat_details: Any = None,
) -> Iterator[durable.ActivityInfo]:
    """Call an activity's ``.fn`` as durable would: ``durable.activity_info()`` answers
    inside the block (its ``idempotency_key`` is ``"<run_id>/<seq>"``, its
    ``heartbeat_details`` what you pass), and ``durable.heartbeat()`` checks its
    details and keeps nothing.

    ::

        with sim.in_activity(run_id="order-1", seq=0, attempt=2):
            assert charge_payment.fn(4200, "tok_visa") == "pay-1"
    """
    info = durable.ActivityInfo(run_id, seq, attempt, activity, max_attempts, heartbeat_details)
    token = current_activity.set(info)
    try:
        yield info
    finally:
        current_activity.reset(token)
