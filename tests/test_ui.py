"""The dashboard (``durable ui``) through Starlette's test client, on a FileStore and PostgreSQL:
the list, a run's page, the actions (confirmed, the CLI's own effect), and its security."""

from __future__ import annotations

import contextlib
import html
import re
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pgutil
import pytest
import trio
from click.testing import CliRunner

with warnings.catch_warnings():
    # Starlette 1.x would have its test client on `httpx2`; with httpx (the test extra) it
    # works the same and warns, and the suite turns warnings into errors.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient

import durable
from durable import _journals
from durable._cli import main
from durable._core import events as ev
from durable._core.payloads import is_sealed, payloads_from
from durable._core.values import loads_value
from durable._store_file import FileStore
from durable._timeline_html import fragment
from durable._ui import app as ui_app
from durable._ui.app import Dashboard, create_app
from durable._ui.security import COOKIE, LOOPBACK_NAMES, Guard
from durable.codecs import Zlib

PORT = 8080
BASE = f"http://127.0.0.1:{PORT}"
TOKEN = "a-token-long-enough-0123456789"


@durable.activity(name="tests.ui.greet_step")
def greet_step(name: str) -> str:
    return f"hello {name}"


@durable.activity(name="tests.ui.broken", retries=0)
def broken() -> None:
    raise OSError("the card service is down")


@durable.workflow(name="tests.ui.greet")
def greet(name: str):  # type: ignore[no-untyped-def]
    text = yield greet_step(name)
    return text


@durable.workflow(name="tests.ui.waits")
def waits(order: str):  # type: ignore[no-untyped-def]
    first = yield greet_step(order)
    decision = yield durable.wait_signal("go")
    return {"first": first, "decision": decision}


@durable.workflow(name="tests.ui.fails")
def fails():  # type: ignore[no-untyped-def]
    yield broken()


class Board:
    """A dashboard over a store, its test client, and a way to run trio code on its loop."""

    def __init__(self, client: TestClient, store: durable.Store) -> None:
        self.client = client
        self.store = store

    def call(self, fn: Any, *args: Any) -> Any:
        return self.client.portal.call(fn, *args)  # type: ignore[union-attr]

    def finish(self, workflow: Any, *args: Any, id: str) -> None:
        async def go() -> None:
            async with durable.Runtime(self.store) as runtime:
                handle = await runtime.start(workflow, *args, id=id)
                with contextlib.suppress(durable.WorkflowFailed):
                    await handle.result()

        self.call(go)

    def leave_waiting(self, run_id: str, order: str = "o-1") -> None:
        async def go() -> None:
            async with durable.Runtime(self.store) as runtime:
                await runtime.start(waits, order, id=run_id)
                for _ in range(200):  # until it waits for its signal
                    events = await self.store.read(run_id) or []
                    if any(isinstance(e, ev.SignalAwaited) for e in events):
                        return
                    await trio.sleep(0.01)

        self.call(go)

    def resume(self, run_id: str) -> Any:
        async def go() -> Any:
            async with durable.Runtime(self.store) as runtime:
                await runtime.recover()
                events = await self.store.read(run_id) or []
                for _ in range(300):
                    if events and isinstance(events[-1], ev.TERMINAL):
                        return events[-1]
                    await trio.sleep(0.01)
                    events = await self.store.read(run_id) or []
                return events[-1]

        return self.call(go)

    def events(self, run_id: str) -> list[Any]:
        return list(self.call(self.store.read, run_id) or [])


def _board(
    store: durable.Store, token: str | None = None, payloads: Any = None, **options: Any
) -> Iterator[Board]:
    guard = Guard(token, LOOPBACK_NAMES)
    dashboard = Dashboard(store, "the test store", payloads, guard, **options)
    with TestClient(create_app(dashboard), base_url=BASE, backend="trio") as client:
        yield Board(client, options.get("writer") or store)


@pytest.fixture(params=["file", pytest.param("postgres", marks=pytest.mark.postgres)])
def board(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Board]:
    if request.param == "file":
        store: durable.Store = FileStore(tmp_path / "store")
    else:
        store = pgutil.fresh_store()  # its schema is dropped when the app closes it
    yield from _board(store)


