"""Journal events: what happened in a run, in the order it happened.

Each event is a frozen value. Values the user owns (arguments, results) stay
CBOR-encoded bytes inside the event: the replay core decodes them when it feeds
the workflow, and tools like ``durable show`` decode them only when they print.

The table :data:`EVENT_TYPES` gives every event its type code in journal
contract v1 (``docs/journal-v1.md``); codes are never reused.
"""

from __future__ import annotations

from typing import Any

import attrs

from .errors import ErrorInfo

# Events are immutable once built (any assignment raises), without the cost of
# attrs.frozen's __init__: replay builds two per activity, so it shows.


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunStarted:
    """The run exists: which workflow, with which arguments (CBOR ``[args, kwargs]``)."""

    run_id: str
    workflow: str
    args: bytes
    t: float
    #: 0 for a new run; n for the n-th fresh journal after ``continue_as_new``.
    incarnation: int = 0
    #: The step number of this journal's first step: step numbers (and so idempotency
    #: keys) go on across ``continue_as_new``. Both fields were added within v1:
    #: journals without them read as 0.
    first_seq: int = 0
    #: The W3C ``traceparent`` of the run's trace (OpenTelemetry), captured when the
    #: run was created: every execution of the run, in any process, continues that
    #: trace. Added within v1; "" (no trace) is written as no field at all, so a
    #: journal without tracing holds the same bytes as before it existed. Left out of
    #: the repr, which stays the one every printed journal shows.
    traceparent: str = attrs.field(default="", repr=False, metadata={"omitted_when_default": True})


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class ActivityScheduled:
    """The workflow yielded an activity call as step ``seq``."""

    seq: int
    name: str
    args: bytes
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class AttemptFailed:
    """Attempt ``attempt`` of step ``seq`` failed; the next one starts at ``retry_at`` (wall clock)."""

    seq: int
    attempt: int
    error: ErrorInfo
    retry_at: float
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class ActivityCompleted:
    """Step ``seq`` returned ``result`` (CBOR) on attempt ``attempts``."""

    seq: int
    result: bytes
    attempts: int
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class ActivityFailed:
    """Step ``seq`` failed for good after ``attempts`` attempts."""

    seq: int
    error: ErrorInfo
    attempts: int
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class TimerStarted:
    """Step ``seq`` is a timer of ``seconds`` that fires at ``fire_at`` (wall clock)."""

    seq: int
    seconds: float
    fire_at: float
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class TimerFired:
    """The timer of step ``seq`` fired."""

    seq: int
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class SideEffectRecorded:
    """Step ``seq`` produced ``value`` (CBOR) once, or raised ``error``; replay returns it."""

    seq: int
    name: str
    value: bytes
    error: ErrorInfo | None
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class ChildStarted:
    """Step ``seq`` is a child run ``run_id`` of ``workflow`` with ``args`` (CBOR ``[args, kwargs]``)."""

    seq: int
    workflow: str
    args: bytes
    run_id: str
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class ChildCompleted:
    """The child run of step ``seq`` ended: it returned ``result`` (CBOR), or ``error`` is
    what it raised (type ``Cancelled`` when it was cancelled)."""

    seq: int
    result: bytes
    error: ErrorInfo | None
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class PatchRecorded:
    """The run reached ``durable.patched(change_id)`` live, so it takes the new code path."""

    change_id: str
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class SignalReceived:
    """The signal ``name`` arrived with ``payload`` (CBOR); it waits in the run until taken."""

    name: str
    payload: bytes
    t: float
    #: The id of the message that brought it (unique per signal sent): a message
    #: journaled once is never journaled again. Added within v1; "" in older journals.
    message_id: str = ""


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class CancelRequested:
    """Someone asked to cancel the run: ``durable.Cancelled`` is thrown in at its current yield."""

    reason: str
    t: float
    #: As :attr:`SignalReceived.message_id`.
    message_id: str = ""


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunCancelled:
    """The workflow let ``durable.Cancelled`` out: the run ended as cancelled."""

    reason: str
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunContinuedAsNew:
    """The run ends here and starts again with ``args`` in a fresh journal (same run id)."""

    args: bytes
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class StepCancelled:
    """Step ``seq`` lost a race (or its gather failed): it was cancelled and its outcome ignored."""

    seq: int
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunResumed:
    """A process opened the unfinished run and replayed it (a recovery, for the timeline)."""

    t: float
    pid: int


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class AttemptHeartbeat:
    """Attempt ``attempt`` of activity step ``seq`` reported progress: ``details`` (CBOR)
    are the latest it passed to ``durable.heartbeat``, ``t`` when it passed them. Journaled
    at a bounded rate, not at every call: an attempt's first heartbeat at once, then at
    most one every 10 seconds, and its latest details once more when it fails or times
    out (``durable._attempts``). Replay ignores it; the step's next attempt reads the
    latest details as ``activity_info().heartbeat_details``."""

    seq: int
    attempt: int
    details: bytes
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class SignalAwaited:
    """Step ``seq`` (a ``wait_signal``) began waiting for the signal ``name``: journaled when
    no signal of that name was there to take, before its timeout's ``TimerStarted`` (if it
    has one), so that tools can say what a waiting run waits for."""

    seq: int
    name: str
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunRetried:
    """Someone retried the failed run (``durable retry``): its ``RunFailed`` before this
    record, and the failure of the step it came from, are superseded; the run goes on
    from there with the code of the process that opens it."""

    t: float
    reason: str = ""


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunCompleted:
    """The workflow returned ``result`` (CBOR)."""

    result: bytes
    t: float


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunFailed:
    """The workflow raised ``error``."""

    error: ErrorInfo
    t: float


Event = (
    RunStarted
    | ActivityScheduled
    | AttemptFailed
    | ActivityCompleted
    | ActivityFailed
    | TimerStarted
    | TimerFired
    | SideEffectRecorded
    | ChildStarted
    | ChildCompleted
    | PatchRecorded
    | StepCancelled
    | SignalReceived
    | CancelRequested
    | RunCancelled
    | RunContinuedAsNew
    | RunResumed
    | AttemptHeartbeat
    | SignalAwaited
    | RunRetried
    | RunCompleted
    | RunFailed
)
TERMINAL = (RunCompleted, RunFailed, RunCancelled)
#: What others send a run (``Runtime.signal``, ``Runtime.cancel``): posted to its
#: inbox, then journaled by whoever holds the run.
Message = SignalReceived | CancelRequested


def message_text(message: Message) -> str:
    """``the signal 'name'`` or ``the cancellation``, for error messages."""
    return f"the signal {message.name!r}" if isinstance(message, SignalReceived) else "the cancellation"


#: The end of one incarnation of a run that goes on in a fresh journal.
CONTINUED = RunContinuedAsNew

#: Type code of every event in journal contract v1 (see docs/journal-v1.md).
EVENT_TYPES: dict[type[Any], int] = {
    RunStarted: 1,
    ActivityScheduled: 2,
    AttemptFailed: 3,
    ActivityCompleted: 4,
    ActivityFailed: 5,
    TimerStarted: 6,
    TimerFired: 7,
    SideEffectRecorded: 8,
    SignalReceived: 9,
    ChildStarted: 10,
    ChildCompleted: 11,
    CancelRequested: 12,
    RunCompleted: 13,
    RunFailed: 14,
    RunCancelled: 15,
    RunContinuedAsNew: 16,
    RunResumed: 17,
    PatchRecorded: 18,
    StepCancelled: 19,
    AttemptHeartbeat: 20,
    RunRetried: 21,
    SignalAwaited: 22,
}
