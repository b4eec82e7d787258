"""The dashboard as a Starlette application: its routes and what each does.

``GET /`` the run list (``?q=``, ``state=``, ``workflow=``, ``before=``);
``GET /runs/{id}`` a run; ``GET /runs/{id}?view=locals&step=N`` its
workflow's locals; ``POST /runs/{id}`` with ``action=signal|cancel|retry`` the
actions. A GET with ``part=live`` answers the part of the page that refreshes
itself. (A run id may hold ``/``: the id is the rest of the path, so nothing
may follow it.)

An action first answers a confirmation page (a POST without ``confirm=yes``
changes nothing); confirmed, it runs the command line's own function
(``_cli.send_signal``, ``_cli.request_cancel``, ``_cli_ops.retry_failed``) on
the server's store, then redirects to the run's page (POST, redirect, GET: a
reload does not send it twice). Every request first goes through
:class:`~durable._ui.security.Guard`.

The handlers run on the server's trio loop, where the stores live.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import attrs
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import _timeline as tl
from .._cli import CliUsageError, no_run_text, request_cancel, send_signal
from .._cli_ops import retry_failed
from .._core.errors import DurableError, UnknownRunError
from .._core.payloads import Payloads
from .._loader import LoadError
from .._store import Store
from . import views
from .assets import CSS, JS
from .data import STATES, ListQuery, StateCounter, locals_lines, read_run, run_events, run_page
from .security import HEADERS, Guard

#: Runs per page of the list.
PAGE_SIZE = 50

#: What a confirmed action says on the run's page (a fixed text: nothing from the request).
_DONE = {
    "signal": "signal sent",
    "cancel": "cancellation requested: the run gets durable.Cancelled at its current yield",
    "retry": "the run will run again: a worker takes it",
}

#: The errors an action or a page reports to the person (the command line's usage errors).
_EXPECTED = (LookupError, TypeError, ValueError, OSError)


@attrs.frozen
class Dashboard:
    """What the app serves: the store, how it is named, its codecs, the guard, ``--code``."""

    store: Store
    name: str
    payloads: Payloads | None
    guard: Guard
    code: tuple[str, ...] = ()
    refresh: float = 2.0
    #: The store the actions write to, opened with the payload codecs (``--codec``); None:
    #: ``store`` (no codec: the reading store and the writing one are the same).
    writer: Store | None = None
    counter: StateCounter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "counter", StateCounter(self.store, self.payloads))

    @property
    def actions_store(self) -> Store:
        return self.writer if self.writer is not None else self.store

    @property
    def page(self) -> views.Page:
        return views.Page(self.name, self.guard.csrf, int(self.refresh * 1000))


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def _problem(board: Dashboard, status: int, title: str, why: str, back: str = "/") -> HTMLResponse:
    return _html(views.problem_page(board.page, title, why, back), status)


def _no_run(board: Dashboard, run_id: str) -> HTMLResponse:
    """The 404 of a run that does not exist, worded as the command line words it."""
    return _problem(board, 404, "no such run", no_run_text(run_id, board.name, "the run list shows its runs"))


def _query(request: Request) -> ListQuery:
    params = request.query_params
    state = params.get("state") or None
    if state is not None and state not in tl.STATUSES:  # as `durable ls --status` refuses it
        raise CliUsageError(f"no state {state!r}: a run is one of {', '.join(tl.STATUSES)}")
    return ListQuery(
        state=state,
        workflow=params.get("workflow") or None,
        search=params.get("q") or None,
        before=params.get("before") or None,
    )


async def _list(board: Dashboard, request: Request) -> Response:
    try:
        query = _query(request)
        rows, more = await run_page(board.store, board.payloads, board.counter, query, PAGE_SIZE)
    except (CliUsageError, *_EXPECTED) as exc:
        return _problem(board, 400, "cannot list these runs", tl.first_line(exc))
    live = views.list_live(query, await board.counter.count(), rows, more)
    if request.query_params.get("part") == "live":
        return _html(live)
    return _html(views.list_page(board.page, query, live))


async def _run(board: Dashboard, request: Request) -> Response:
    if request.method == "POST":
        return await _act(board, request)
    if request.query_params.get("view") == "locals":
        return await _locals(board, request)
    run_id = request.path_params["run_id"]
    try:
        timeline = await read_run(board.store, run_id, board.payloads)
    except _EXPECTED as exc:
        return _problem(board, 400, "cannot show this run", tl.first_line(exc))
    if timeline is None:
        return _no_run(board, run_id)
    live = views.run_live(timeline)
    if request.query_params.get("part") == "live":
        # A finished run no longer changes: the page stops asking.
        final = {"X-Durable-Final": "1"} if timeline.ended is not None else {}
        return HTMLResponse(live, headers={**HEADERS, **final})
    done = _DONE.get(request.query_params.get("done", ""))
    return _html(views.run_page(board.page, timeline, live, done))


async def _locals(board: Dashboard, request: Request) -> Response:
    run_id = request.path_params["run_id"]
    back = views._run_href(run_id)
    text = request.query_params.get("step", "").strip()
    if text and not text.lstrip("-").isdigit():
        return _problem(board, 400, "not a step number", f"step {text!r}: give a step number", back)
    step = int(text) if text else None
    try:
        events = await run_events(board.store, run_id, board.payloads)
        if events is None:
            return _no_run(board, run_id)
        lines = locals_lines(events, step, board.code)
    except (LoadError, *_EXPECTED) as exc:
        return _problem(board, 400, "cannot rebuild the workflow's locals", tl.first_line(exc), back)
    except Exception as exc:  # NonDeterminismError: the code changed since; say so, with both sides
        return _problem(board, 409, "cannot rebuild the workflow's locals", str(exc), back)
    return _html(views.locals_page(board.page, run_id, step, lines))


# --- actions -------------------------------------------------------------------------


@attrs.frozen
class _Action:
    """An action's confirmation question and what it does, from the posted form."""

    question: Callable[[Dashboard, str, dict[str, str]], Awaitable[str]]
    run: Callable[[Store, str, dict[str, str]], Awaitable[None]]
    fields: Sequence[str]