@pytest.fixture
def file_board(tmp_path: Path) -> Iterator[Board]:
    yield from _board(FileStore(tmp_path / "store"))


def states_in(page: str) -> dict[str, str]:
    """Run id → state, as the list's rows say."""
    return {
        html.unescape(i): s
        for i, s in re.findall(r'<tr class="run" data-id="([^"]*)" data-state="(\w+)"', page)
    }


def counts_in(page: str) -> dict[str, int]:
    found = re.findall(r'data-state="(\w+)">\w+<span class="n">(\d+)</span>', page)
    return {state: int(n) for state, n in found}


def secret_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


# --- the list ------------------------------------------------------------------------


def test_the_list_shows_runs_their_states_and_counts(board: Board) -> None:
    board.finish(greet, "ada", id="done-1")
    board.finish(fails, id="failed-1")
    board.leave_waiting("waiting-1")
    page = board.client.get("/")
    assert page.status_code == 200
    assert states_in(page.text) == {"done-1": "completed", "failed-1": "failed", "waiting-1": "waiting"}
    counts = counts_in(page.text)
    assert counts["all"] == 3 and counts["completed"] == 1 and counts["failed"] == 1
    assert counts["waiting"] == 1 and counts["running"] == 0
    live = board.client.get("/?part=live")  # what the page's script fetches
    assert live.status_code == 200 and "<html" not in live.text
    assert states_in(live.text) == states_in(page.text)


def test_the_list_filters_by_state_and_workflow_and_searches_ids(board: Board) -> None:
    board.finish(greet, "ada", id="order-1")
    board.finish(greet, "bob", id="order-2")
    board.finish(fails, id="invoice-1")
    assert set(states_in(board.client.get("/?state=failed").text)) == {"invoice-1"}
    assert set(states_in(board.client.get("/?state=completed").text)) == {"order-1", "order-2"}
    assert set(states_in(board.client.get("/?workflow=tests.ui.greet").text)) == {"order-1", "order-2"}
    assert set(states_in(board.client.get("/?q=order").text)) == {"order-1", "order-2"}
    assert set(states_in(board.client.get("/?q=der-2").text)) == {"order-2"}
    assert states_in(board.client.get("/?q=nothing").text) == {}
    assert states_in(board.client.get("/?state=failed&q=order").text) == {}


def test_the_list_pages_newest_first(file_board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_app, "PAGE_SIZE", 2)
    for n in range(6):
        file_board.finish(greet, f"n{n}", id=f"run-{n}")
    seen: list[str] = []
    pages = 0
    href: str | None = "/"
    while href is not None:
        page = file_board.client.get(html.unescape(href)).text
        pages += 1
        seen += list(states_in(page))
        older = re.search(r'<a href="([^"]*)" class="older">', page)
        href = older.group(1) if older else None
    assert seen == [f"run-{n}" for n in (5, 4, 3, 2, 1, 0)]
    assert pages == 3  # a full last page links to no empty one
    assert file_board.client.get("/?before=no-such-run").status_code == 400


# --- a run ---------------------------------------------------------------------------


def test_a_run_page_shows_its_timeline_payloads_and_what_it_waits_for(board: Board) -> None:
    board.leave_waiting("w-1", order="o-42")
    page = board.client.get("/runs/w-1")
    assert page.status_code == 200
    text = page.text
    assert '<g class="step" data-seq="0"' in text  # show --html's chart
    assert "hello o-42" in text and "&#x27;o-42&#x27;" in text  # its result and arguments
    assert "waits for" in text and "go" in text
    assert 'data-action="signal"' in text and 'data-action="cancel"' in text
    assert 'data-action="retry"' not in text  # only a failed run is retried
    live = board.client.get("/runs/w-1?part=live")
    assert live.status_code == 200 and "X-Durable-Final" not in live.headers
    assert board.client.get("/runs/nope").status_code == 404


def test_a_run_that_does_not_exist_is_worded_as_the_cli_words_it(board: Board) -> None:
    board.leave_waiting("w-1")
    said = "no run &#x27;nope&#x27; in "
    page = board.client.get("/runs/nope")
    assert page.status_code == 404 and said in page.text and "(the run list shows its runs)" in page.text
    for action, fields in (("signal", {"name": "go", "payload": ""}), ("cancel", {}), ("retry", {})):
        done = post(board, "nope", secret_from="w-1", action=action, confirm="yes", reason="", **fields)
        assert done.status_code == 404 and said in done.text, (action, done.text)


