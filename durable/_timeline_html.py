"""The ``durable show --html`` page: one self-contained file with an SVG Gantt chart of a run.

Activities are bars from scheduled to completed, each attempt its own segment
(failed ones red, backoffs hatched), crash and recovery marks are vertical
lines where the run resumed (a restart, or another worker taking it over),
and every shape has a hover title with the details.
The model comes from :mod:`durable._timeline`.
"""

from __future__ import annotations

import html
import math

import attrs

from ._timeline import (
    Attempt,
    Step,
    Timeline,
    attempt_text,
    duration_text,
    local_time,
    note_text,
    printable,
    rows,
    shorten,
    shown_damage,
)
from ._timeline import facts as run_facts

# --- HTML ----------------------------------------------------------------------------
#
# One page, nothing fetched: inline CSS, an inline SVG chart, and <title> elements
# for the hover details. Elements carry classes and data-* attributes (data-seq,
# data-attempt, data-pid) so that tools and tests can find what the chart shows.

_LABEL_W = 330  # the step labels, left of the chart
_CHART_W = 860
_RIGHT_W = 170  # room for the last outcome label
_ROW_H = 30
_BAR_H = 16
_MIN_BAR = 6.0  # px: the shortest bar drawn (its title has the real times)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:24px;
 background:#fafbfc}
h1{font-size:20px;margin:0 0 6px}h1 code{background:#eef1f5;padding:1px 6px;border-radius:4px}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;color:#fff;font-size:13px;
 vertical-align:middle;margin-left:10px}