async def _signal_question(board: Dashboard, run_id: str, form: dict[str, str]) -> str:
    name, payload = form["name"], _payload(form["payload"])
    question = f"send the signal {name!r} with the payload {json.dumps(payload)} to run {run_id!r}?"
    timeline = await read_run(board.store, run_id, board.payloads)
    awaited = tl.awaited_signals(timeline) if timeline is not None else []
    if awaited and name not in awaited:  # as `durable signal` warns, but before sending
        waits = " or ".join(repr(n) for n in awaited)
        question += f" The run waits for the signal {waits}: {name!r} is kept for a later wait of that name."
    return question


class _BadForm(ValueError):
    """What a form holds cannot be used (no signal name, a payload that is not JSON): the
    request is at fault (400), not the run's state (409)."""


async def _signal(store: Store, run_id: str, form: dict[str, str]) -> None:
    if not form["name"]:
        raise _BadForm("a signal needs a name")
    await send_signal(store, run_id, form["name"], _payload(form["payload"]))


def _payload(text: str) -> Any:
    """The signal's payload: JSON (empty: None)."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadForm(f"the payload is not JSON: {exc}") from None


async def _cancel_question(board: Dashboard, run_id: str, form: dict[str, str]) -> str:
    why = f" (reason: {form['reason']!r})" if form["reason"] else ""
    return f"cancel run {run_id!r}{why}? durable.Cancelled is thrown into it at its current yield."


async def _cancel(store: Store, run_id: str, form: dict[str, str]) -> None:
    await request_cancel(store, run_id, form["reason"])


async def _retry_question(board: Dashboard, run_id: str, form: dict[str, str]) -> str:
    return f"run the failed run {run_id!r} again with the code the workers run now?"


async def _retry(store: Store, run_id: str, form: dict[str, str]) -> None:
    await retry_failed(store, run_id, form["reason"])


_ACTIONS = {
    "signal": _Action(_signal_question, _signal, ("name", "payload")),
    "cancel": _Action(_cancel_question, _cancel, ("reason",)),
    "retry": _Action(_retry_question, _retry, ("reason",)),
}


#: The largest form accepted: a signal's payload is a journaled value, but a page's form.
_MAX_FORM = 4 << 20


async def _form(request: Request) -> dict[str, str] | int:
    """The posted form's fields (the last value of each), or the status that refuses it:
    413 for one over the limit, 415 for what is not one of the dashboard's forms. Parsed
    here (the stdlib's parser, bounded): Starlette's own form parsing needs
    python-multipart, which the ``ui`` extra does not pull in."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return 415
    body = b""
    async with aclosing(request.stream()) as chunks:  # closed when cut short too
        async for chunk in chunks:
            body += chunk
            if len(body) > _MAX_FORM:
                return 413
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        return 415


async def _act(board: Dashboard, request: Request) -> Response:
    run_id = request.path_params["run_id"]
    posted = await _form(request)
    if isinstance(posted, int):
        refused = "the dashboard takes its own forms only (url-encoded, 4 MiB)"
        return _problem(board, posted, "refused", refused)
    why = board.guard.cross_site(request, posted.get("csrf"))
    if why is not None:
        return _problem(board, 403, "refused: not sent by the dashboard's own page", why)
    verb = str(posted.get("action") or "")
    action = _ACTIONS.get(verb)
    if action is None:
        return _problem(board, 400, "no such action", f"{verb!r} is not an action")
    form = {name: str(posted.get(name) or "") for name in action.fields}
    back = views._run_href(run_id)
    try:
        if posted.get("confirm") != "yes":
            question = await action.question(board, run_id, form)
            return _html(views.confirm_page(board.page, run_id, verb, question, form))
        await action.run(board.actions_store, run_id, form)
    except UnknownRunError:
        return _no_run(board, run_id)
    except _BadForm as exc:
        return _problem(board, 400, f"cannot {verb} run {run_id!r}", str(exc), back)
    except (CliUsageError, DurableError, *_EXPECTED) as exc:
        return _problem(board, 409, f"cannot {verb} run {run_id!r}", tl.first_line(exc), back)
    board.counter.forget(run_id)
    return RedirectResponse(f"{back}?done={verb}", status_code=303, headers=HEADERS)


# --- the application -----------------------------------------------------------------


def _static(text: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return Response(text, media_type=media_type, headers=HEADERS)

    return serve


class _Guarded(BaseHTTPMiddleware):
    """Every request goes through the guard first (token, Host)."""

    def __init__(self, app: Any, guard: Guard) -> None:
        super().__init__(app)
        self.guard = guard

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        refused = self.guard.refusal(request)
        return refused if refused is not None else await call_next(request)


def create_app(board: Dashboard, *, close_store: bool = True) -> Starlette:
    """The dashboard's ASGI application over ``board``; the store is closed at shutdown."""

    def bound(handler: Callable[[Dashboard, Request], Awaitable[Response]]) -> Any:
        async def endpoint(request: Request) -> Response:
            return await handler(board, request)

        return endpoint

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        if close_store:
            await board.store.aclose()
            if board.writer is not None:
                await board.writer.aclose()

    routes = [
        Route("/", bound(_list)),
        Route("/static/ui.css", _static(CSS, "text/css")),
        Route("/static/ui.js", _static(JS, "text/javascript")),
        Route("/runs/{run_id:path}", bound(_run), methods=["GET", "POST"]),
    ]
    middleware = [Middleware(_Guarded, guard=board.guard)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


__all__ = ["STATES", "Dashboard", "create_app"]
