"""A run's journal as a timeline a person reads at a glance: the model behind ``durable show``.

Theory of operation
-------------------
:func:`build` folds a run's events, in journal order, into a :class:`Timeline`:
one :class:`Step` per sequence number, with its attempts (each failed one
followed by its backoff), when it was scheduled and when it ended; the
recoveries (``RunResumed``: a process restarted and replayed the journal up to
there); and the outcome. The ``durable`` CLI turns the model into text (rich),
:func:`to_json` into the stable ``--json`` format, and :func:`to_html` into one
self-contained page with an SVG Gantt chart.

The journal contract grows (timers, side effects, signals...), so an event type
this module has no rule for is never an error: it becomes a :class:`Note`
showing its class name and fields, attached to its step when it carries a
``seq`` (a new step if none exists) and to the run otherwise. Nor does a
journal that breaks the ordering rules stop it: the timeline of a damaged run
is still a timeline, and :func:`salvage` reads the valid records in front of
the damage.

No I/O and no terminal code here: events and bytes in, values and text out.
"""

from __future__ import annotations

import datetime
import html
import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from . import _events as ev
from ._codec import HEADER_SIZE, decode_record, read_header
from ._errors import ErrorInfo
from ._values import loads

#: Every status a run can have in ``durable ls`` / ``durable show``.
STATUSES = ("running", "completed", "failed", "cancelled", "continued", "corrupt", "unreadable")
#: Version of the ``--json`` formats (bumped only for incompatible changes; keys are only added).
JSON_VERSION = 1

# Run-ending events the contract reserves (journal-v1.md section 6), by class name,
# so their runs get a status as soon as the runtime writes them.
_TERMINAL_BY_NAME = {"RunCancelled": "cancelled", "RunContinuedAsNew": "continued"}
# Reserved step events that end a step (the step's opening event has its own type).
_CLOSING_BY_NAME = ("TimerFired", "ChildCompleted")
_KIND_BY_NAME = {"TimerStarted": "timer", "ChildStarted": "child", "SideEffectRecorded": "side effect"}


@attrs.define
class Attempt:
    """One attempt of an activity step.

    Attributes:
        number: 1 for the first attempt.
        started: when it could start: the step's scheduling, or the end of the previous backoff.
        ended: when it failed or returned (None: in flight when the journal ends).
        status: ``"completed"``, ``"failed"`` or ``"running"``.
        error: why it failed.
        retry_at: for a failed attempt that is retried, when the next one may start.
        resumed: a process restarted during this attempt, which then ran again from here.
    """

    number: int
    started: float
    ended: float | None = None
    status: str = "running"
    error: ErrorInfo | None = None
    retry_at: float | None = None
    resumed: float | None = None


@attrs.define
class Note:
    """An event shown as it is: its class name, time and fields as text."""

    type: str
    t: float | None
    fields: dict[str, str]


@attrs.define
class Step:
    """One step (sequence number) of the run.

    Attributes:
        kind: ``"activity"``, or the kind of a newer command (``"timer"``...) or event class name.
        args: the call's arguments as text, e.g. ``"(4200, 'tok_visa')"``.
        status: ``"completed"``, ``"failed"``, ``"running"`` (scheduled, not finished),
            or ``"recorded"`` (a step made of events this version shows as notes).
        result: the returned value as text.
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
    attempts: list[Attempt] = attrs.Factory(list)
    notes: list[Note] = attrs.Factory(list)

    @property
    def duration(self) -> float | None:
        """Seconds from scheduled to ended (None while running)."""
        if self.scheduled is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.scheduled)

    @property
    def call(self) -> str:
        return f"{self.name}{self.args}"


@attrs.define
class Recovery:
    """A process restarted and replayed the journal up to here (``RunResumed``).

    Attributes:
        replayed: steps whose recorded outcome replay fed back instead of running them.
        in_flight: steps scheduled but not finished: they ran (or waited) again.
    """

    t: float
    pid: int
    replayed: list[int]
    in_flight: list[int]


@attrs.define
class Timeline:
    """A run's history, from its journal.

    Attributes:
        status: one of :data:`STATUSES`.
        started: when the run was created (None if the journal lost even that).
        ended: when it ended (None while unfinished).
        last_event: the time of the last timed event.
        journal_error: why the journal could not be read to its end (status corrupt/unreadable).
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

    @property
    def duration(self) -> float | None:
        """Seconds from the run's start to its end, or to its last event while unfinished."""
        end = self.ended if self.ended is not None else self.last_event
        return None if self.started is None or end is None else max(0.0, end - self.started)

    def step(self, seq: int) -> Step | None:
        for step in self.steps:
            if step.seq == seq:
                return step
        return None


