"""What ``durable show``, ``ls`` and ``replay`` draw on a terminal: a timeline, runs, a replay report.

The text twin of :mod:`durable._timeline_html`: both draw the model of
:mod:`durable._timeline` (its :func:`~durable._timeline.facts` and
:func:`~durable._timeline.rows`), so the terminal, the page and ``--json`` say
the same things. What is drawn here is rich ``Text`` and ``Table`` values; the
command line prints them. Every string that came from a journal goes through
:func:`~durable._timeline.printable` first, and nothing here is markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from . import _timeline as tl
from ._replayer import ReplayCheck

#: The colour of each run status, in the list of runs and a timeline's head.
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "queued": "yellow",
    "running": "blue",
    "waiting": "cyan",
    "stalled": "bold magenta",
    "corrupt": "bold yellow",
    "unreadable": "bold yellow",
}

_ROW_STYLE = {
    "completed": "green",
    "failed": "red",
    "running": "blue",
    "cancelled": "dim",
    "recovery": "magenta",
    "note": "dim",
}

_MARKS = {"failed": "✗ ", "completed": "✓ ", "running": "… "}


def runs_text(timelines: Sequence[tl.Timeline]) -> list[Table | Text]:
    """``durable ls``: one row per run (id, workflow, status, start, last event, steps, and
    what an unfinished run is doing now in a few words), then why each damaged journal
    could not be read to its end."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("id", "workflow", "status", "started", "last event"):
        table.add_column(name)
    table.add_column("steps", justify="right")
    briefs = any(t.brief for t in timelines)  # a column only when an unfinished run has one
    if briefs:
        table.add_column("now")
    for t in timelines:
        cells = [
            Text(tl.printable(t.run_id)),
            Text(tl.printable(t.workflow or "?")),
            Text(t.status, style=STATUS_STYLE.get(t.status, "")),
            Text(tl.local_time(t.started)),
            Text(tl.local_time(t.last_event)),
            Text(str(len(t.steps))),
        ]
        if briefs:
            cells.append(Text(tl.printable(tl.shorten(t.brief or "", 60)), style="dim"))
        table.add_row(*cells)
    damaged = [t for t in timelines if t.journal_error]
    return [table, *(Text(tl.printable(f"{t.run_id}: {t.journal_error}"), style="yellow") for t in damaged)]


def timeline_text(timeline: tl.Timeline) -> list[Text]:
    """``durable show``: the run's head and facts, a blank line, then its rows."""
    head = Text()
    head.append("run ", style="bold")
    head.append(tl.printable(timeline.run_id), style="bold cyan")
    head.append(f" · {tl.printable(timeline.workflow or '?')} · ")
    head.append(timeline.status, style=STATUS_STYLE.get(timeline.status, "bold"))
    lines = [head]
    for name, value in tl.facts(timeline):
        style = STATUS_STYLE.get(timeline.status, "") if name in ("result", "error") else ""
        line = Text(f"  {name:<10} ", style="dim")
        line.append(tl.printable(tl.shorten(value, 200)), style=style)
        lines.append(line)
    if timeline.journal_error is not None:
        line = Text(f"  {'journal':<10} ", style="dim")
        line.append(
            tl.printable(f"damaged; shown up to the damage: {tl.shown_damage(timeline.journal_error)}"),
            style="yellow",
        )
        lines.append(line)
    lines.append(Text())
    return lines + _row_lines(timeline)


def _row_lines(timeline: tl.Timeline) -> list[Text]:
    """The rows of the timeline in aligned columns; details indented under the call."""
    rows = tl.rows(timeline)
    if not rows:
        return [Text("  no steps were journaled", style="dim")]
    at_w = max([2] + [len(r.at) for r in rows])
    step_w = max([4] + [len(r.step) for r in rows])
    what_w = max([4] + [len(r.what) for r in rows])
    took_w = max([4] + [len(r.took) for r in rows])
    indent = " " * (2 + at_w + 2 + step_w + 2 + what_w + 2 + took_w + 2)
    header = f"  {'at':>{at_w}}  {'step':>{step_w}}  {'kind':<{what_w}}  {'took':>{took_w}}  call → outcome"
    lines = [Text(header, style="bold")]
    for row in rows:
        style = _ROW_STYLE.get(row.status, "") if row.kind != "step" else ""
        columns = f"  {row.at:>{at_w}}  {row.step:>{step_w}}  {row.what:<{what_w}}  {row.took:>{took_w}}  "
        line = Text(columns, style=style)
        line.append(
            tl.printable(tl.shorten(row.text, 100 if row.kind == "step" else 200)),
            style="bold" if row.kind == "outcome" else style,
        )
        if row.outcome:
            line.append(" → ")
            line.append(tl.printable(tl.shorten(row.outcome, 100)), style=_ROW_STYLE.get(row.status, ""))
        lines.append(line)
        for status, text in row.details:
            mark = _MARKS.get(status, "· ")
            detail = f"{indent}{mark}{tl.printable(tl.shorten(text, 240))}"
            lines.append(Text(detail, style="red" if status == "failed" else "dim"))
    return lines


_VERDICT_STYLE = {
    "ok": "green",
    "diverged": "bold red",
    "undefined": "bold red",
    "error": "bold red",
    "skipped": "dim",
}

_ADVICE = (
    "Replay needs the same commands in the same order. Runs in flight when you deploy this code "
    "would stop at the step shown; guard the change with `if (yield durable.patched(...))`, "
    "or keep the old code path until those runs have finished."
)


def replay_report(checks: Sequence[ReplayCheck], target: str, store: str) -> list[Text]:
    """``durable replay``: each check replayed (skipped ones in one line), a count, and advice."""
    shown = [c for c in checks if c.verdict != "skipped"]
    lines = []
    for c in shown:
        line = Text()
        line.append(tl.printable(c.run_id), style="bold")
        line.append(f" ({tl.printable(c.workflow)}): ")
        line.append(tl.printable(c.summary), style=_VERDICT_STYLE[c.verdict])
        lines.append(line)
        style = "dim" if c.verdict == "ok" else ""
        lines += [Text("    " + tl.printable(detail), style=style) for detail in c.details]
    skipped = [c for c in checks if c.verdict == "skipped"]
    if skipped:
        names = ", ".join(sorted({c.workflow for c in skipped}))
        text = f"skipped {tl.plural(len(skipped), 'run')} of workflows {target} does not define: {names}"
        lines.append(Text(tl.printable(f"{text} (--all makes them fail the check)"), style="dim"))
    if not shown:
        return [*lines, Text(tl.printable(f"no runs to replay in {store}"), style="yellow")]
    counts = {v: sum(1 for c in shown if c.verdict == v) for v in ("ok", "diverged", "undefined", "error")}
    parts = [f"{counts['ok']} replayed OK"] + [f"{n} {v}" for v, n in counts.items() if v != "ok" and n]
    summary = f"{tl.plural(len(shown), 'run')}: {', '.join(parts)}"
    lines.append(Text(summary, style="bold green" if len(shown) == counts["ok"] else "bold red"))
    return [*lines, Text(_ADVICE)] if counts["diverged"] else lines
