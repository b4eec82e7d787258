"""A run's journal as a timeline a person reads at a glance: the model behind ``durable show``.

Theory of operation
-------------------
:func:`build` folds a run's events, in journal order, into a :class:`Timeline`:
one :class:`Step` per sequence number (an activity with its attempts, each
failed one followed by its backoff; a timer; a recorded side effect), the
recoveries (``RunResumed``: a process resumed the run and replayed the journal up to
there), and the outcome. :func:`rows` lays the timeline out in time order, the
way the ``durable show`` text and the HTML page's table both print it;
:func:`to_json` is the stable ``--json`` document; ``_timeline_html.to_html``
draws it as one self-contained page with an SVG Gantt chart.

The journal contract grows, and another durable may have written events this
one has no rule for. Such an event is never an error here: it becomes a
:class:`Note` showing its class name and fields, attached to its step when it
carries a ``seq`` (a new step if there is none yet) and to the run otherwise.
Nor does a journal that breaks the ordering rules stop it: the timeline of a
damaged run is still a timeline, and :func:`salvage` reads the valid records
in front of the damage. A record whose fields have the wrong types (text where
a number belongs) ends the timeline there, as damage; a time that is no date
(NaN, or beyond the calendar: a timer of 10**12 seconds) is drawn as such.

Everything here is text a person reads, and journals hold text anyone could
have written (run ids, names, error messages): :func:`printable` is what every
viewer applies before putting such text on a terminal.

No I/O and no terminal code here: events and bytes in, values and text out.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ._core import events as ev
from ._core.codec import HEADER_SIZE, decode_record, read_header
from ._core.commands import encoded_call_text
from ._core.durations import format_duration
from ._core.errors import ErrorInfo, JournalCorruptError
from ._core.retried import deciding_failure
from ._core.values import loads_shown

#: Every status a run can have in ``durable ls`` / ``durable show``. A journal alone says
#: ``running`` for every unfinished run; the store tells which of ``queued``, ``running``,
#: ``waiting`` and ``stalled`` it is (see durable/_states.py); ``corrupt`` and
#: ``unreadable`` runs could not be read to their end.
STATUSES = (
    "queued",
    "running",
    "waiting",
    "stalled",
    "completed",
    "failed",
    "cancelled",
    "continued",
    "corrupt",
    "unreadable",
)
#: Version of the ``--json`` documents: keys are only ever added within a version.
JSON_VERSION = 1

# Events this version does not write but knows by name: journal-v1.md reserves them.
_RUN_ENDS_BY_NAME = {"RunCancelled": "cancelled", "RunContinuedAsNew": "continued"}
_STEP_ENDS_BY_NAME = {"StepCancelled": "cancelled"}
_KIND_BY_NAME: dict[str, str] = {}


@attrs.frozen
class Heartbeat:
    """The latest heartbeat of an attempt the journal holds (``AttemptHeartbeat``)."""

    t: float
    details: str


@attrs.define
class Attempt:
    """One attempt of an activity step.

    Attributes:
        number: 1 for the first attempt.
        started: when it could start: the step's scheduling, or the end of the previous backoff.
        ended: when it failed or returned (None: in flight when the journal ends).
        status: ``"completed"``, ``"failed"``, ``"running"``, or ``"pending"`` (a retry
            reopened its step: it runs when a process takes the run).
        error: why it failed.
        retry_at: for a failed attempt that is retried, when the next one may start.
        resumed: a process restarted while this attempt was in flight; it ran again from here.
        heartbeat: its latest heartbeat journaled (heartbeats are journaled at a bounded rate).
    """

    number: int
    started: float
    ended: float | None = None
    status: str = "running"
    error: ErrorInfo | None = None
    retry_at: float | None = None
    resumed: float | None = None
    heartbeat: Heartbeat | None = None


@attrs.define
class Note:
    """An event shown as it is: its class name, time and fields as text."""

    type: str
    t: float | None
    fields: dict[str, str]

    def text(self) -> str:
        return ", ".join(f"{name}={shorten(value, 60)}" for name, value in self.fields.items())


@attrs.define
class Step:
    """One step (sequence number) of the run.

    Attributes:
        kind: ``"activity"``, ``"timer"``, ``"side effect"``, or the class name of an
            event this version has no rule for.
        args: the call's arguments as text, e.g. ``"(4200, 'tok_visa')"``.
        status: ``"completed"``, ``"failed"``, ``"running"`` (not finished when the
            journal ends), ``"cancelled"``, or ``"recorded"`` (only notes).
        result: the returned (or recorded) value as text.
        until: a timer's deadline.
    """

    seq: int
    kind: str
    name: str
    args: str
    scheduled: float | None
    ended: float | None = None
    status: str = "running"
    result: str | None = None
    error: ErrorInfo | None = None
    until: float | None = None
    attempts: list[Attempt] = attrs.Factory(list)
    notes: list[Note] = attrs.Factory(list)
    #: When retries of the run made this step run again (its failure superseded).
    retried: list[float] = attrs.Factory(list)
    #: The signal a ``wait_signal`` step waits for (kind ``"signal"``).
    signal: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from scheduled to ended (None while running)."""
        if self.scheduled is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.scheduled)

    @property
    def call(self) -> str:
        return f"{self.name}{self.args}"

    @property
    def name_text(self) -> str:
        """What the step is, for a sentence: ``timer sleep(1h)``, ``signal 'approved'``."""
        if self.kind == "signal":
            return f"signal {self.signal!r}"
        return f"{self.kind} {self.call}"

    @property
    def outcome(self) -> str:
        """The result, the error, or the status, as text."""
        if self.error is not None:
            return f"{self.status}: {self.error}"
        if self.result is not None:
            return self.result
        if self.status == "running" and self.kind == "signal":
            return "waiting"
        return {"running": "in flight", "recorded": ""}.get(self.status, self.status)