# --- building ------------------------------------------------------------------------


def build(run_id: str, events: Iterable[Any], *, journal_error: str | None = None, corrupt: bool = True) -> Timeline:
    """The timeline of a run from its events (in journal order).

    Args:
        journal_error: set when the journal could not be read to its end; ``events``
            are then the records in front of the damage (see :func:`salvage`).
        corrupt: with ``journal_error``: status ``"corrupt"`` (damage) rather than
            ``"unreadable"`` (a newer format, no permission...).
    """
    builder = _Builder(Timeline(run_id))
    for event in events:
        builder.add(event)
    timeline = builder.timeline
    if journal_error is not None:
        timeline.journal_error = journal_error
        timeline.status = "corrupt" if corrupt else "unreadable"
    return timeline


class _Builder:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.steps: dict[int, Step] = {}

    def add(self, event: Any) -> None:
        self.timeline.events += 1
        t = getattr(event, "t", None)
        if isinstance(t, int | float) and not isinstance(t, bool):
            self.timeline.last_event = float(t)
        handler = _HANDLERS.get(type(event), _Builder._other)
        handler(self, event)

    def _step(self, seq: int, kind: str, t: float | None) -> Step:
        step = self.steps.get(seq)
        if step is None:
            step = Step(seq, kind, "", "", t)
            self.steps[seq] = step
            self.timeline.steps.append(step)
            self.timeline.steps.sort(key=lambda s: s.seq)
        return step

    def _started(self, event: ev.RunStarted) -> None:
        tl = self.timeline
        tl.run_id, tl.workflow, tl.started = event.run_id, event.workflow, event.t
        tl.args = _call_text(event.args)

    def _scheduled(self, event: ev.ActivityScheduled) -> None:
        step = self._step(event.seq, "activity", event.t)
        step.kind, step.name, step.args, step.scheduled = "activity", event.name, _call_text(event.args), event.t
        if not step.attempts:
            step.attempts.append(Attempt(1, event.t))

    def _current_attempt(self, seq: int, t: float) -> Attempt:
        step = self._step(seq, "activity", t)
        if not step.attempts:
            step.attempts.append(Attempt(1, step.scheduled if step.scheduled is not None else t))
        return step.attempts[-1]

    def _attempt_failed(self, event: ev.AttemptFailed) -> None:
        attempt = self._current_attempt(event.seq, event.t)
        attempt.number = event.attempt
        attempt.ended, attempt.status, attempt.error = event.t, "failed", event.error
        attempt.retry_at = event.retry_at
        self.steps[event.seq].attempts.append(Attempt(event.attempt + 1, max(event.retry_at, event.t)))

    def _completed(self, event: ev.ActivityCompleted) -> None:
        attempt = self._current_attempt(event.seq, event.t)
        attempt.number, attempt.ended, attempt.status = event.attempts, event.t, "completed"
        step = self.steps[event.seq]
        step.ended, step.status, step.result = event.t, "completed", _value_text(event.result)

    def _failed(self, event: ev.ActivityFailed) -> None:
        attempt = self._current_attempt(event.seq, event.t)
        attempt.number, attempt.ended, attempt.status = event.attempts, event.t, "failed"
        attempt.error = event.error
        step = self.steps[event.seq]
        step.ended, step.status, step.error = event.t, "failed", event.error

    def _resumed(self, event: ev.RunResumed) -> None:
        replayed, in_flight = [], []
        for step in self.timeline.steps:
            if step.ended is not None or step.status == "recorded":
                replayed.append(step.seq)
                continue
            in_flight.append(step.seq)
            attempt = step.attempts[-1] if step.attempts else None
            if attempt is not None and attempt.started < event.t:
                attempt.resumed = event.t  # it was running when the process stopped
        self.timeline.recoveries.append(Recovery(event.t, event.pid, replayed, in_flight))

    def _run_completed(self, event: ev.RunCompleted) -> None:
        tl = self.timeline
        tl.status, tl.ended, tl.result = "completed", event.t, _value_text(event.result)

    def _run_failed(self, event: ev.RunFailed) -> None:
        tl = self.timeline
        tl.status, tl.ended, tl.error = "failed", event.t, event.error

    def _other(self, event: Any) -> None:
        """An event type without a rule here: shown by class name and fields."""
        note = describe(event)
        name = type(event).__name__
        if name in _TERMINAL_BY_NAME:
            self.timeline.status, self.timeline.ended = _TERMINAL_BY_NAME[name], note.t
        seq = getattr(event, "seq", None)
        if not isinstance(seq, int) or isinstance(seq, bool):
            self.timeline.notes.append(note)
            return
        step = self.steps.get(seq)
        if step is None:
            step = self._step(seq, _KIND_BY_NAME.get(name, name), note.t)
            step.name = next((note.fields[f] for f in ("name", "workflow", "kind") if f in note.fields), "")
            step.name = step.name.strip("'")
            step.status = "recorded"
        step.notes.append(note)
        if step.status == "recorded" and note.t is not None:
            step.ended = note.t
        if name in _CLOSING_BY_NAME:
            failed = getattr(event, "error", None) is not None
            step.ended, step.status = note.t, "failed" if failed else "completed"


