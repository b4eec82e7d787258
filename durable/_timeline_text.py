"""The ``durable show`` and ``durable ls`` text: a run's timeline, and the list of runs, for a terminal.

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

#: The colour of each run status, in the list of runs and a timeline's head.
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "running": "blue",
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


def runs_table(timelines: Sequence[tl.Timeline]) -> Table:
    """``durable ls``: one row per run (id, workflow, status, start, last event, steps)."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("id", "workflow", "status", "started", "last event"):
        table.add_column(name)
    table.add_column("steps", justify="right")
    for t in timelines:
        table.add_row(
            Text(tl.printable(t.run_id)),
            Text(tl.printable(t.workflow or "?")),
            Text(t.status, style=STATUS_STYLE.get(t.status, "")),
            Text(tl.local_time(t.started)),
            Text(tl.local_time(t.last_event)),
            Text(str(len(t.steps))),
        )
    return table


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
            tl.printable(f"damaged; shown up to the damage: {timeline.journal_error}"), style="yellow"
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
            detail = f"{indent}{mark}{tl.printable(tl.shorten(text, 160))}"
            lines.append(Text(detail, style="red" if status == "failed" else "dim"))
    return lines