@attrs.define
class Recovery:
    """A process resumed the run and replayed the journal up to here (``RunResumed``).

    Attributes:
        replayed: steps whose recorded outcome replay fed back instead of running them.
        in_flight: steps begun but not finished: they ran (or waited) again.
    """

    t: float
    pid: int
    replayed: list[int]
    in_flight: list[int]
    #: Of ``in_flight``, the waits (timers, signal waits): they went on waiting.
    waits: list[int] = attrs.Factory(list)

    def text(self) -> str:
        fed = (
            f"{plural(len(self.replayed), 'finished step')} fed from the journal"
            if self.replayed
            else "nothing had finished, so the workflow started over"
        )
        ran = [seq for seq in self.in_flight if seq not in self.waits]
        again = _steps_text(ran, "in flight, run again") + _steps_text(self.waits, "still waiting")
        return f"process {self.pid} resumed the run and replayed it here: {fed}{again}"


def _steps_text(seqs: list[int], what: str) -> str:
    """``; steps 1, 2 in flight, run again`` (nothing for no steps)."""
    if not seqs:
        return ""
    return f"; {'steps' if len(seqs) > 1 else 'step'} {', '.join(map(str, seqs))} {what}"


@attrs.define
class Timeline:
    """A run's history, from its journal.

    Attributes:
        status: one of :data:`STATUSES`.
        started: when the run was created (None if the journal lost even that).
        ended: when it ended (None while unfinished).
        last_event: the time of the last event.
        events: how many events the journal holds (in front of any damage).
        journal_error: why the journal could not be read to its end.
    """

    run_id: str
    workflow: str | None = None
    args: str = "()"
    started: float | None = None
    status: str = "running"
    ended: float | None = None
    last_event: float | None = None
    result: str | None = None
    error: ErrorInfo | None = None
    steps: list[Step] = attrs.Factory(list)
    recoveries: list[Recovery] = attrs.Factory(list)
    notes: list[Note] = attrs.Factory(list)
    events: int = 0
    journal_error: str | None = None
    #: What an unfinished run waits for, and until when (see durable/_states.py).
    waiting: str | None = None
    #: What a running run is doing: its steps in hand, attempts in flight for how long.
    doing: str | None = None
    #: Who holds an unfinished run (a process, since when), or held it last and is gone.
    holder: str | None = None
    #: When the tools looked at an unfinished run: its times "so far" run to then.
    now: float | None = None
    #: The state in a few words, for a column of ``durable ls`` (``by pid 812 on web-1``).
    brief: str | None = None
    #: The same facts for programs (``--json``): who holds the run (pid, host, since, live,
    #: lease_expires; times as epoch seconds here), and when what it waits for ends.
    holder_facts: dict[str, Any] | None = None
    until: float | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from the run's start to its end; while unfinished, to when the tools
        looked (``now``), else to its last event."""
        end = self.ended if self.ended is not None else (self.now or self.last_event)
        return None if self.started is None or end is None else max(0.0, end - self.started)

    @property
    def outcome(self) -> str:
        if self.error is not None:
            return str(self.error)
        return self.result if self.result is not None else ""

    def step(self, seq: int) -> Step | None:
        return next((step for step in self.steps if step.seq == seq), None)

    def offset(self, t: float | None) -> str:
        """``+1.52s`` from the run's start."""
        if t is None or self.started is None:
            return ""
        return "+" + duration_text(max(0.0, t - self.started))


# --- building ------------------------------------------------------------------------