_HANDLERS: dict[type[Any], Callable[[_Builder, Any], None]] = {
    ev.RunStarted: _Builder._started,
    ev.ActivityScheduled: _Builder._scheduled,
    ev.AttemptFailed: _Builder._attempt_failed,
    ev.ActivityCompleted: _Builder._completed,
    ev.ActivityFailed: _Builder._failed,
    ev.RunResumed: _Builder._resumed,
    ev.RunCompleted: _Builder._run_completed,
    ev.RunFailed: _Builder._run_failed,
}


def describe(event: Any) -> Note:
    """Any event as a :class:`Note`: class name, time, and every other field as text."""
    fields: dict[str, str] = {}
    t = None
    for name, value in _fields_of(event):
        if name == "t" and isinstance(value, int | float):
            t = float(value)
        elif name != "seq":
            fields[name] = _field_text(value)
    return Note(type(event).__name__, t, fields)


def _fields_of(event: Any) -> list[tuple[str, Any]]:
    if attrs.has(type(event)):
        return [(f.name, getattr(event, f.name, None)) for f in attrs.fields(type(event))]
    return list(getattr(event, "__dict__", {}).items())


def _field_text(value: Any) -> str:
    if isinstance(value, bytes):
        return _value_text(value)
    return str(value) if isinstance(value, ErrorInfo) else repr(value)


def _value_text(data: bytes) -> str:
    """A journaled value as ``repr`` text (never raises: a viewer must show what it can)."""
    try:
        return repr(loads(data))
    except Exception:
        return f"<{len(data)} bytes that do not decode>"


def _call_text(data: bytes) -> str:
    try:
        args, kwargs = loads(data)
        parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    except Exception:
        return f"(<{len(data)} bytes that do not decode>)"
    return f"({', '.join(parts)})"


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


# --- text helpers (shared by every renderer) -----------------------------------------


def shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration_text(seconds: float | None) -> str:
    """``"0.4ms"``, ``"512ms"``, ``"1.52s"``, ``"2m03s"``, ``"1h02m"``."""
    if seconds is None:
        return ""
    if seconds < 0.001:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    if seconds < 3600:
        minutes, secs = divmod(int(round(seconds)), 60)
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(int(round(seconds)) // 60, 60)
    return f"{hours}h{minutes:02d}m"


def local_time(t: float | None, *, precise: bool = False) -> str:
    """Wall-clock seconds as local time, ``2026-11-25 10:00:03`` (``.123`` when ``precise``)."""
    if t is None:
        return ""
    moment = datetime.datetime.fromtimestamp(t)
    return moment.isoformat(" ", timespec="milliseconds" if precise else "seconds")


def iso_time(t: float | None) -> str | None:
    """Wall-clock seconds as ISO 8601 local time with its UTC offset (the ``--json`` form)."""
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="microseconds")


def offset_text(timeline: Timeline, t: float | None) -> str:
    """``+1.52s`` from the run's start."""
    if t is None or timeline.started is None:
        return ""
    return "+" + (duration_text(t - timeline.started) or "0ms") if t >= timeline.started else "?"


