"""The dashboard end to end: headless Chromium against a real Hypercorn server, while a real
``durable worker`` process runs the workflows. The list shows runs and their states, a
live run's page follows its steps, a signal sent from the page wakes a run, a cancel
needs its confirmation, and a request without the token is refused. Every test runs on
a FileStore and on PostgreSQL (a fresh schema, dropped at the end; ``pgutil``).

With ``DURABLE_UI_SCREENSHOT=1`` it also takes the screenshot of docs/howto/dashboard.md
(docs/_static/dashboard.png), from the FileStore's run; CI leaves it as committed.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pgutil
import pytest
import trio
from browser import browser  # noqa: F401 - the fixture

import durable
from durable._core import events as ev
from durable._store_file import FileStore
from durable._store_postgres import PostgresStore
from durable._ui.app import Dashboard
from durable._ui.security import Guard
from durable._ui.server import serve

TOKEN = "browser-test-token-0123456789"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "_static" / "dashboard.png"

FLOWS = textwrap.dedent(
    """
    import time
    import durable

    @durable.activity(name="uiflows.pack")
    def pack(item: str) -> str:
        time.sleep(0.35)  # slow enough for the page to see each step land
        return f"{item} packed"

    @durable.workflow(name="uiflows.order")
    def order(items: list):
        packed = []
        for item in items:
            packed.append((yield pack(item)))
        decision = yield durable.wait_signal("approve")
        return {"packed": packed, "decision": decision}

    @durable.workflow(name="uiflows.quick")
    def quick(item: str):
        return (yield pack(item))
    """
)


@attrs.frozen
class Where:
    """The store the worker, the dashboard and the test's helpers share: ``kind`` is
    ``"file"`` (``name`` a directory) or ``"postgres"`` (``name`` a DSN with ``?schema=``)."""

    kind: str
    name: str

    def open(self) -> durable.Store:
        """A store object of its own over it (the caller closes it)."""
        return FileStore(Path(self.name)) if self.kind == "file" else PostgresStore(self.name)


class Server:
    """The dashboard on Hypercorn, on trio, in a thread of this process, on a free port."""

    def __init__(self, where: Where) -> None:
        guard = Guard(TOKEN, None)
        self.board = Dashboard(where.open(), "the test store", None, guard, refresh=0.25)
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(
                    functools.partial(serve, self.board, "127.0.0.1", 0, shutdown=self._stop.wait)
                )
                self.url = bound[0]
                self._ready.set()
        finally:
            await self.board.store.aclose()  # the app's shutdown closed it already (idempotent)

    def __enter__(self) -> Server:
        self._thread.start()
        assert self._ready.wait(20), "the dashboard did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(20)


@attrs.frozen
class Site:
    server: Server
    where: Where


@pytest.fixture(scope="module", params=["file", pytest.param("postgres", marks=pytest.mark.postgres)])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A store (a FileStore, or a fresh PostgreSQL schema), a worker process serving it,
    and the dashboard over it."""
    here = tmp_path_factory.mktemp(f"ui_browser_{request.param}")
    (here / "uiflows.py").write_text(FLOWS)
    schema = None
    if request.param == "file":
        store = here / "store"
        store.mkdir(mode=0o700)
        where = Where("file", str(store))
    else:
        pgutil.require()  # skipped without PostgreSQL; a failure in CI
        schema = pgutil.fresh_schema()
        separator = "&" if "?" in pgutil.dsn() else "?"
        where = Where("postgres", f"{pgutil.dsn()}{separator}schema={schema}")
    worker_cmd = [str(Path(sys.executable).parent / "durable"), "worker", "uiflows.py", "--store", where.name]
    try:
        with (here / "worker.log").open("wb") as log:
            worker = subprocess.Popen([*worker_cmd, "--poll", "50ms"], cwd=here, stdout=log, stderr=log)
            try:
                with Server(where) as server:
                    yield Site(server, where)
            finally:
                worker.terminate()
                try:
                    worker.wait(20)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait(20)
    finally:
        if schema is not None:
            pgutil.drop_schema(schema)


@durable.workflow(name="uiflows.order")
def order_stub(items: list[str]):  # type: ignore[no-untyped-def]
    """The name the worker knows: a client needs no more (the worker runs uiflows.py's code)."""
    yield durable.sleep(0)


@durable.workflow(name="uiflows.quick")
def quick_stub(item: str):  # type: ignore[no-untyped-def]
    yield durable.sleep(0)


def on_store(where: Where, use: Callable[[durable.Store], Awaitable[Any]]) -> Any:
    """What ``use`` returns on a store object of its own over ``where``, closed after."""

    async def go() -> Any:
        store = where.open()
        try:
            return await use(store)
        finally:
            await store.aclose()

    return trio.run(go)