def build(
    run_id: str, events: Iterable[Any], *, journal_error: str | None = None, corrupt: bool = True
) -> Timeline:
    """The timeline of a run from its events (in journal order).

    Args:
        journal_error: set when the journal could not be read to its end; ``events``
            are then the records in front of the damage (see :func:`salvage`).
        corrupt: with ``journal_error``, status ``"corrupt"`` (damage) rather than
            ``"unreadable"`` (a newer format, no permission...).
    """
    builder = _Builder(Timeline(run_id))
    for index, event in enumerate(events):
        try:
            _check_fields(event)
            builder.add(event)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            # The journal passed its checksums but a record holds what no durable writes.
            journal_error = f"record {index} ({type(event).__name__}) is malformed: {exc}"
            corrupt = True
            break
    timeline = builder.timeline
    timeline.steps.sort(key=lambda step: step.seq)
    if journal_error is not None:
        timeline.journal_error = journal_error
        timeline.status = "corrupt" if corrupt else "unreadable"
    return timeline


#: What each field type of the journal's events must hold (``bool`` is no number here).
_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "ErrorInfo": lambda v: isinstance(v, ErrorInfo) and _error_ok(v),
    "ErrorInfo | None": lambda v: v is None or (isinstance(v, ErrorInfo) and _error_ok(v)),
}


def _error_ok(error: ErrorInfo) -> bool:
    return all(isinstance(getattr(error, name, None), str) for name in ("type", "message", "traceback"))


def _check_fields(event: Any) -> None:
    """Refuse an event of a known type whose fields do not have their types (TypeError)."""
    cls = type(event)
    if cls not in _HANDLERS:
        return  # shown by class name and fields, whatever they hold
    for field in attrs.fields(cls):
        check = _FIELD_CHECKS.get(str(field.type))
        value = getattr(event, field.name)
        if check is not None and not check(value):
            raise TypeError(f"its field {field.name!r} holds {_plain(value)[:80]}, not a {field.type}")


