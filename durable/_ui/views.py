"""The dashboard's pages, built as strings the way ``show --html`` builds its page.

Every text that came from a journal, a store or a request goes through ``_e``
(HTML-escaped, control characters and bidi overrides written as escapes) or
``_tag``'s attribute escaping: no payload is ever markup. The run page's
timeline is ``_timeline_html.fragment``, the very drawing of ``show --html``.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, urlencode

import attrs

from .. import _timeline as tl
from .._timeline_html import CSS as TIMELINE_CSS
from .._timeline_html import _e, _tag, fragment
from .data import STATES, ListQuery, StateCounts


@attrs.frozen
class Page:
    """What every page shows around its content: the store's name, the form secret."""

    store: str
    csrf: str
    refresh_ms: int = 2000


def layout(page: Page, title: str, body: str, *, timeline: bool = False) -> str:
    """A whole HTML page: the dashboard's style (and the timeline's), its script, ``body``."""
    style = _tag("style", TIMELINE_CSS) if timeline else ""
    head = (
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        + _tag("title", _e(f"durable · {title}"))
        + '<link rel="stylesheet" href="/static/ui.css">'
        + style
        + '<script src="/static/ui.js" defer></script>'
    )
    top = _tag(
        "header",
        _tag("a", "durable", href="/") + _tag("span", _e(page.store), class_="store"),
        class_="top",
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head><body>{top}<main>{body}</main></body></html>\n'
    )


def _href(path: str, **params: str | None) -> str:
    kept = {key: value for key, value in params.items() if value}
    return path + ("?" + urlencode(kept) if kept else "")


def _run_href(run_id: str) -> str:
    quoted = quote(run_id, safe="")
    if quoted in (".", ".."):  # a browser resolves them as a path: "/runs/.." is "/"
        quoted = quoted.replace(".", "%2E")
    return "/runs/" + quoted


# --- the run list --------------------------------------------------------------------


def list_page(page: Page, query: ListQuery, live: str) -> str:
    """The run list: the filters, then the part that refreshes itself (``live``)."""
    options = _tag("option", "any state", value="")
    for state in STATES:
        options += _tag("option", _e(state), value=state, selected="" if state == query.state else None)
    filters = _tag(
        "form",
        _tag("label", "run id contains" + _input("q", query.search, size=24))
        + _tag("label", "state" + _tag("select", options, name="state"))
        + _tag("label", "workflow" + _input("workflow", query.workflow, size=20))
        + _tag("button", "filter", type="submit"),
        method="get",
        action="/",
        class_="filters",
    )
    live_href = _href("/", **_params(query), part="live")
    box = _tag("div", live, id="live", data_live=live_href, data_every=page.refresh_ms)
    return layout(page, "runs", filters + box)


def _input(name: str, value: str | None, **attributes: object) -> str:
    return f"<input{_attributes(name=name, value=value or '', **attributes)}>"


def _attributes(**attributes: object) -> str:
    # _tag's escaping for an element without a closing tag.
    text = _tag("x", **attributes)
    return text[2 : text.index(">")]


def _params(query: ListQuery) -> dict[str, str | None]:
    return {"q": query.search, "state": query.state, "workflow": query.workflow, "before": query.before}


def list_live(query: ListQuery, counts: StateCounts, rows: Sequence[tl.Timeline], more: bool) -> str:
    """The counts per state, the page of runs and the paging links (``more``: an older
    page may hold runs)."""
    return _counts(query, counts) + _runs_table(rows, query) + _paging(query, rows, more)


def _counts(query: ListQuery, counts: StateCounts) -> str:
    shown = list(STATES) + sorted(set(counts.counts) - set(STATES))
    chips = [
        _tag(
            "a",
            _e(state) + _tag("span", str(counts.counts.get(state, 0)), class_="n"),
            href=_href("/", state=state, workflow=query.workflow, q=query.search),
            class_="on" if state == query.state else None,
            data_state=state,
        )
        for state in shown
    ]
    chips.insert(
        0, _tag("a", "all" + _tag("span", str(counts.total), class_="n"), href="/", data_state="all")
    )
    if counts.unread:
        chips.append(_tag("span", _e(f"({counts.unread} runs not counted yet)"), class_="dim"))
    return _tag("div", "".join(chips), class_="counts")


def _runs_table(rows: Sequence[tl.Timeline], query: ListQuery) -> str:
    if not rows:
        what = "matching runs" if query.state or query.workflow or query.search else "runs"
        return _tag("p", _e(f"no {what}"), class_="dim empty")
    head = "".join(
        _tag("th", name) for name in ("id", "workflow", "state", "", "started", "last event", "steps")
    )
    lines = [_tag("tr", head)]
    for t in rows:
        cells = [
            _tag("td", _tag("a", _e(t.run_id), href=_run_href(t.run_id)), class_="mono"),
            _tag("td", _e(t.workflow or "?"), class_="mono"),
            _tag("td", _tag("span", _e(t.status), class_=f"state {t.status}")),
            _tag("td", _e(tl.shorten(t.brief or t.journal_error or "", 90))),
            _tag("td", _e(tl.local_time(t.started))),
            _tag("td", _e(tl.local_time(t.last_event))),
            _tag("td", str(len(t.steps))),
        ]
        lines.append(_tag("tr", "".join(cells), class_="run", data_id=t.run_id, data_state=t.status))
    return _tag("table", "".join(lines), class_="runs")