def test_a_finished_run_tells_the_page_to_stop_refreshing(file_board: Board) -> None:
    file_board.finish(fails, id="f-1")
    live = file_board.client.get("/runs/f-1?part=live")
    assert live.headers.get("X-Durable-Final") == "1"
    assert "the card service is down" in live.text
    assert 'data-action="retry"' in file_board.client.get("/runs/f-1").text


def test_the_run_page_is_the_timeline_of_show_html(file_board: Board) -> None:
    file_board.finish(greet, "ada", id="g-1")
    journal = file_board.call(_journals.read, file_board.store, "g-1")
    timeline = journal.timeline(now=0.0)
    drawn = fragment(timeline)
    live = file_board.client.get("/runs/g-1?part=live").text
    assert live == drawn  # a finished run: the same drawing, byte for byte


def test_the_workflow_locals_at_a_step(file_board: Board) -> None:
    file_board.leave_waiting("w-1")
    page = file_board.client.get("/runs/w-1?view=locals&step=1")
    assert page.status_code == 200, page.text
    assert "first" in page.text and "hello o-1" in page.text
    assert file_board.client.get("/runs/w-1?view=locals&step=x").status_code == 400
    assert file_board.client.get("/runs/w-1?view=locals&step=99").status_code == 400


# --- actions -------------------------------------------------------------------------


def post(board: Board, run_id: str, *, secret_from: str | None = None, **fields: str) -> Any:
    secret = secret_of(board.client.get(f"/runs/{secret_from or run_id}").text)
    return board.client.post(f"/runs/{run_id}", data={"csrf": secret, **fields}, follow_redirects=False)


def test_a_signal_is_confirmed_then_wakes_the_run(board: Board) -> None:
    board.leave_waiting("w-1")
    before = board.events("w-1")
    asked = post(board, "w-1", action="signal", name="go", payload='{"ok": true}')
    assert asked.status_code == 200 and 'name="confirm" value="yes"' in asked.text
    assert "send the signal &#x27;go&#x27;" in asked.text
    assert board.events("w-1") == before  # nothing sent yet
    assert board.call(board.store.messages, "w-1") == []
    done = post(board, "w-1", action="signal", name="go", payload='{"ok": true}', confirm="yes")
    assert done.status_code == 303 and done.headers["location"] == "/runs/w-1?done=signal"
    end = board.resume("w-1")
    assert isinstance(end, ev.RunCompleted)
    assert loads_value(end.result) == {"first": "hello o-1", "decision": {"ok": True}}


def test_a_signal_with_a_payload_that_is_not_json_is_refused(file_board: Board) -> None:
    file_board.leave_waiting("w-1")
    refused = post(file_board, "w-1", action="signal", name="go", payload="{nope", confirm="yes")
    assert refused.status_code == 400 and "not JSON" in refused.text  # the request's fault
    assert not any(isinstance(e, ev.SignalReceived) for e in file_board.events("w-1"))


def kinds(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]


@pytest.mark.parametrize(
    ("action", "argv", "fields"),
    [
        ("signal", ["signal", "{id}", "go", "7"], {"name": "go", "payload": "7"}),
        ("cancel", ["cancel", "{id}", "--reason", "why"], {"reason": "why"}),
        ("retry", ["retry", "{id}", "--reason", "fixed"], {"reason": "fixed"}),
    ],
)
def test_each_action_changes_the_store_as_the_cli_verb_does(
    file_board: Board, tmp_path: Path, action: str, argv: list[str], fields: dict[str, str]
) -> None:
    make = (lambda i: file_board.finish(fails, id=i)) if action == "retry" else file_board.leave_waiting
    make("by-cli")
    make("by-ui")
    path = str(tmp_path / "store")
    done = CliRunner().invoke(main, [a.format(id="by-cli") for a in argv] + ["--store", path])
    assert done.exit_code == 0, done.output
    assert post(file_board, "by-ui", action=action, confirm="yes", **fields).status_code == 303
    by_cli, by_ui = file_board.events("by-cli"), file_board.events("by-ui")
    assert kinds(by_ui) == kinds(by_cli) and len(by_ui) > len(file_board.events("by-cli")[:-1])
    assert [e.reason for e in by_ui if hasattr(e, "reason")] == [
        e.reason for e in by_cli if hasattr(e, "reason")
    ]
    end_cli, end_ui = file_board.resume("by-cli"), file_board.resume("by-ui")
    assert type(end_ui) is type(end_cli)