class _Builder:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.steps: dict[int, Step] = {}
        #: The events so far (a retry looks back at what the run failed from).
        self.seen: list[Any] = []
        #: Where the events since the last retry begin.
        self.since_retry = 1

    def add(self, event: Any) -> None:
        self.seen.append(event)
        self.timeline.events += 1
        t = getattr(event, "t", None)
        if isinstance(t, int | float) and not isinstance(t, bool):
            self.timeline.last_event = float(t)
        _HANDLERS.get(type(event), _Builder._other)(self, event)

    def _step(self, seq: int, kind: str, t: float | None) -> Step:
        step = self.steps.get(seq)
        if step is None:
            step = self.steps[seq] = Step(seq, kind, "", "", t)
            self.timeline.steps.append(step)
        return step

    def _attempt(self, seq: int, t: float) -> tuple[Step, Attempt]:
        """The step's attempt in flight (made up if the journal lost its scheduling)."""
        step = self._step(seq, "activity", t)
        if not step.attempts:
            step.attempts.append(Attempt(1, step.scheduled if step.scheduled is not None else t))
        return step, step.attempts[-1]

    def run_started(self, event: ev.RunStarted) -> None:
        timeline = self.timeline
        timeline.workflow, timeline.started = event.workflow, event.t
        timeline.args = _call_text(event.args)

    def activity_scheduled(self, event: ev.ActivityScheduled) -> None:
        step = self._step(event.seq, "activity", event.t)
        step.name, step.args, step.scheduled = event.name, _call_text(event.args), event.t
        if not step.attempts:
            step.attempts.append(Attempt(1, event.t))

    def attempt_failed(self, event: ev.AttemptFailed) -> None:
        step, attempt = self._attempt(event.seq, event.t)
        attempt.number, attempt.ended, attempt.status = event.attempt, event.t, "failed"
        attempt.error, attempt.retry_at = event.error, event.retry_at
        step.attempts.append(Attempt(event.attempt + 1, max(event.retry_at, event.t)))

    def activity_completed(self, event: ev.ActivityCompleted) -> None:
        step, attempt = self._attempt(event.seq, event.t)
        attempt.number, attempt.ended, attempt.status = event.attempts, event.t, "completed"
        step.ended, step.status, step.result = event.t, "completed", _value_text(event.result)

    def activity_failed(self, event: ev.ActivityFailed) -> None:
        step, attempt = self._attempt(event.seq, event.t)
        attempt.number, attempt.ended, attempt.status = event.attempts, event.t, "failed"
        attempt.error = event.error
        step.ended, step.status, step.error = event.t, "failed", event.error

    def timer_started(self, event: ev.TimerStarted) -> None:
        step = self._step(event.seq, "timer", event.t)
        if step.kind == "signal":  # the timeout of a wait_signal (SignalAwaited came first)
            step.args = f"({step.signal!r}, timeout={format_duration(event.seconds)})"
            step.until = event.fire_at
            return
        step.kind, step.name, step.args = "timer", "sleep", f"({format_duration(event.seconds)})"
        step.scheduled, step.until = event.t, event.fire_at

    def signal_awaited(self, event: ev.SignalAwaited) -> None:
        step = self._step(event.seq, "signal", event.t)
        step.kind, step.name, step.signal = "signal", "wait_signal", event.name
        step.args, step.scheduled = f"({event.name!r})", event.t

    def signal_received(self, event: ev.SignalReceived) -> None:
        """A row of its own; and the oldest wait for its name, if one waits, takes it."""
        self.timeline.notes.append(describe(event))
        waiting = (s for s in self.timeline.steps if s.kind == "signal" and s.status == "running")
        step = next((s for s in sorted(waiting, key=lambda s: s.seq) if s.signal == event.name), None)
        if step is not None:
            step.status, step.ended, step.result = "completed", event.t, _value_text(event.payload)

    def timer_fired(self, event: ev.TimerFired) -> None:
        step = self._step(event.seq, "timer", event.t)
        if step.kind == "signal":
            step.ended, step.status, step.result = event.t, "timed out", "SignalTimeout raised at the yield"
            return
        step.ended, step.status, step.result = event.t, "completed", "fired"

    def side_effect(self, event: ev.SideEffectRecorded) -> None:
        step = self._step(event.seq, "side effect", event.t)
        step.name, step.args, step.scheduled, step.ended = event.name, "()", event.t, event.t
        if event.error is not None:
            step.status, step.error = "failed", event.error
        else:
            step.status, step.result = "completed", _value_text(event.value)

    def child_started(self, event: ev.ChildStarted) -> None:
        step = self._step(event.seq, "child", event.t)
        step.kind, step.name, step.args = "child", event.workflow, _call_text(event.args)
        step.scheduled = event.t
        step.notes.append(Note("ChildStarted", event.t, {"run_id": event.run_id}))

    def child_completed(self, event: ev.ChildCompleted) -> None:
        step = self._step(event.seq, "child", event.t)
        step.ended = event.t
        if event.error is not None:
            step.status, step.error = "failed", event.error
        else:
            step.status, step.result = "completed", _value_text(event.result)

    def attempt_heartbeat(self, event: ev.AttemptHeartbeat) -> None:
        step, attempt = self._attempt(event.seq, event.t)
        target = next((a for a in step.attempts if a.number == event.attempt), attempt)
        target.heartbeat = Heartbeat(event.t, _value_text(event.details))

    def cancel_requested(self, event: ev.CancelRequested) -> None:
        reason = repr(event.reason) if event.reason else "(none given)"
        self.timeline.notes.append(Note("CancelRequested", event.t, {"reason": reason}))

    def run_cancelled(self, event: ev.RunCancelled) -> None:
        self._close_open_timers(event.t)
        timeline = self.timeline
        timeline.status, timeline.ended = "cancelled", event.t
        timeline.result = f"cancelled: {event.reason}" if event.reason else "cancelled"

    def run_resumed(self, event: ev.RunResumed) -> None:
        replayed, in_flight = [], []
        for step in sorted(self.timeline.steps, key=lambda s: s.seq):
            if step.status != "running":
                replayed.append(step.seq)
                continue
            in_flight.append(step.seq)
            attempt = step.attempts[-1] if step.attempts else None
            if attempt is not None and attempt.status == "pending":  # a retry's: it begins now
                attempt.status, attempt.started = "running", event.t
            elif attempt is not None and attempt.started < event.t:
                attempt.resumed = event.t  # it was running when the process stopped
        waits = [seq for seq in in_flight if self.steps[seq].kind in ("timer", "signal")]
        self.timeline.recoveries.append(Recovery(event.t, event.pid, replayed, in_flight, waits))

    def _close_open_timers(self, t: float) -> None:
        """At the run's end, a timer that neither fired nor was cancelled was the timeout
        of a ``wait_signal`` that a signal answered first."""
        for step in self.timeline.steps:
            if step.kind == "timer" and step.status == "running":
                step.name, step.status, step.ended = "wait_signal timeout", "completed", t
                step.result = "a signal came first"

    def run_completed(self, event: ev.RunCompleted) -> None:
        self._close_open_timers(event.t)
        timeline = self.timeline
        timeline.status, timeline.ended, timeline.result = "completed", event.t, _value_text(event.result)

    def run_failed(self, event: ev.RunFailed) -> None:
        self._close_open_timers(event.t)
        timeline = self.timeline
        timeline.status, timeline.ended, timeline.error = "failed", event.t, event.error

    def run_retried(self, event: ev.RunRetried) -> None:
        """The failure before it is superseded (kept as a row), the step the workflow raised
        from (if any) runs again with fresh attempts, and the run is unfinished again: by
        the rule replay follows (durable/_core/retried.py)."""
        timeline, marker = self.timeline, len(self.seen) - 1
        steps: set[int] = set()
        if timeline.status == "failed" and marker >= 1 and type(self.seen[marker - 1]) is ev.RunFailed:
            decided, cancelled = deciding_failure(self.seen, marker - 1, self.since_retry)
            if decided is not None:
                steps = {self.seen[decided].seq} | cancelled
            failure = f"{timeline.error}" if timeline.error is not None else "?"
            timeline.notes.append(Note("RunFailed", timeline.ended, {"error": failure}))
            timeline.status, timeline.ended, timeline.error = "running", None, None
        self.since_retry = marker + 1
        for seq in sorted(steps):
            step = self.steps.get(seq)
            if step is not None:
                step.status, step.ended, step.error, step.result = "running", None, None, None
                step.retried.append(event.t)
                if step.kind == "activity":
                    step.attempts.append(Attempt(1, event.t, status="pending"))
        again = f"step {', '.join(map(str, sorted(steps)))} runs again" if steps else "it goes on"
        reason = f" ({event.reason})" if event.reason else ""
        timeline.notes.append(Note("RunRetried", event.t, {"reason": reason, "again": again}))

    def _other(self, event: Any) -> None:
        """An event type without a rule here: shown by class name and fields."""
        note = describe(event)
        if note.type in _RUN_ENDS_BY_NAME:
            self.timeline.status, self.timeline.ended = _RUN_ENDS_BY_NAME[note.type], note.t
            if note.t is not None:
                self._close_open_timers(note.t)
        seq = getattr(event, "seq", None)
        if not isinstance(seq, int) or isinstance(seq, bool):
            self.timeline.notes.append(note)
            return
        step = self.steps.get(seq)
        if step is None:
            step = self._step(seq, _KIND_BY_NAME.get(note.type, note.type), note.t)
            step.name = next((note.fields[f] for f in ("name", "workflow") if f in note.fields), "")
            step.status = "recorded"
        if note.fields or note.type not in _STEP_ENDS_BY_NAME:
            step.notes.append(note)
        if note.type in _STEP_ENDS_BY_NAME:
            failed = getattr(event, "error", None) is not None
            step.ended, step.status = note.t, "failed" if failed else _STEP_ENDS_BY_NAME[note.type]
            attempt = step.attempts[-1] if step.attempts else None
            if attempt is not None and attempt.status == "running" and note.t is not None:
                attempt.ended, attempt.status = note.t, step.status
        elif step.status == "recorded":
            step.ended = note.t