def _paging(query: ListQuery, rows: Sequence[tl.Timeline], more: bool) -> str:
    links = []
    if query.before:
        links.append(_tag("a", "newest", href=_href("/", **{**_params(query), "before": None})))
    if more and rows:
        older = _href("/", **{**_params(query), "before": rows[-1].run_id})
        links.append(_tag("a", "older runs →", href=older, class_="older"))
    return _tag("div", "".join(links), class_="pages")


# --- a run ---------------------------------------------------------------------------


def run_page(page: Page, timeline: tl.Timeline, live: str, done: str | None) -> str:
    """A run: its live timeline, the actions it allows, its locals at a step."""
    notice = _tag("div", _e(done), class_="notice") if done else ""
    href = _run_href(timeline.run_id)
    box = _tag("div", live, id="live", data_live=href + "?part=live", data_every=page.refresh_ms)
    body = notice + box + _actions(page, timeline) + _locals_form(timeline)
    return layout(page, f"run {timeline.run_id}", body, timeline=True)


def run_live(timeline: tl.Timeline) -> str:
    """The part of a run's page that refreshes: ``show --html``'s drawing."""
    return fragment(timeline)


def _actions(page: Page, timeline: tl.Timeline) -> str:
    href = _run_href(timeline.run_id)
    forms = []
    if timeline.ended is None:
        fields = _tag("label", "signal name" + _input("name", "", required="", size=24))
        fields += _tag("label", "payload (JSON; empty: null)" + _tag("textarea", "", name="payload", rows=3))
        forms.append(_action_form(page, href, "signal", "send a signal", fields, "send…"))
        reason = _tag("label", "reason" + _input("reason", "", size=24))
        forms.append(_action_form(page, href, "cancel", "cancel the run", reason, "cancel…", danger=True))
    if timeline.status == "failed":
        reason = _tag("label", "reason" + _input("reason", "", size=24))
        forms.append(_action_form(page, href, "retry", "run it again", reason, "retry…"))
    return _tag("section", "".join(forms), class_="actions") if forms else ""


def _action_form(
    page: Page, href: str, verb: str, title: str, fields: str, button: str, *, danger: bool = False
) -> str:
    """A form that asks for confirmation first (it posts without ``confirm``)."""
    content = (
        _tag("h3", _e(title))
        + fields
        + _input("csrf", page.csrf, type="hidden")
        + _tag("button", _e(button), type="submit", class_="danger" if danger else None)
    )
    content += _input("action", verb, type="hidden")
    return _tag("form", content, method="post", action=href, class_="action", data_action=verb)


def _locals_form(timeline: tl.Timeline) -> str:
    field = _input("step", "", size=6, inputmode="numeric", placeholder="latest")
    content = _tag("h3", "workflow locals") + _tag("label", "at step" + field)
    content += _input("view", "locals", type="hidden") + _tag("button", "show", type="submit")
    href = _run_href(timeline.run_id)
    return _tag(
        "section", _tag("form", content, method="get", action=href, class_="action"), class_="actions"
    )


def confirm_page(page: Page, run_id: str, verb: str, question: str, values: dict[str, str]) -> str:
    """The confirmation step of an action: what will happen, yes or back."""
    hidden = "".join(_input(name, value, type="hidden") for name, value in values.items())
    hidden += _input("csrf", page.csrf, type="hidden") + _input("confirm", "yes", type="hidden")
    hidden += _input("action", verb, type="hidden")
    href = _run_href(run_id)
    form = _tag(
        "form",
        _tag("p", _e(question))
        + hidden
        + _tag("button", _e(f"yes, {verb}"), type="submit", class_="danger")
        + " "
        + _tag("a", "no, back to the run", href=href),
        method="post",
        action=href,
        class_="action confirm",
        data_action=verb,
    )
    return layout(page, f"{verb} run {run_id}?", _tag("h2", _e(f"{verb} run {run_id}?")) + form)


def locals_page(page: Page, run_id: str, step: int | None, lines: Sequence[str]) -> str:
    """The workflow's locals at a step, as ``durable show --locals`` prints them."""
    at = "the latest step" if step is None else f"step {step}"
    head = _tag("h2", _e(f"run {run_id}: the workflow's locals at {at}"))
    back = _tag("p", _tag("a", "back to the run", href=_run_href(run_id)))
    return layout(
        page, f"locals of {run_id}", head + _tag("pre", _e("\n".join(lines)), class_="locals") + back
    )


def problem_page(page: Page, title: str, why: str, back: str = "/") -> str:
    """An error the person can act on: what went wrong, and a way back."""
    body = _tag("h2", _e(title)) + _tag("div", _e(why), class_="problem") + _tag("a", "back", href=back)
    return layout(page, title, body)