def start(where: Where, workflow: Any, *args: Any, id: str) -> None:
    """Hand a run to the worker, as an application does (durable.Client)."""
    on_store(where, lambda store: durable.Client(store).start(workflow, *args, id=id))


def last_event(where: Where, run_id: str) -> Any:
    events = on_store(where, lambda store: store.read(run_id)) or []
    return events[-1] if events else None


def wait_until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {check}")


def open_page(browser: Any, server: Server, path: str) -> Any:  # noqa: F811 - the fixture
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    separator = "&" if "?" in path else "?"
    response = page.goto(f"{server.url}{path}{separator}token={TOKEN}")
    assert response is not None and response.ok, response
    return page


def test_a_request_without_the_token_is_refused(browser: Any, site: Site) -> None:  # noqa: F811
    server = site.server
    context = browser.new_context()
    response = context.new_page().goto(server.url + "/")
    assert response is not None and response.status == 401
    assert "access token" in response.text()
    context.close()


def test_the_list_shows_runs_and_their_states(browser: Any, site: Site) -> None:  # noqa: F811
    server, where = site.server, site.where
    start(where, quick_stub, "book", id="quick-1")
    start(where, order_stub, ["pen"], id="list-order")
    wait_until(lambda: isinstance(last_event(where, "quick-1"), ev.RunCompleted))
    page = open_page(browser, server, "/")
    row = page.locator('tr.run[data-id="quick-1"]')
    assert row.get_attribute("data-state") == "completed"
    assert "completed" in row.inner_text()
    # The list refreshes itself: the order run reaches its signal wait without a reload.
    page.wait_for_selector('tr.run[data-id="list-order"][data-state="waiting"]', timeout=10_000)
    assert int(page.locator('.counts a[data-state="completed"] .n').inner_text()) >= 1
    page.close()


def test_a_live_run_page_follows_its_steps_and_a_signal_from_it_wakes_the_run(
    browser: Any,  # noqa: F811
    site: Site,
) -> None:
    server, where = site.server, site.where
    start(where, order_stub, ["pen", "ink", "paper", "stamp"], id="order-1")
    wait_until(lambda: last_event(where, "order-1") is not None)
    page = open_page(browser, server, "/runs/order-1")
    steps_at_first = page.locator("#live g.step").count()
    page.wait_for_selector("#live .badge.waiting", timeout=15_000)
    assert page.locator("#live g.step").count() == 5 > steps_at_first  # 4 packs and the wait
    assert "approve" in page.locator("#live dl").inner_text()  # what it waits for
    page.fill('form[data-action="signal"] input[name="name"]', "approve")
    page.fill('form[data-action="signal"] textarea[name="payload"]', '{"by": "carol"}')
    page.click('form[data-action="signal"] button')
    page.wait_for_selector("form.confirm")
    assert "send the signal 'approve'" in page.inner_text("form.confirm")
    page.click("form.confirm button")
    page.wait_for_selector(".notice")
    page.wait_for_selector("#live .badge.completed", timeout=10_000)
    assert "carol" in page.locator("#live dl").inner_text()
    end = last_event(where, "order-1")
    assert isinstance(end, ev.RunCompleted)
    page.close()


def test_a_cancel_needs_its_confirmation(browser: Any, site: Site) -> None:  # noqa: F811
    server, where = site.server, site.where
    start(where, order_stub, [], id="order-2")
    wait_until(lambda: isinstance(last_event(where, "order-2"), ev.SignalAwaited))
    page = open_page(browser, server, "/runs/order-2")
    page.click('form[data-action="cancel"] button')
    page.wait_for_selector("form.confirm")
    time.sleep(0.3)  # a worker's poll: had anything been sent, it would be journaled by now
    assert isinstance(last_event(where, "order-2"), ev.SignalAwaited)
    assert on_store(where, lambda opened: opened.messages("order-2")) == []
    page.click("text=no, back to the run")
    page.wait_for_selector("#live .badge.waiting")
    page.click('form[data-action="cancel"] button')
    page.click("form.confirm button")
    page.wait_for_selector("#live .badge.cancelled", timeout=10_000)
    assert isinstance(last_event(where, "order-2"), ev.RunCancelled)
    page.close()
    if os.environ.get("DURABLE_UI_SCREENSHOT") == "1" and where.kind == "file":  # for the docs; CI keeps it
        shot = browser.new_page(viewport={"width": 1280, "height": 400})
        shot.goto(f"{server.url}/?token={TOKEN}")
        shot.screenshot(path=str(SCREENSHOT))
        shot.close()