_HANDLERS: dict[type[Any], Callable[[_Builder, Any], None]] = {
    ev.RunStarted: _Builder.run_started,
    ev.ActivityScheduled: _Builder.activity_scheduled,
    ev.AttemptFailed: _Builder.attempt_failed,
    ev.ActivityCompleted: _Builder.activity_completed,
    ev.ActivityFailed: _Builder.activity_failed,
    ev.TimerStarted: _Builder.timer_started,
    ev.TimerFired: _Builder.timer_fired,
    ev.SideEffectRecorded: _Builder.side_effect,
    ev.ChildStarted: _Builder.child_started,
    ev.ChildCompleted: _Builder.child_completed,
    ev.RunResumed: _Builder.run_resumed,
    ev.AttemptHeartbeat: _Builder.attempt_heartbeat,
    ev.CancelRequested: _Builder.cancel_requested,
    ev.RunCancelled: _Builder.run_cancelled,
    ev.RunRetried: _Builder.run_retried,
    ev.SignalAwaited: _Builder.signal_awaited,
    ev.SignalReceived: _Builder.signal_received,
    ev.RunCompleted: _Builder.run_completed,
    ev.RunFailed: _Builder.run_failed,
}


def describe(event: Any) -> Note:
    """Any event as a :class:`Note`: class name, time, and its other fields as text."""
    fields: dict[str, str] = {}
    t = None
    for name, value in _fields_of(event):
        if name == "t" and isinstance(value, int | float):
            t = float(value)
        elif name != "seq":
            fields[name] = _value_text(value) if isinstance(value, bytes) else _plain(value)
    return Note(type(event).__name__, t, fields)


def _fields_of(event: Any) -> list[tuple[str, Any]]:
    if attrs.has(type(event)):
        return [(f.name, getattr(event, f.name, None)) for f in attrs.fields(type(event))]
    return list(getattr(event, "__dict__", {}).items())


def _plain(value: Any) -> str:
    return str(value) if isinstance(value, ErrorInfo) else repr(value)