def test_an_action_the_run_does_not_allow_is_reported(file_board: Board) -> None:
    file_board.finish(greet, "ada", id="g-1")
    file_board.leave_waiting("w-1")  # a page with the actions' forms (the secret is the server's)
    refused = post(file_board, "g-1", secret_from="w-1", action="retry", confirm="yes", reason="")
    assert refused.status_code == 409 and "cannot retry run" in refused.text


def test_with_a_codec_payloads_are_shown_decoded_and_a_signal_is_written_encoded(tmp_path: Path) -> None:
    """As `durable show --codec` and `durable signal --codec`: the pages read with the codec,
    the actions write with it (the run's payloads never in clear in its journal)."""
    coded = FileStore(tmp_path / "store", codec=[Zlib()])
    plain = FileStore(tmp_path / "store")
    for board in _board(plain, payloads=payloads_from([Zlib()]), writer=coded):
        board.leave_waiting("w-1", order="secret-order")
        assert "secret-order" in board.client.get("/runs/w-1").text
        assert (
            post(board, "w-1", action="signal", name="go", payload='"yes"', confirm="yes").status_code == 303
        )
        raw = board.call(plain.read, "w-1")
        signal = next(e for e in raw if isinstance(e, ev.SignalReceived))
        assert is_sealed(signal.payload)
        end = board.resume("w-1")
        assert loads_value(coded._unsealed([end], "w-1")[0].result)["decision"] == "yes"


# --- security ------------------------------------------------------------------------


def test_a_post_without_the_form_secret_or_from_another_site_is_refused(file_board: Board) -> None:
    file_board.leave_waiting("w-1")
    client, before = file_board.client, file_board.events("w-1")
    form = {"action": "cancel", "confirm": "yes", "reason": ""}
    assert client.post("/runs/w-1", data=form).status_code == 403
    assert client.post("/runs/w-1", data={**form, "csrf": "guessed"}).status_code == 403
    secret = secret_of(client.get("/runs/w-1").text)
    evil = {"Origin": "http://evil.example"}
    assert client.post("/runs/w-1", data={**form, "csrf": secret}, headers=evil).status_code == 403
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert client.post("/runs/w-1", data={**form, "csrf": secret}, headers=cross).status_code == 403
    assert file_board.events("w-1") == before
    assert file_board.call(file_board.store.messages, "w-1") == []
    ours = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
    sent = client.post("/runs/w-1", data={**form, "csrf": secret}, headers=ours, follow_redirects=False)
    assert sent.status_code == 303


def test_a_post_that_is_not_one_of_the_dashboards_forms_says_why(file_board: Board) -> None:
    file_board.leave_waiting("w-1")
    client, before = file_board.client, file_board.events("w-1")
    as_json = client.post("/runs/w-1", json={"action": "cancel"})
    assert as_json.status_code == 415  # not a url-encoded form
    huge = client.post("/runs/w-1", data={"action": "signal", "payload": "x" * (4 << 20)})
    assert huge.status_code == 413  # over the form limit (it said 415)
    assert file_board.events("w-1") == before


def test_a_request_for_another_host_name_is_refused(file_board: Board) -> None:
    """DNS rebinding: a site whose name resolves to 127.0.0.1 sends its own name in Host."""
    assert file_board.client.get("/", headers={"Host": "evil.example"}).status_code == 400
    assert file_board.client.get("/", headers={"Host": f"localhost:{PORT}"}).status_code == 200


