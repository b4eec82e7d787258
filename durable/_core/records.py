"""The journal records of a live run, built by the core from what happened.

The executor tells the core what happened (a step was started, an attempt
failed with this exception at this time, an activity returned this value, a
timer fired) and journals the record the core builds: it never builds one
itself. What a record holds is decided here, in one place: which record starts
a step (``ActivityScheduled``, ``TimerStarted``, ``ChildStarted``, one table),
whether a failed attempt is retried and when (the retry policy), how a result is
encoded and what a result that cannot be journaled becomes (the step's
``ActivityFailed``, never retried).

Everything here is pure: times and the process id come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import events as ev
from .commands import ActivityCall, ChildCall
from .errors import DurableInternalError, ErrorInfo, LoopMismatchError, SerializationError
from .ids import child_run_id
from .machine import Replay, Step
from .primitives import Sleep, WaitSignal
from .values import encode_value

_NONE = encode_value(None, what="None")


error_info = ErrorInfo.with_traceback_of


def resumed(t: float, pid: int) -> ev.RunResumed:
    """A process opened the unfinished run and replayed it."""
    return ev.RunResumed(t, pid)


def patch_reached(core: Replay, t: float) -> ev.PatchRecorded:
    """The run reached the ``patched`` question it asks now, live."""
    if core.patch is None:
        raise DurableInternalError(f"run {core.run_id!r}: no patched question is pending")
    return ev.PatchRecorded(core.patch.change_id, t)


def _activity_scheduled(core: Replay, step: Step, command: ActivityCall, t: float) -> ev.Event:
    return ev.ActivityScheduled(step.seq, command.activity.name, command.encoded_args, t)


def _timer_started(core: Replay, step: Step, command: Sleep, t: float) -> ev.Event:
    return ev.TimerStarted(step.seq, command.seconds, t + command.seconds, t)


def _timeout_started(core: Replay, step: Step, command: WaitSignal, t: float) -> ev.Event:
    if command.timeout is None:
        raise DurableInternalError(f"run {core.run_id!r}: step {step.seq} waits without a timeout")
    return ev.TimerStarted(step.seq, command.timeout, t + command.timeout, t)


def _child_started(core: Replay, step: Step, command: ChildCall, t: float) -> ev.Event:
    child_id = child_run_id(core.run_id, step.seq)
    return ev.ChildStarted(step.seq, command.name, command.encoded_args, child_id, t)


#: The record that starts a step, by the type of its command (each function takes
#: the command of its row's type).
_STARTS: dict[type[Any], Callable[[Replay, Step, Any, float], ev.Event]] = {
    ActivityCall: _activity_scheduled,
    Sleep: _timer_started,
    WaitSignal: _timeout_started,  # only a wait with a timeout has one
    ChildCall: _child_started,
}


def started(core: Replay, step: Step, t: float) -> ev.Event:
    """The record that starts ``step`` at ``t``: its scheduling, its timer's deadline, its child."""
    start = _STARTS.get(type(step.command))
    if start is None:
        raise DurableInternalError(
            f"run {core.run_id!r}: step {step.seq} ({step.command!r}) has no start record"
        )
    return start(core, step, step.command, t)


def signal_awaited(step: Step, name: str, t: float) -> ev.SignalAwaited:
    """The ``wait_signal`` of ``step`` begins waiting for the signal ``name``."""
    return ev.SignalAwaited(step.seq, name, t)


def step_cancelled(seq: int, t: float) -> ev.StepCancelled:
    """Step ``seq`` lost its race, or its gather failed, or a cancel request stopped it."""
    return ev.StepCancelled(seq, t)


def timer_fired(step: Step, t: float) -> ev.TimerFired:
    """The timer (or a signal wait's timeout) of ``step`` fired."""
    return ev.TimerFired(step.seq, t)


def child_ended(step: Step, result: bytes, error: ErrorInfo | None, t: float) -> ev.ChildCompleted:
    """The child run of ``step`` ended with ``result`` (CBOR) or ``error``."""
    return ev.ChildCompleted(step.seq, result, error, t)


def value_recorded(step: Step, name: str, produce: Callable[[], Any], t: float) -> ev.SideEffectRecorded:
    """What ``produce()`` gave (or raised) for a recorded value or side effect, journaled once."""
    try:
        value = encode_value(produce(), what="the value of side effect", name=name)
        error = None
    except (Exception, SystemExit) as exc:  # sys.exit() fails the step, not the process
        value, error = _NONE, error_info(exc)
    return ev.SideEffectRecorded(step.seq, name, value, error, t)


def journaled_heartbeats(core: Replay, events: Sequence[ev.Event]) -> dict[int, bytes]:
    """The details of the latest ``AttemptHeartbeat`` of each activity step in flight in
    ``core``, which replayed ``events``: what the step's next attempt reads. A step that
    runs again after a ``RunRetried`` starts afresh: the details of the attempts it
    superseded are not its."""
    pending = core.pending
    if not core.heartbeats_seen or not any(
        type(step.command) is ActivityCall and step.scheduled_at is not None for step in pending.values()
    ):
        return {}  # no heartbeat replayed, or nothing in flight: no need to read the journal
    found: dict[int, bytes] = {}
    for event in events:
        if isinstance(event, ev.AttemptHeartbeat):
            if event.seq in pending:
                found[event.seq] = event.details
        elif isinstance(event, ev.RunRetried):
            found.clear()
    return found


def attempt_failed(
    step: Step, command: ActivityCall, attempt: int, exc: BaseException, failed_at: float, started_at: float
) -> ev.AttemptFailed | ev.ActivityFailed:
    """Attempt ``attempt`` raised ``exc``: ``AttemptFailed`` with the time of the next attempt
    when the policy retries it, else the step's ``ActivityFailed``. An activity written
    for the other event loop is never retried: it would fail the same way."""
    retry_at = (
        None
        if isinstance(exc, LoopMismatchError)
        else command.policy.next_retry(attempt=attempt, error=exc, failed_at=failed_at, started_at=started_at)
    )
    if retry_at is None:
        return ev.ActivityFailed(step.seq, error_info(exc), attempt, failed_at)
    return ev.AttemptFailed(step.seq, attempt, error_info(exc), retry_at, failed_at)


def activity_returned(
    step: Step, command: ActivityCall, value: Any, attempt: int, t: float
) -> ev.ActivityCompleted | ev.ActivityFailed:
    """Attempt ``attempt`` returned ``value``: the step's ``ActivityCompleted``, or, for a
    value the journal cannot hold, its ``ActivityFailed`` (never retried: the same code
    would return the same value)."""
    try:
        result = encode_value(value, what="the result of activity", name=command.activity.name)
    except SerializationError as exc:
        return ev.ActivityFailed(step.seq, error_info(exc), attempt, t)
    return ev.ActivityCompleted(step.seq, result, attempt, t)