def _value_text(data: bytes) -> str:
    """A journaled value as ``repr`` text (never raises: a viewer shows what it can)."""
    try:
        return repr(loads_shown(data))
    except Exception:
        return f"<{len(data)} bytes that do not decode>"


def _call_text(data: bytes) -> str:
    return encoded_call_text(data, limit=None)  # whole: --json carries it


def salvage(data: bytes) -> list[Any]:
    """The valid records at the front of a damaged journal, up to the first bad one."""
    try:
        read_header(data, "journal")
    except Exception:
        return []
    events: list[Any] = []
    pos = HEADER_SIZE
    while pos < len(data):
        try:
            event, index, _, pos = decode_record(data, pos)
        except ValueError:
            break
        if index != len(events):
            break
        events.append(event)
    return events


# --- text ----------------------------------------------------------------------------


def shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def printable(text: str, *, keep: str = "") -> str:
    """``text`` safe to put on a terminal: every character that is not printable (C0 and C1
    controls such as ESC and CR, bidi overrides such as U+202E, lone surrogates) as its
    Python escape (``\\x1b``, ``\\u202e``, ``\\udcff``), except those in ``keep`` (``"\\n"``).

    Journals hold text anyone could have written: printed raw, an escape sequence in a run
    id could clear the screen or fake a line of output."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def error_text(error: BaseException) -> str:
    """``ValueError: bad input``: an exception as an :class:`ErrorInfo` reads (by its short type name)."""
    return str(ErrorInfo(type(error).__name__, str(error)))


def first_line(error: BaseException) -> str:
    """An error in one line: the first of its message, or its type's name if it has none."""
    text = str(error)
    return text.splitlines()[0] if text.strip() else type(error).__name__