def test_with_a_token_every_request_needs_it(tmp_path: Path) -> None:
    for board in _board(FileStore(tmp_path / "store"), token=TOKEN):
        client = board.client
        assert client.get("/").status_code == 401
        assert client.get("/static/ui.js").status_code == 401
        assert client.get("/?token=wrong-wrong-wrong-wrong").status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer " + TOKEN}).status_code == 200
        entered = client.get(f"/?token={TOKEN}&state=failed", follow_redirects=False)
        assert entered.status_code == 303 and entered.headers["location"] == "/?state=failed"
        assert "httponly" in entered.headers["set-cookie"].lower()
        assert "samesite=strict" in entered.headers["set-cookie"].lower()
        assert client.cookies.get(COOKIE) == TOKEN
        assert client.get("/").status_code == 200
        client.cookies.clear()
        assert client.get("/").status_code == 401


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--host", "0.0.0.0"], "give it an access token"),
        (["--host", "192.168.1.5", "--token", "short"], "too short"),
    ],
)
def test_ui_refuses_to_start_unprotected(tmp_path: Path, argv: list[str], expected: str) -> None:
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    done = CliRunner().invoke(main, ["ui", "--store", str(store), *argv], env={"DURABLE_UI_TOKEN": ""})
    assert done.exit_code == 2, done.output
    assert expected in done.output


def test_durable_ui_serves_until_stopped(tmp_path: Path) -> None:
    """The verb itself: Hypercorn on a free port, the loopback names only, a clean stop."""
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    command = [str(Path(sys.executable).parent / "durable"), "ui", "--port", "0", "--store", str(store)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            url = re.search(r"on (http://127\.0\.0\.1:\d+) ", line)
            assert url, line
            assert httpx.get(url.group(1) + "/", timeout=10).status_code == 200
            rebound = httpx.get(url.group(1) + "/", headers={"Host": "rebind.example"}, timeout=10)
            assert rebound.status_code == 400
        finally:
            server.send_signal(signal.SIGINT)
            rest, _ = server.communicate(timeout=20)
    assert server.returncode == 0 and "durable ui stopped" in rest


def test_a_port_already_taken_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # It was a nested exception group's traceback, and exit 1.
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        durable_cli = str(Path(sys.executable).parent / "durable")
        command = [durable_cli, "ui", "--port", str(port), "--store", str(store)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot serve on 127.0.0.1:{port}: Address already in use; pass another --port or --host"
    )
    assert "Traceback" not in done.stderr


def test_ui_without_its_extra_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "starlette", None)
    done = CliRunner().invoke(main, ["ui", "--store", str(tmp_path)])
    assert done.exit_code == 2
    assert "pip install 'durable-yield[ui]'" in done.output


def test_import_durable_does_not_load_the_dashboard() -> None:
    code = (
        "import sys, durable, durable._cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('starlette', 'hypercorn', 'durable._ui'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done


def test_payloads_are_escaped_never_markup(file_board: Board) -> None:
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    file_board.finish(greet, evil, id="<b>x</b>")
    pages = [file_board.client.get("/").text, file_board.client.get("/runs/%3Cb%3Ex%3C%2Fb%3E").text]
    for page in pages:
        assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    run_page = pages[1]
    assert "<script>alert" not in run_page and "<img src=x" not in run_page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in run_page
    scripts = re.findall(r"<script[^>]*>", run_page)
    assert scripts == ['<script src="/static/ui.js" defer>']
    assert "script-src 'self'" in file_board.client.get("/").headers["content-security-policy"]
    assert "http://" not in run_page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched elsewhere


def test_the_links_to_runs_named_dot_and_dot_dot_lead_to_them(file_board: Board) -> None:
    """`/runs/..` is `/` to a browser (found by a new-user trial)."""
    for run_id in (".", ".."):
        file_board.finish(greet, "ada", id=run_id)
    listing = file_board.client.get("/").text
    for run_id, href in ((".", "/runs/%2E"), ("..", "/runs/%2E%2E")):
        assert f'href="{href}"' in listing
        page = file_board.client.get(href)
        assert page.status_code == 200, page.text[:300]
        assert f"<title>durable · run {run_id}</title>" in page.text


def test_an_unknown_state_is_refused_not_ignored(file_board: Board) -> None:
    """`?state=bogus` listed every run, as if no filter had been asked for."""
    file_board.finish(greet, "ada", id="g-1")
    page = file_board.client.get("/?state=bogus")
    assert page.status_code == 400 and "no state &#x27;bogus&#x27;" in page.text, page.text[-400:]
    assert "g-1" not in page.text