.badge.completed{background:#2e9d5b}.badge.failed{background:#d64545}.badge.running{background:#3b7dd8}
.badge.corrupt,.badge.unreadable{background:#a06800}.badge.cancelled,.badge.continued{background:#6b7280}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:10px 0 14px}
dt{color:#5b6473}dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.damage{background:#fff1d6;border:1px solid #e0a030;padding:8px 12px;border-radius:6px;margin:8px 0}
.legend{display:flex;flex-wrap:wrap;gap:18px;margin:8px 0 6px;font-size:13px;color:#3b4252}
.legend svg{vertical-align:middle;margin-right:6px}
.chart{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:4px 0}
.chart svg{display:block;max-width:100%;height:auto}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:12px;fill:#1d2330}
svg .label{font-family:ui-monospace,Menlo,Consolas,monospace}svg .dim{fill:#6b7280}
svg .small{font-size:11px}svg .grid{stroke:#eef0f3}svg .rowbg{fill:transparent}
svg .step:hover .rowbg{fill:#f1f5fb}
svg .ok{fill:#2e9d5b}svg .bad{fill:#d64545}svg .run{fill:url(#running)}
svg .lost{fill:#c9cdd4;stroke:#9aa1ab;stroke-dasharray:3 2}
svg .wait{fill:url(#hatch);stroke:#d9a23a;stroke-width:.8}svg .timer{fill:#8fa8c8}
svg .planned{fill:none;stroke:#8fa8c8;stroke-dasharray:4 3}svg .mark{fill:#6d4bd8}
svg .cancelled{fill:#9aa1ab}
svg .recovery line{stroke:#7b3fc4;stroke-width:2;stroke-dasharray:6 4}
svg .recovery text{fill:#7b3fc4;font-weight:600}
svg .end line{stroke:#1d2330;stroke-width:1.5}svg .end text{font-weight:600}
table{border-collapse:collapse;margin-top:18px;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #e6e9ee;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f1f3f6}td.mono{font-family:ui-monospace,Menlo,Consolas,monospace}
tr.detail td{color:#5b6473;border-bottom:1px dotted #e6e9ee}tr.detail.failed td{color:#b83232}
tr.recovery td{color:#7b3fc4}
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
    ("lost", "cut short (its process stopped)"),
    ("run", "in flight when the journal ends"),
    ("timer", "timer"),
    ("cancelled", "cancelled"),
)
_BAR_CLASS = {"completed": "ok", "failed": "bad", "running": "run", "cancelled": "cancelled"}


def _e(text: object) -> str:
    """Text for the page: HTML-escaped, and with control characters, bidi overrides and lone
    surrogates (which no UTF-8 file can hold) written as escapes, as on a terminal."""
    return html.escape(printable(str(text), keep="\n"), quote=True)


def _tag(name: str, content: str = "", /, **attributes: object) -> str:
    """``<name a="v">content</name>``; ``class_`` is ``class``, ``data_seq`` is ``data-seq``."""
    text = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{_e(value)}"'
        for key, value in attributes.items()
        if value is not None
    )
    return f"<{name}{text}>{content}</{name}>"


def _title(text: str) -> str:
    return _tag("title", _e(text))


def _num(value: float) -> str:
    return f"{value:.1f}"


class _Scale:
    """Wall-clock seconds to x pixels in the chart."""

    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.span = max(end - start, 1e-3)
        self.end = start + self.span

    def x(self, t: float) -> float:
        if not math.isfinite(t):  # a time that is no date: at the chart's end (or start, NaN)
            t = self.start + self.span if t > 0 else self.start
        return _LABEL_W + (t - self.start) / self.span * _CHART_W

    def ticks(self) -> list[float]:
        """Offsets from the start at a round step (1, 2 or 5 times a power of ten)."""
        raw = self.span / 6
        power = 10 ** math.floor(math.log10(raw))
        step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
        return [i * step for i in range(int(self.span / step + 1e-9) + 1)]


def _bar(scale: _Scale, css: str, start: float, end: float, y: float, title: str, **data: object) -> str:
    """A bar from ``start`` to ``end``; one that goes on past the chart's end (a deadline far
    ahead: a timeout nobody reached, a long timer) stops at the edge with an arrow, its
    true end in its title, rather than stretching the chart until every bar is a sliver."""
    x = scale.x(start)
    beyond = math.isfinite(end) and end > scale.end * (1 + 1e-12) and end - scale.end > scale.span * 1e-3
    if beyond:
        title += f"\n(goes on past the chart: until {local_time(end, precise=True)})"
        end = scale.end
    width = max(scale.x(end) - x, _MIN_BAR)
    rect = _tag(
        "rect",
        _title(title),
        class_=css,
        x=_num(x),
        y=_num(y),
        width=_num(width),
        height=_BAR_H,
        rx=2,
        **data,
    )
    if not beyond:
        return rect
    tip, mid = x + width, y + _BAR_H / 2
    points = f"{_num(tip)},{_num(y - 2)} {_num(tip + 8)},{_num(mid)} {_num(tip)},{_num(y + _BAR_H + 2)}"
    return rect + _tag("polygon", _title(title), class_=f"{css} open", points=points)


def _attempt_bars(scale: _Scale, step: Step, attempt: Attempt, y: float, chart_end: float) -> list[str]:
    start, end = attempt.started, attempt.ended if attempt.ended is not None else chart_end
    head = f"step {step.seq} {shorten(step.call, 80)}\n"
    bars = []
    if attempt.resumed is not None and start < attempt.resumed <= end:
        lost = (
            f"{head}attempt {attempt.number} was in flight when the process stopped; "
            "it ran again when the run resumed"
        )
        bars.append(_bar(scale, "lost", start, attempt.resumed, y, lost, data_attempt=attempt.number))
        start = attempt.resumed
    if attempt.retry_at is not None and attempt.ended is not None and attempt.retry_at > attempt.ended:
        backoff = duration_text(attempt.retry_at - attempt.ended)
        wait = f"{head}backoff of {backoff} before attempt {attempt.number + 1}"
        bars.append(
            _bar(scale, "wait", attempt.ended, attempt.retry_at, y, wait, data_backoff=attempt.number)
        )
    # Drawn last, on top: a short attempt widened to the minimum width stays visible.
    css = f"attempt {_BAR_CLASS.get(attempt.status, 'run')}"
    text = head + attempt_text(attempt)
    bars.append(
        _bar(scale, css, start, end, y, text, data_attempt=attempt.number, data_status=attempt.status)
    )
    return bars


def _other_bars(scale: _Scale, step: Step, y: float, chart_end: float, title: str) -> list[str]:
    """A step without attempts: a timer's bar, or a mark for an instant (a recorded value)."""
    if step.scheduled is None:
        return []
    if step.kind in ("timer", "signal"):  # a wait: drawn to its end, or to now
        bars = []
        if step.until is not None and step.status == "running":
            bars.append(_bar(scale, "planned", step.scheduled, step.until, y, title + "\n(planned)"))
        end = step.ended if step.ended is not None else chart_end
        bars.append(
            _bar(scale, "timer" if step.status != "cancelled" else "cancelled", step.scheduled, end, y, title)
        )
        return bars
    end = step.ended if step.ended is not None else step.scheduled
    if end - step.scheduled > scale.span / 200:
        return [_bar(scale, _BAR_CLASS.get(step.status, "cancelled"), step.scheduled, end, y, title)]
    x, mid = scale.x(step.scheduled), y + _BAR_H / 2
    corners = [(x, y), (x + 7, mid), (x, y + _BAR_H), (x - 7, mid)]
    points = " ".join(f"{_num(cx)},{_num(cy)}" for cx, cy in corners)
    return [_tag("polygon", _title(title), class_="mark", points=points)]


def _step_row(scale: _Scale, step: Step, top: float, chart_end: float) -> str:
    y, base = top + (_ROW_H - _BAR_H) / 2, top + 19
    label = step.call if step.kind == "activity" else f"{step.kind} {step.call}"
    title = f"step {step.seq}: {step.kind} {shorten(step.call, 200)}\n{step.status}"
    if step.duration is not None:
        title += f" in {duration_text(step.duration)}"
    if step.outcome and step.status not in ("running", "recorded"):
        title += f"\n{shorten(step.outcome, 300)}"
    parts = [
        _title(title),
        _tag("rect", class_="rowbg", x=0, y=top, width=_LABEL_W + _CHART_W + _RIGHT_W, height=_ROW_H),
        _tag("text", str(step.seq), class_="dim", x=10, y=base),
        _tag("text", _e(shorten(label, 40)), class_="label", x=38, y=base),
    ]
    for attempt in step.attempts:
        parts += _attempt_bars(scale, step, attempt, y, chart_end)
    if not step.attempts:
        parts += _other_bars(scale, step, y, chart_end, title)
    if step.ended is not None and step.status not in ("recorded",):
        outcome = shorten(step.outcome, 26)
        parts.append(
            _tag("text", _e(outcome), class_="dim small", x=_num(scale.x(step.ended) + 8), y=base - 1)
        )
    return _tag("g", "".join(parts), class_="step", data_seq=step.seq, data_status=step.status)


#: How far past what happened the chart reaches to show a deadline (a backoff, a timer),
#: as a share of what happened: a deadline further away is drawn as an arrow at the edge.
_DEADLINE_ROOM = 0.25


def _chart_span(timeline: Timeline) -> tuple[float, float]:
    """The chart's first and last time: what happened (to the run's end, or to when the
    tools looked at an unfinished run), and the deadlines close after it. Times that are
    not finite (a damaged journal) are left out, and drawn at an edge."""
    start = next(
        (t for t in (timeline.started, timeline.last_event) if t is not None and math.isfinite(t)), 0.0
    )
    seen = [start, timeline.last_event or start, timeline.ended or start]
    if timeline.ended is None and timeline.now is not None:
        seen.append(timeline.now)
    end = max(t for t in seen if math.isfinite(t))
    room = end + max(end - start, 1e-3) * _DEADLINE_ROOM
    deadlines = [a.retry_at for step in timeline.steps for a in step.attempts if a.retry_at is not None]
    deadlines += [step.until for step in timeline.steps if step.until is not None]
    end = max([end, *(t for t in deadlines if math.isfinite(t) and t <= room)])
    if timeline.ended is None:  # room to show what was still in flight
        end += max((end - start) * 0.06, 1e-3)
    return start, end


@attrs.frozen
class _Mark:
    """A vertical line across the chart: a recovery, or the run's end."""

    t: float
    css: str
    label: str
    title: str
    pid: int | None = None


def _levels(scale: _Scale, marks: list[_Mark]) -> list[int]:
    """A label row for each mark, so that labels of nearby marks do not overlap."""
    ends: list[float] = []  # per row: where its last label ends
    chosen = []
    for mark in marks:
        x = scale.x(mark.t)
        row = next((i for i, end in enumerate(ends) if end < x), len(ends))
        if row == len(ends):
            ends.append(0.0)
        ends[row] = x + 12 + 7 * len(mark.label)
        chosen.append(row)
    return chosen


def _svg(timeline: Timeline) -> str:
    start, end = _chart_span(timeline)
    scale = _Scale(start, end)
    marks = [
        _Mark(
            r.t, "recovery", f"⟲ resumed (pid {r.pid})", f"{local_time(r.t, precise=True)}: {r.text()}", r.pid
        )
        for r in timeline.recoveries
    ]
    marks += [  # each retry: where a failure was superseded and the run went on
        _Mark(note.t, "recovery retry", "↻ retried", f"{local_time(note.t, precise=True)}: {note_text(note)}")
        for note in timeline.notes
        if note.type == "RunRetried" and note.t is not None
    ]
    if timeline.ended is not None:
        when = local_time(timeline.ended, precise=True)
        title = f"run {timeline.status} at {when}: {shorten(timeline.outcome, 300)}"
        marks.append(_Mark(timeline.ended, f"end {timeline.status}", timeline.status, title))
    marks.sort(key=lambda m: m.t)
    levels = _levels(scale, marks)
    top = 30 + 16 * max(levels, default=-1) + 16  # the first row of bars
    bottom = top + max(len(timeline.steps), 1) * _ROW_H + 4
    parts = []
    for tick in scale.ticks():
        tx = _num(scale.x(start + tick))
        parts.append(_tag("line", class_="grid", x1=tx, y1=top - 2, x2=tx, y2=bottom))
        label = "+" + (duration_text(tick) if tick else "0")
        parts.append(_tag("text", _e(label), class_="dim small", x=tx, y=top - 4, text_anchor="middle"))
    parts.append(_tag("text", "step", class_="dim small", x=10, y=top - 4))
    for row, step in enumerate(timeline.steps):
        parts.append(_step_row(scale, step, top + row * _ROW_H, end))
    if not timeline.steps:
        parts.append(_tag("text", "no steps were journaled", class_="dim", x=38, y=top + 19))
    for mark, level in zip(marks, levels, strict=True):
        x, label_y = scale.x(mark.t), top - 20 - 16 * level
        line = _tag("line", x1=_num(x), y1=label_y + 4, x2=_num(x), y2=bottom)
        text = _tag("text", _e(mark.label), x=_num(x + 4), y=label_y)
        parts.append(_tag("g", _title(mark.title) + line + text, class_=mark.css, data_pid=mark.pid))
    width, height = _LABEL_W + _CHART_W + _RIGHT_W, bottom + 8
    return _tag(
        "svg",
        "".join(parts),
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {width} {height}",
        width=width,
        role="img",
        aria_label=f"timeline of run {timeline.run_id}",
    )


def _legend() -> str:
    """What the colours mean; its swatches carry the class ``key`` besides the chart's classes."""
    items = [
        _tag(
            "span",
            _tag("svg", _tag("rect", class_=f"key {css}", width=22, height=12, rx=2), width=22, height=12)
            + _e(text),
        )
        for css, text in _LEGEND
    ]
    line = _tag("line", x1=7, y1=0, x2=7, y2=14)
    items.append(
        _tag(
            "span",
            _tag("svg", _tag("g", line, class_="key recovery"), width=14, height=14)
            + "run resumed, journal replayed",
        )
    )
    return _tag("div", "".join(items), class_="legend")


def _table(timeline: Timeline) -> str:
    head = "".join(_tag("th", name) for name in ("at", "step", "kind", "call", "took", "outcome"))
    lines = [_tag("tr", head)]
    for row in rows(timeline):
        cells = [row.at, row.step, row.what, shorten(row.text, 140), row.took, shorten(row.outcome, 140)]
        content = "".join(
            _tag("td", _e(c), class_="mono" if i in (3, 5) else None) for i, c in enumerate(cells)
        )
        data = {"data_seq": row.seq} if row.kind == "step" else {}
        lines.append(_tag("tr", content, class_=f"{row.kind} {row.status}", **data))
        for status, text in row.details:
            detail = _tag("td", "", colspan=2) + _tag("td", "") + _tag("td", _e(text), colspan=3)
            lines.append(_tag("tr", detail, class_=f"detail {status}", data_seq=row.seq))
    return _tag("table", "".join(lines), class_="steps")


#: The page's style sheet, for pages that embed the timeline (the dashboard's run page).
CSS = _CSS


def fragment(timeline: Timeline) -> str:
    """The run drawn as HTML to put inside a page's ``<body>``: the patterns its SVGs fill
    with, the heading, the facts, the legend, the chart and the table (:func:`to_html`'s
    body; the dashboard redraws it as the run goes on). Every text in it is escaped."""
    facts = [("workflow", timeline.workflow or "?")]
    facts += [(name, shorten(text, 300)) for name, text in run_facts(timeline)]
    facts.append(("recoveries", str(len(timeline.recoveries))))
    damage = ""
    if timeline.journal_error:
        why = "The journal could not be read to its end; this shows what is in front of the damage."
        damage = _tag("div", _e(f"{why} {shown_damage(timeline.journal_error)}"), class_="damage")
    badge = _tag("span", _e(timeline.status), class_=f"badge {timeline.status}")
    # The patterns every SVG of the page fills with, defined once.
    defs = f'<svg width="0" height="0" style="position:absolute" aria-hidden="true">{_DEFS}</svg>'
    return (
        defs
        + _tag("h1", f"run {_tag('code', _e(timeline.run_id))}{badge}")
        + _tag("dl", "".join(_tag("dt", _e(k)) + _tag("dd", _e(v)) for k, v in facts))
        + damage
        + _legend()
        + _tag("div", _svg(timeline), class_="chart")
        + _table(timeline)
    )


def to_html(timeline: Timeline) -> str:
    """One self-contained HTML page (inline CSS and SVG; nothing fetched) drawing the run."""
    title = _tag("title", _e(f"durable · run {timeline.run_id}"))
    head = f'<meta charset="utf-8">{title}<style>{_CSS}</style>'
    return f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head><body>{fragment(timeline)}</body></html>\n'