def plural(count: int, noun: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def duration_text(seconds: float | None) -> str:
    """A measured time as the timeline shows it (``"1.52s"``); ``""`` for none."""
    return "" if seconds is None else format_duration(seconds, precise=True)


def _moment(t: float) -> datetime.datetime | None:
    """Wall-clock seconds as a local datetime; None for a time that is no date (NaN, beyond
    the calendar: a journal may hold a timer of 10**12 seconds)."""
    try:
        return datetime.datetime.fromtimestamp(t).astimezone()
    except (OverflowError, OSError, ValueError):
        return None


def _no_date(t: float) -> str:
    if math.isnan(t):
        return "no time (NaN)"
    return f"{'far future' if t > 0 else 'far past'} ({t:.6g}s from 1970)"


def local_time(t: float | None, *, precise: bool = False) -> str:
    """Wall-clock seconds as local time: ``2026-11-25 10:00:03`` (``.123`` when ``precise``);
    a time that is no date as ``far future (1e+12s from 1970)`` or ``no time (NaN)``."""
    if t is None:
        return ""
    moment = _moment(t)
    if moment is None:
        return _no_date(t)
    return moment.replace(tzinfo=None).isoformat(" ", timespec="milliseconds" if precise else "seconds")


def iso_time(t: float | None) -> str | None:
    """Wall-clock seconds as ISO 8601 local time with its UTC offset (the ``--json`` form);
    None for a time that is no date."""
    if t is None:
        return None
    moment = _moment(t)
    return None if moment is None else moment.isoformat(timespec="microseconds")


def _finite(seconds: float | None) -> float | None:
    """A number for JSON (which has no NaN or infinity): None if it is not finite."""
    return seconds if seconds is not None and math.isfinite(seconds) else None


def attempt_text(attempt: Attempt) -> str:
    """``attempt 2 failed after 3ms: ConnectionError: refused; retry after 500ms``."""
    if attempt.status == "running":
        beat = attempt.heartbeat
        last = "" if beat is None else f" (last heartbeat journaled at {local_time(beat.t)}: {beat.details})"
        return f"attempt {attempt.number} in flight when the journal ends{last}"
    if attempt.status == "pending":
        return f"attempt {attempt.number} runs when a process takes the run"
    began = attempt.started
    text = f"attempt {attempt.number}"
    if attempt.resumed is not None:
        text += " was cut short (its process stopped), ran again when the run resumed, and"
        began = attempt.resumed
    text += f" {attempt.status}"
    if attempt.ended is not None and attempt.ended >= began:
        text += f" after {duration_text(attempt.ended - began)}"
    if attempt.error is not None:
        text += f": {attempt.error}"
    if attempt.retry_at is not None and attempt.ended is not None:
        text += f"; retry after {duration_text(max(0.0, attempt.retry_at - attempt.ended))}"
    return text


# How run-level events read in a timeline row: (kind column, text with the fields).
_NOTE_ROWS = {
    "PatchRecorded": ("patch", "patched({change_id}) is True from here: the run takes the new code path"),
    "SignalReceived": ("signal", "signal {name} received, payload {payload}"),
    "CancelRequested": ("cancel", "cancellation requested, reason {reason}"),
    "RunFailed": ("failed", "run failed → {error} (superseded by the retry below)"),
    "RunRetried": (
        "retry",
        "retried{reason}: the failure above is superseded, {again} with the current code",
    ),
}


def note_text(note: Note) -> str:
    """A run-level event as its timeline row says it."""
    return _note_row(note)[1]


def _note_row(note: Note) -> tuple[str, str]:
    """The kind column and text of a run-level event (generic if its fields are not the expected ones)."""
    what, template = _NOTE_ROWS.get(note.type, (note.type, "{}"))
    try:
        return what, template.format(note.text(), **note.fields)
    except (KeyError, IndexError):
        return note.type, note.text()


@attrs.frozen
class Row:
    """One line of the timeline as ``durable show`` prints it, in time order.

    Attributes:
        kind: ``"step"``, ``"recovery"``, ``"note"`` or ``"outcome"``.
        at: the time as an offset from the run's start (``"+1.52s"``).
        what: the kind column: ``"activity"``, ``"timer"``, ``"recovery"``...
        status: what the line's outcome says (``"completed"``, ``"failed"``...): for colours.
        details: indented lines under it, ``(status, text)``: one per attempt, for instance.
    """

    kind: str
    at: str
    what: str
    text: str
    status: str
    step: str = ""
    took: str = ""
    outcome: str = ""
    details: tuple[tuple[str, str], ...] = ()
    seq: int | None = None


def _step_row_of(timeline: Timeline, step: Step) -> Row:
    # Attempts and retries in the order they happened (a retry's attempts come after it).
    timed = [
        (a.started, a.status, attempt_text(a))
        for a in step.attempts
        if len(step.attempts) > 1 or a.status == "failed" or a.resumed is not None or a.heartbeat is not None
    ]
    retried = "the failure above is superseded, attempts start at 1"
    timed += [(t, "note", f"retried at {timeline.offset(t)}: {retried}") for t in step.retried]
    details = [(status, text) for _, status, text in sorted(timed, key=lambda item: item[0])]
    details += [("note", f"{n.type} {n.text()}") for n in step.notes]
    if step.until is not None and step.status == "running":
        details.append(("running", f"fires at {local_time(step.until, precise=True)}"))
    took = duration_text(step.duration) if step.attempts or step.kind in ("timer", "child", "signal") else ""
    if step.status == "running" and timeline.now is not None and step.scheduled is not None:
        took = f"{duration_text(max(0.0, timeline.now - step.scheduled))} so far"
    outcome = step.outcome
    if step.status == "running" and step.kind == "activity" and timeline.status in ("queued", "stalled"):
        outcome = "to run again"  # nothing runs it now: a worker will
    if step.attempts and step.status in ("completed", "failed") and step.attempts[-1].number > 1:
        outcome += f" (attempt {step.attempts[-1].number})"
    return Row(
        kind="step",
        at=timeline.offset(step.scheduled),
        what=step.kind,
        text=step.call,
        status=step.status,
        step=str(step.seq),
        took=took,
        outcome=outcome,
        details=tuple(details),
        seq=step.seq,
    )


def rows(timeline: Timeline) -> list[Row]:
    """The timeline as lines in time order: steps (with their attempts), recoveries, the outcome."""
    found: list[tuple[float, int, Row]] = []
    for step in timeline.steps:
        found.append((step.scheduled or 0.0, 0, _step_row_of(timeline, step)))
    for r in timeline.recoveries:
        found.append((r.t, 1, Row("recovery", timeline.offset(r.t), "recovery", r.text(), "recovery", "⟲")))
    for note in timeline.notes:
        what, text = _note_row(note)
        row = Row("note", timeline.offset(note.t), what, text, "note")
        found.append((note.t or 0.0, 2, row))
    ordered = [row for _, _, row in sorted(found, key=lambda item: (item[0], item[1]))]
    if timeline.ended is not None:
        ordered.append(
            Row(
                kind="outcome",
                at=timeline.offset(timeline.ended),
                what="outcome",
                text=f"run {timeline.status}",
                status=timeline.status,
                took=duration_text(timeline.duration),
                outcome=timeline.outcome,
            )
        )
    return ordered


def facts(timeline: Timeline) -> list[tuple[str, str]]:
    """The run's facts above its rows, ``(name, text)``, as the text and the page show them:
    its arguments, start, how long it took (so far), and its result or error."""
    if timeline.started is None:  # no RunStarted: the journal is damaged from its start
        found = [("arguments", "unknown"), ("started", "unknown")]
    else:
        found = [("arguments", timeline.args)]
        found.append(("started", f"{local_time(timeline.started, precise=True)} (local time)"))
    if timeline.duration is not None:
        found.append((_took_label(timeline), duration_text(timeline.duration)))
    if timeline.outcome:
        found.append(("error" if timeline.error is not None else "result", timeline.outcome))
    if timeline.holder is not None:
        found.append(("held by", timeline.holder))
    if timeline.doing is not None:
        found.append(("doing", timeline.doing))
    if timeline.waiting is not None:
        found.append(("waits for", timeline.waiting))
    return found


def _took_label(timeline: Timeline) -> str:
    """How long the run took (``took``), has run until the tools looked (``so far``), or
    ran until the last record in front of its journal's damage (``to damage``)."""
    if timeline.ended is not None:
        return "took"
    return "to damage" if timeline.journal_error is not None and timeline.now is None else "so far"


def shown_damage(journal_error: str) -> str:
    """Why a journal could not be read to its end, as ``durable show`` and the page tell it
    beside what precedes the damage: without the advice to look at it that way."""
    return journal_error.replace(JournalCorruptError.ADVICE, "Restore the journal from a backup.")


# --- JSON ----------------------------------------------------------------------------


def _error_json(error: ErrorInfo | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def _note_json(note: Note) -> dict[str, Any]:
    return {"type": note.type, "t": iso_time(note.t), "fields": dict(note.fields)}


def awaited_signals(timeline: Timeline) -> list[str]:
    """The signals the run waits for now (its open ``wait_signal`` steps), oldest first."""
    return [s.signal for s in timeline.steps if s.kind == "signal" and s.status == "running" and s.signal]


def summary_json(timeline: Timeline) -> dict[str, Any]:
    """One object of ``durable ls --json``."""
    return {
        "id": timeline.run_id,
        "workflow": timeline.workflow,
        "status": timeline.status,
        "started": iso_time(timeline.started),
        "last_event": iso_time(timeline.last_event),
        "steps": len(timeline.steps),
        "error": timeline.journal_error,
        "waiting": timeline.waiting,
        "doing": timeline.doing,
        "held_by": timeline.holder,
        "brief": timeline.brief,
        "holder": _holder_json(timeline.holder_facts),
        "until": iso_time(timeline.until),
    }


def _holder_json(facts: dict[str, Any] | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    times = ("since", "lease_expires", "stalled_since")
    return {key: iso_time(value) if key in times else value for key, value in facts.items()}


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "attempt": attempt.number,
        "status": attempt.status,
        "started": iso_time(attempt.started),
        "ended": iso_time(attempt.ended),
        "error": _error_json(attempt.error),
        "retry_at": iso_time(attempt.retry_at),
        "resumed": iso_time(attempt.resumed),
        "heartbeat": None
        if attempt.heartbeat is None
        else {"t": iso_time(attempt.heartbeat.t), "details": attempt.heartbeat.details},
    }


def _step_json(step: Step) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "kind": step.kind,
        "name": step.name,
        "args": step.args,
        "status": step.status,
        "scheduled": iso_time(step.scheduled),
        "ended": iso_time(step.ended),
        "duration": _finite(step.duration),
        "result": step.result,
        "error": _error_json(step.error),
        "until": iso_time(step.until),
        "attempts": [_attempt_json(a) for a in step.attempts],
        "notes": [_note_json(n) for n in step.notes],
    }


def to_json(timeline: Timeline) -> dict[str, Any]:
    """The ``durable show --json`` document (its keys are documented in docs/cli.md)."""
    return {
        "version": JSON_VERSION,
        "id": timeline.run_id,
        "workflow": timeline.workflow,
        "args": timeline.args,
        "status": timeline.status,
        "started": iso_time(timeline.started),
        "ended": iso_time(timeline.ended),
        "last_event": iso_time(timeline.last_event),
        "duration": _finite(timeline.duration),
        "result": timeline.result,
        "error": _error_json(timeline.error),
        "journal_error": timeline.journal_error,
        "waiting": timeline.waiting,
        "events": timeline.events,
        "steps": [_step_json(s) for s in timeline.steps],
        "recoveries": [
            {"t": iso_time(r.t), "pid": r.pid, "replayed": r.replayed, "in_flight": r.in_flight}
            for r in timeline.recoveries
        ],
        "notes": [_note_json(n) for n in timeline.notes],
        # Added in this version, after the keys before them (whose order is stable):
        "doing": timeline.doing,
        "held_by": timeline.holder,
        "now": iso_time(timeline.now),
        "holder": _holder_json(timeline.holder_facts),
        "until": iso_time(timeline.until),
    }