def recovery_text(recovery: Recovery) -> str:
    """What a recovery did, in a sentence."""
    replayed = len(recovery.replayed)
    fed = (
        f"{replayed} finished step{'s' if replayed != 1 else ''} fed from the journal"
        if replayed
        else "nothing had finished, the workflow started over"
    )
    again = (
        f"; step{'s' if len(recovery.in_flight) != 1 else ''} "
        f"{', '.join(map(str, recovery.in_flight))} in flight, run again"
        if recovery.in_flight
        else ""
    )
    return f"process {recovery.pid} restarted and replayed here: {fed}{again}"


def attempt_text(attempt: Attempt) -> str:
    """``attempt 2 failed after 3ms: ConnectionError: refused; retry after 500ms``."""
    took = (
        f" after {duration_text(attempt.ended - attempt.started)}"
        if attempt.ended is not None and attempt.ended >= attempt.started
        else ""
    )
    if attempt.status == "running":
        return f"attempt {attempt.number} in flight when the journal ends"
    text = f"attempt {attempt.number} {attempt.status}{took}"
    if attempt.error is not None:
        text += f": {attempt.error}"
    if attempt.retry_at is not None and attempt.ended is not None:
        text += f"; retry after {duration_text(max(0.0, attempt.retry_at - attempt.ended))}"
    if attempt.resumed is not None:
        text += " (interrupted by a restart, ran again)"
    return text


# --- JSON ----------------------------------------------------------------------------


def _error_json(error: ErrorInfo | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def _note_json(note: Note) -> dict[str, Any]:
    return {"type": note.type, "t": iso_time(note.t), "fields": dict(note.fields)}


def summary_json(timeline: Timeline) -> dict[str, Any]:
    """One ``durable ls --json`` row."""
    return {
        "id": timeline.run_id,
        "workflow": timeline.workflow,
        "status": timeline.status,
        "started": iso_time(timeline.started),
        "last_event": iso_time(timeline.last_event),
        "steps": len(timeline.steps),
        "error": timeline.journal_error,
    }


def to_json(timeline: Timeline) -> dict[str, Any]:
    """The ``durable show --json`` document (keys documented in docs/cli.md)."""
    return {
        "version": JSON_VERSION,
        "id": timeline.run_id,
        "workflow": timeline.workflow,
        "args": timeline.args,
        "status": timeline.status,
        "started": iso_time(timeline.started),
        "ended": iso_time(timeline.ended),
        "last_event": iso_time(timeline.last_event),
        "duration": timeline.duration,
        "result": timeline.result,
        "error": _error_json(timeline.error),
        "journal_error": timeline.journal_error,
        "events": timeline.events,
        "steps": [
            {
                "seq": step.seq,
                "kind": step.kind,
                "name": step.name,
                "args": step.args,
                "status": step.status,
                "scheduled": iso_time(step.scheduled),
                "ended": iso_time(step.ended),
                "duration": step.duration,
                "result": step.result,
                "error": _error_json(step.error),
                "attempts": [
                    {
                        "attempt": a.number,
                        "status": a.status,
                        "started": iso_time(a.started),
                        "ended": iso_time(a.ended),
                        "error": _error_json(a.error),
                        "retry_at": iso_time(a.retry_at),
                        "resumed": iso_time(a.resumed),
                    }
                    for a in step.attempts
                ],
                "notes": [_note_json(n) for n in step.notes],
            }
            for step in timeline.steps
        ],
        "recoveries": [
            {"t": iso_time(r.t), "pid": r.pid, "replayed": r.replayed, "in_flight": r.in_flight}
            for r in timeline.recoveries
        ],
        "notes": [_note_json(n) for n in timeline.notes],
    }


# --- HTML ----------------------------------------------------------------------------

_LABEL_W = 340
_CHART_W = 880
_ROW_H = 30
_BAR_H = 16
_TOP = 56
_MIN_BAR = 3.0

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:24px;
background:#fafbfc}
h1{font-size:20px;margin:0 0 6px}h1 code{background:#eef1f5;padding:1px 6px;border-radius:4px}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;color:#fff;font-size:13px;
vertical-align:middle;margin-left:8px}
.completed{background:#2e9d5b}.failed{background:#d64545}.running{background:#3b7dd8}
.corrupt,.unreadable{background:#8a5a00}.cancelled,.continued{background:#6b7280}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:10px 0 14px}
dt{color:#5b6473}dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.damage{background:#fff1d6;border:1px solid #e0a030;padding:8px 12px;border-radius:6px;margin:8px 0}
.legend{display:flex;flex-wrap:wrap;gap:16px;margin:8px 0 4px;font-size:13px;color:#3b4252}
.legend svg{vertical-align:middle;margin-right:5px}
.chart{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:6px 0;overflow-x:auto}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:12px;fill:#1d2330}
svg .label{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
svg .seq{fill:#5b6473}svg .tick{fill:#6b7280;font-size:11px}svg .grid{stroke:#eef0f3}
svg .row:hover .rowbg{fill:#f3f6fb}
svg .ok{fill:#2e9d5b}svg .bad{fill:#d64545}svg .run{fill:url(#running)}svg .lost{fill:#c3c8d0}
svg .wait{fill:url(#hatch);stroke:#d9a23a;stroke-width:.8}svg .mark{fill:#6d4bd8}
svg .recovery line{stroke:#7b3fc4;stroke-width:2;stroke-dasharray:5 4}
svg .recovery text{fill:#7b3fc4;font-weight:600}
svg .end line{stroke:#1d2330;stroke-width:1.5}svg .end text{font-weight:600}
table{border-collapse:collapse;margin-top:18px;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #e6e9ee;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f1f3f6}td.mono{font-family:ui-monospace,Menlo,Consolas,monospace}
tr.attempt td{color:#5b6473;border-bottom:1px dotted #eef0f3}tr.recovery td{color:#7b3fc4}
"""

_DEFS = (
    '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff3d6"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#e0a030" stroke-width="2.5"/></pattern>'
    '<pattern id="running" width="8" height="8" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="8" height="8" fill="#3b7dd8"/>'
    '<line x1="0" y1="0" x2="0" y2="8" stroke="#7fb0ee" stroke-width="3"/></pattern></defs>'
)

_LEGEND = (
    ("ok", "attempt that returned"),
    ("bad", "failed attempt"),
    ("wait", "retry backoff"),
    ("lost", "interrupted by a crash"),
    ("run", "in flight at the journal's end"),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


class _Scale:
    """Wall-clock seconds to x pixels in the chart."""

    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.span = max(end - start, 1e-3)

    def x(self, t: float) -> float:
        return _LABEL_W + (t - self.start) / self.span * _CHART_W

    def ticks(self) -> list[float]:
        raw = self.span / 6
        power = 10 ** math.floor(math.log10(raw))
        step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
        return [i * step for i in range(int(self.span / step) + 1)]


def _rect(scale: _Scale, css: str, start: float, end: float, y: float, title: str, extra: str = "") -> str:
    x = scale.x(start)
    width = max(scale.x(end) - x, _MIN_BAR)
    return (
        f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{_BAR_H}" rx="2"{extra}>'
        f"<title>{_e(title)}</title></rect>"
    )


def _attempt_shapes(scale: _Scale, step: Step, attempt: Attempt, y: float, chart_end: float) -> list[str]:
    shapes = []
    start = attempt.started
    end = attempt.ended if attempt.ended is not None else chart_end
    data = f' data-attempt="{attempt.number}"'
    if attempt.resumed is not None and start < attempt.resumed <= end:
        shapes.append(
            _rect(scale, "lost", start, attempt.resumed, y,
                  f"step {step.seq}, attempt {attempt.number}: interrupted: the process stopped here "
                  f"and restarted at {local_time(attempt.resumed, precise=True)}")
        )  # fmt: skip
        start = attempt.resumed
    css = {"completed": "ok", "failed": "bad"}.get(attempt.status, "run")
    title = f"step {step.seq} {step.call}\n{attempt_text(attempt)}"
    shapes.append(_rect(scale, f"attempt {css}", start, end, y, title, data + f' data-status="{attempt.status}"'))
    if attempt.retry_at is not None and attempt.ended is not None and attempt.retry_at > attempt.ended:
        wait = f"step {step.seq}: backoff {duration_text(attempt.retry_at - attempt.ended)} before attempt {attempt.number + 1}"
        shapes.append(_rect(scale, "wait", attempt.ended, attempt.retry_at, y, wait, data))
    return shapes


def _step_row(scale: _Scale, step: Step, row: int, chart_end: float) -> str:
    top = _TOP + row * _ROW_H
    y = top + (_ROW_H - _BAR_H) / 2
    label = shorten(f"{step.kind} {step.call}" if step.kind != "activity" else step.call, 42)
    title = f"step {step.seq}: {step.kind} {step.call}\n{step.status}"
    if step.duration is not None:
        title += f" in {duration_text(step.duration)}"
    if step.result is not None:
        title += f"\nresult: {shorten(step.result, 200)}"
    if step.error is not None:
        title += f"\nerror: {step.error}"
    parts = [
        f'<g class="row step" data-seq="{step.seq}" data-status="{_e(step.status)}"><title>{_e(title)}</title>',
        f'<rect class="rowbg" x="0" y="{top}" width="{_LABEL_W + _CHART_W + 40}" height="{_ROW_H}" fill="transparent"/>',
        f'<text class="seq" x="10" y="{top + 19}">{step.seq}</text>',
        f'<text class="label" x="38" y="{top + 19}">{_e(label)}</text>',
    ]
    for attempt in step.attempts:
        parts += _attempt_shapes(scale, step, attempt, y, chart_end)
    if not step.attempts and step.scheduled is not None:
        end = step.ended if step.ended is not None else step.scheduled
        if end - step.scheduled > scale.span / 200:
            parts.append(_rect(scale, "ok", step.scheduled, end, y, title))
        else:
            x, mid = scale.x(step.scheduled), y + _BAR_H / 2
            parts.append(
                f'<polygon class="mark" points="{x:.1f},{y:.1f} {x + 7:.1f},{mid:.1f} {x:.1f},{y + _BAR_H:.1f} '
                f'{x - 7:.1f},{mid:.1f}"><title>{_e(title)}</title></polygon>'
            )
    if step.ended is not None and step.attempts:
        text = step.result if step.status == "completed" else step.error
        parts.append(
            f'<text class="tick" x="{scale.x(step.ended) + 6:.1f}" y="{top + 19}">'
            f"{_e(shorten(str(text), 28)) if text is not None else ''}</text>"
        )
    parts.append("</g>")
    return "".join(parts)


def _vertical(scale: _Scale, css: str, t: float, height: float, label: str, title: str, extra: str = "") -> str:
    x = scale.x(t)
    return (
        f'<g class="{css}"{extra}><title>{_e(title)}</title>'
        f'<line x1="{x:.1f}" y1="{_TOP - 14}" x2="{x:.1f}" y2="{height - 6}"/>'
        f'<text x="{x + 4:.1f}" y="{_TOP - 18}">{_e(label)}</text></g>'
    )


def _svg(timeline: Timeline) -> str:
    start = timeline.started if timeline.started is not None else (timeline.last_event or 0.0)
    end = max(
        [start, timeline.last_event or start]
        + [a.retry_at for s in timeline.steps for a in s.attempts if a.retry_at is not None]
    )
    scale = _Scale(start, end)
    rows = max(len(timeline.steps), 1)
    height = _TOP + rows * _ROW_H + 12
    width = _LABEL_W + _CHART_W + 90
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">', _DEFS]
    for tick in scale.ticks():
        x = scale.x(start + tick)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{_TOP - 4}" x2="{x:.1f}" y2="{height - 6}"/>'
            f'<text class="tick" x="{x:.1f}" y="{_TOP - 4}" text-anchor="middle">+{_e(duration_text(tick) or "0")}</text>'
        )
    parts.append(f'<text class="seq" x="10" y="{_TOP - 4}">step</text>')
    for row, step in enumerate(timeline.steps):
        parts.append(_step_row(scale, step, row, end))
    if not timeline.steps:
        parts.append(f'<text class="seq" x="38" y="{_TOP + 19}">no steps were journaled</text>')
    for recovery in timeline.recoveries:
        parts.append(
            _vertical(scale, "recovery", recovery.t, height, f"⟲ restart (pid {recovery.pid})",
                      f"{local_time(recovery.t, precise=True)}: {recovery_text(recovery)}",
                      f' data-pid="{recovery.pid}"')
        )  # fmt: skip
    if timeline.ended is not None:
        outcome = timeline.result if timeline.status == "completed" else timeline.error
        parts.append(
            _vertical(scale, f"end {timeline.status}", timeline.ended, height, timeline.status,
                      f"run {timeline.status} at {local_time(timeline.ended, precise=True)}: {outcome}")
        )  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _legend() -> str:
    items = []
    for css, text in _LEGEND:
        items.append(
            f'<span><svg width="22" height="12">{_DEFS}<rect class="{css}" width="22" height="12" rx="2"/></svg>'
            f"{_e(text)}</span>"
        )
    items.append(
        '<span><svg width="14" height="14" class="recovery"><line x1="7" y1="0" x2="7" y2="14"/></svg>'
        "process restarted and replayed the journal</span>"
    )
    return f'<div class="legend">{"".join(items)}</div>'


def _details(timeline: Timeline) -> str:
    rows = ['<table class="steps"><tr><th>at</th><th>step</th><th>kind</th><th>call</th><th>took</th><th>outcome</th></tr>']
    entries: list[tuple[float, int, str]] = []
    for step in timeline.steps:
        outcome = step.result if step.status == "completed" else (str(step.error) if step.error else step.status)
        lines = [
            f'<tr class="step" data-seq="{step.seq}"><td>{_e(offset_text(timeline, step.scheduled))}</td>'
            f"<td>{step.seq}</td><td>{_e(step.kind)}</td><td class=mono>{_e(shorten(step.call, 120))}</td>"
            f"<td>{_e(duration_text(step.duration))}</td><td class=mono>{_e(shorten(str(outcome), 120))}</td></tr>"
        ]
        for attempt in step.attempts:
            if len(step.attempts) > 1 or attempt.status == "failed" or attempt.resumed is not None:
                lines.append(
                    f'<tr class="attempt" data-seq="{step.seq}" data-attempt="{attempt.number}"><td></td><td></td>'
                    f"<td>attempt</td><td colspan=3>{_e(attempt_text(attempt))}</td></tr>"
                )
        for note in step.notes:
            lines.append(f'<tr class="attempt"><td></td><td></td><td>{_e(note.type)}</td><td colspan=3 class=mono>{_e(_note_fields(note))}</td></tr>')
        entries.append((step.scheduled or 0.0, 0, "".join(lines)))
    for recovery in timeline.recoveries:
        entries.append(
            (recovery.t, 1,
             f'<tr class="recovery" data-pid="{recovery.pid}"><td>{_e(offset_text(timeline, recovery.t))}</td><td>⟲</td>'
             f"<td>recovery</td><td colspan=3>{_e(recovery_text(recovery))}</td></tr>")
        )  # fmt: skip
    rows += [text for _, _, text in sorted(entries, key=lambda e: (e[0], e[1]))]
    rows.append("</table>")
    return "".join(rows)


def _note_fields(note: Note) -> str:
    return ", ".join(f"{k}={shorten(v, 80)}" for k, v in note.fields.items())


def to_html(timeline: Timeline) -> str:
    """One self-contained HTML page (inline CSS and SVG, nothing fetched) drawing the run."""
    facts = [("workflow", timeline.workflow or "?"), ("arguments", shorten(timeline.args, 300))]
    facts.append(("started", local_time(timeline.started, precise=True)))
    if timeline.duration is not None:
        facts.append(("took" if timeline.ended is not None else "so far", duration_text(timeline.duration)))
    if timeline.result is not None:
        facts.append(("result", shorten(timeline.result, 300)))
    if timeline.error is not None:
        facts.append(("error", str(timeline.error)))
    for note in timeline.notes:
        facts.append((note.type, _note_fields(note)))
    damage = (
        f'<div class="damage">The journal is damaged; this shows the records in front of the damage. '
        f"{_e(timeline.journal_error)}</div>"
        if timeline.journal_error
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>durable · run {_e(timeline.run_id)}</title><style>{_CSS}</style></head><body>"
        f'<h1>run <code>{_e(timeline.run_id)}</code><span class="badge {_e(timeline.status)}">'
        f"{_e(timeline.status)}</span></h1>"
        f"<dl>{''.join(f'<dt>{_e(k)}</dt><dd>{_e(v)}</dd>' for k, v in facts)}</dl>{damage}"
        f'{_legend()}<div class="chart">{_svg(timeline)}</div>{_details(timeline)}'
        "</body></html>\n"
    )
