"""The ``durable ls``, ``show``, ``replay`` and ``sim`` verbs (``run`` is in test_cli.py).

Each verb runs through click's CliRunner and at least once as a real process
(the installed console script). Journals with exact times, failed attempts and
recoveries are written event by event through a FileStore, so the timeline's
numbers can be checked; a real crash and a real change of a workflow module
are played too. Exit codes (SPEC section 7): 0 success, 1 a divergence or a
failing crash schedule, 2 a usage error on one line of stderr.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from click.testing import CliRunner

import durable
from durable import _timeline
from durable._cli import main
from durable._timeline_html import to_html
from durable.lowlevel import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    AttemptFailed,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
    dumps_value,
)

DURABLE = Path(sys.executable).parent / "durable"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "process_order.py"
T0 = 1_764_000_000.0  # 2025-11-24, the start of every hand-written journal

ORDER_V1 = """
    import durable

    @durable.activity(name="verbs.charge")
    def charge(amount: int) -> str:
        return f"pay_{amount}"

    @durable.activity(name="verbs.email")
    def email(user: str, text: str) -> None:
        return None

    @durable.workflow(name="verbs.order")
    def order(user: str, amount: int):
        payment = yield charge(amount)
        yield email(user, "receipt " + payment)
        return payment
    """

MODULES = {
    "verbs_order_v1.py": ORDER_V1,
    # The same workflow after a change: the receipt now goes out before the charge.
    "verbs_order_v2.py": """
    import durable

    @durable.activity(name="verbs.charge")
    def charge(amount: int) -> str:
        return f"pay_{amount}"

    @durable.activity(name="verbs.email")
    def email(user: str, text: str) -> None:
        return None

    @durable.workflow(name="verbs.order")
    def order(user: str, amount: int):
        yield email(user, "your order")
        payment = yield charge(amount)
        return payment
    """,
    "verbs_other.py": """
    import durable

    @durable.workflow(name="verbs.other")
    def other():
        return 1
        yield
    """,
    "verbs_crashy.py": """
    import os
    from pathlib import Path
    import durable

    @durable.activity(name="verbs.prepare")
    def prepare(n: int) -> int:
        return n + 1

    @durable.activity(name="verbs.dies_once")
    def dies_once(n: int) -> int:
        marker = Path("crashed-once")
        if not marker.exists():
            marker.touch()
            os._exit(3)  # the process dies in the middle of the step
        return n * 10

    @durable.workflow(name="verbs.crashy")
    def crashy(n: int):
        a = yield prepare(n)
        b = yield dies_once(a)
        return b
    """,
    "verbs_random.py": """
    import random
    import durable

    @durable.activity(name="verbs.check")
    def check(item: str) -> int:
        return 3

    @durable.activity(name="verbs.record")
    def record(x: float) -> float:
        return x

    @durable.workflow(name="verbs.sample")
    def sample(item: str):
        yield check(item)
        kept = yield record(random.random())  # wrong on purpose: not the same on replay
        return kept
    """,
    "verbs_broken.py": """
    raise RuntimeError("this module is broken on purpose")
    """,
}


@attrs.frozen
class Outcome:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name, source in MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    (tmp_path / "ledgers").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXAMPLE_LEDGERS", str(tmp_path / "ledgers"))
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    path = list(sys.path)
    yield tmp_path
    # CliRunner imports workflow modules into this process: forget them afterwards.
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and (
            Path(file).resolve() == EXAMPLE or Path(file).resolve().is_relative_to(tmp_path.resolve())
        ):
            del sys.modules[name]


def cli(*args: str) -> Outcome:
    """The CLI through click's CliRunner (in this process)."""
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(result.exception))
        return Outcome(1, result.stdout, result.stderr + tb)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def process(*args: str) -> Outcome:
    """The CLI as the installed console script."""
    done = subprocess.run(
        [str(DURABLE), *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def assert_usage_error(outcome: Outcome, *fragments: str) -> str:
    assert outcome.code == 2, outcome
    assert outcome.stdout == "", outcome
    assert "Traceback" not in outcome.stderr, outcome.stderr
    line = outcome.stderr.strip()
    assert "\n" not in line, f"expected one line on stderr, got:\n{outcome.stderr}"
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


# --- hand-written journals --------------------------------------------------------


def call(*args: Any, **kwargs: Any) -> bytes:
    return dumps_value([list(args), kwargs])


def error(kind: str, message: str) -> durable.ErrorInfo:
    return durable.ErrorInfo(kind, message)


def write_journal(store: Path, events: list[Any]) -> None:
    """Write a run's journal event by event, each one made durable as the runtime would."""

    async def write() -> None:
        writer = await durable.FileStore(store).create(events[0])
        assert writer is not None
        for event in events[1:]:
            writer.append(event)
            await writer.sync()
        writer.close()

    trio.run(write)


def retried_and_recovered(run_id: str = "order-7") -> list[Any]:
    """Step 0 fails twice then returns; the process dies during step 1 and a new one recovers it."""
    return [
        RunStarted(run_id, "verbs.order", call("alice", 4200), T0),
        ActivityScheduled(0, "verbs.charge", call(4200), T0 + 0.01),
        AttemptFailed(0, 1, error("ConnectionError", "card service down"), T0 + 0.51, T0 + 0.01),
        AttemptFailed(0, 2, error("TimeoutError", "no answer"), T0 + 2.0, T0 + 1.0),
        ActivityCompleted(0, dumps_value("pay_4200"), 3, T0 + 2.25),
        ActivityScheduled(1, "verbs.email", call("alice", "receipt pay_4200"), T0 + 2.3),
        RunResumed(T0 + 4.0, 4242),
        ActivityCompleted(1, dumps_value(None), 1, T0 + 4.5),
        RunCompleted(dumps_value("pay_4200"), T0 + 4.6),
    ]


def failed_run(run_id: str = "order-8") -> list[Any]:
    return [
        RunStarted(run_id, "verbs.order", call("bob", 1), T0 + 10),
        ActivityScheduled(0, "verbs.charge", call(1), T0 + 10.1),
        ActivityFailed(0, error("ValueError", "amount too small"), 1, T0 + 10.2),
        RunFailed(error("durable.ActivityError", "activity 'verbs.charge' failed"), T0 + 10.3),
    ]


def unfinished_run(run_id: str = "order-9") -> list[Any]:
    return [
        RunStarted(run_id, "verbs.order", call("carol", 5), T0 + 20),
        ActivityScheduled(0, "verbs.charge", call(5), T0 + 20.1),
    ]


def damage(store: Path, run_id: str, record: int) -> None:
    """Flip a byte inside a record that a later record proves durable: corruption, not a torn tail."""
    path = store / "runs" / f"{run_id}.journal"
    data = bytearray(path.read_bytes())
    pos = 16
    for _ in range(record):
        pos += 10 + int.from_bytes(data[pos + 2 : pos + 6], "little")
    data[pos + 14] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def store(workdir: Path) -> Path:
    """A store with a completed run that retried and recovered, a failed one, an unfinished one."""
    path = workdir / "store"
    write_journal(path, retried_and_recovered())
    write_journal(path, failed_run())
    write_journal(path, unfinished_run())
    return path


def parse_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


# --- ls ------------------------------------------------------------------------------


def test_ls_lists_each_run_with_its_status_and_steps(store: Path) -> None:
    outcome = cli("ls", "--store", str(store))
    assert outcome.code == 0, outcome
    lines = outcome.stdout.splitlines()
    header = next(line for line in lines if "workflow" in line)
    for column in ("id", "workflow", "status", "started", "last event", "steps"):
        assert column in header
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("order-")}
    assert rows["order-7"][1:3] == ["verbs.order", "completed"]
    assert rows["order-8"][2] == "failed"
    # Written straight into the store: an unfinished run nobody took is queued.
    assert rows["order-9"][2] == "queued"
    assert rows["order-7"][-1] == "2" and rows["order-9"][-5:] == ["1", "no", "process", "holds", "it"]
    started = datetime.datetime.fromtimestamp(T0).strftime("%Y-%m-%d %H:%M:%S")
    assert started in " ".join(rows["order-7"])
    assert list(rows) == ["order-9", "order-8", "order-7"]  # the newest first


def test_ls_json_and_filters(store: Path) -> None:
    outcome = cli("ls", "--json", "--store", str(store))
    assert outcome.code == 0, outcome
    runs = {run["id"]: run for run in json.loads(outcome.stdout)}
    assert set(runs) == {"order-7", "order-8", "order-9"}
    assert set(runs["order-7"]) == {
        "id",
        "workflow",
        "status",
        "started",
        "last_event",
        "steps",
        "error",
        "waiting",
        "doing",
        "held_by",
        "brief",
        "holder",
        "until",
    }
    assert runs["order-7"]["status"] == "completed"
    assert runs["order-7"]["steps"] == 2
    assert parse_time(runs["order-7"]["started"]) == pytest.approx(T0)
    assert parse_time(runs["order-7"]["last_event"]) == pytest.approx(T0 + 4.6)
    assert runs["order-7"]["error"] is None

    only = cli("ls", "--json", "--status", "queued", "--status", "failed", "--store", str(store))
    assert sorted(r["id"] for r in json.loads(only.stdout)) == ["order-8", "order-9"]
    write_journal(store, [RunStarted("x-1", "verbs.other", call(), T0 + 30)])
    by_name = cli("ls", "--json", "--workflow", "verbs.other", "--store", str(store))
    assert [r["id"] for r in json.loads(by_name.stdout)] == ["x-1"]
    none = cli("ls", "--workflow", "nothing.like.it", "--store", str(store))
    assert none.code == 0 and "no matching runs" in none.stdout


def test_ls_shows_a_damaged_journal_as_corrupt_and_goes_on(store: Path) -> None:
    write_journal(store, retried_and_recovered("order-bad"))
    damage(store, "order-bad", record=3)
    outcome = cli("ls", "--json", "--store", str(store))
    assert outcome.code == 0, outcome
    runs = {run["id"]: run for run in json.loads(outcome.stdout)}
    assert runs["order-bad"]["status"] == "corrupt"
    assert "order-bad.journal" in runs["order-bad"]["error"]
    assert "checksum" in runs["order-bad"]["error"]
    assert runs["order-bad"]["workflow"] == "verbs.order"  # read from the records in front of the damage
    assert runs["order-7"]["status"] == "completed"
    text = cli("ls", "--status", "corrupt", "--store", str(store))
    assert "order-bad" in text.stdout and "corrupt" in text.stdout and "order-7" not in text.stdout


@pytest.mark.parametrize("layout", ["empty/runs", "empty"])
def test_ls_of_an_empty_store(workdir: Path, layout: str) -> None:
    (workdir / layout).mkdir(parents=True)
    assert cli("ls", "--store", "empty").stdout.startswith("no runs in the store 'empty'")
    assert json.loads(cli("ls", "--json", "--store", "empty").stdout) == []


def test_ls_as_a_process(store: Path) -> None:
    outcome = process("ls", "--json", "--store", str(store))
    assert outcome.code == 0, outcome
    assert [r["id"] for r in json.loads(outcome.stdout)] == ["order-9", "order-8", "order-7"]


def test_ls_pages_the_newest_first(store: Path) -> None:
    first = cli("ls", "--limit", "2", "--json", "--store", str(store))
    assert [r["id"] for r in json.loads(first.stdout)] == ["order-9", "order-8"]
    assert "the next page: durable ls --limit 2 --before order-8" in first.stderr
    second = cli("ls", "--limit", "2", "--before", "order-8", "--json", "--store", str(store))
    assert [r["id"] for r in json.loads(second.stdout)] == ["order-7"]
    assert "the next page" not in second.stderr
    filtered = cli("ls", "--limit", "1", "--status", "completed", "--json", "--store", str(store))
    assert [r["id"] for r in json.loads(filtered.stdout)] == ["order-7"]
    assert "the next page" not in filtered.stderr  # no run older than order-7 is left
    # A full page with nothing after it: no hint that leads to an empty page (a trial).
    whole = cli("ls", "--limit", "3", "--store", str(store))
    assert whole.code == 0 and "order-7" in whole.stdout and "the next page" not in whole.stderr
    missing = cli("ls", "--before", "order-1", "--store", str(store))
    assert missing.code == 2 and "--before 'order-1': no run 'order-1' in the store" in missing.stderr


def test_the_next_page_command_keeps_the_filters_and_the_store_and_can_be_pasted(store: Path) -> None:
    """It said `durable ls --limit 1 --before ID` whatever the filters, output and store,
    and an id with a space split into two words when pasted (a new-user trial)."""
    first = cli(
        "ls", "--limit", "1", "--status", "completed", "--status", "failed", "--json", "--store", str(store)
    )  # fmt: skip
    assert [r["id"] for r in json.loads(first.stdout)] == ["order-8"]
    (hint,) = [line for line in first.stderr.splitlines() if line.startswith("the next page: ")]
    words = shlex.split(hint.removeprefix("the next page: "))
    assert words == [
        "durable", "ls", "--status", "completed", "--status", "failed", "--limit", "1", "--before",
        "order-8", "--json", "--store", str(store),
    ]  # fmt: skip
    pasted = cli(*words[1:])  # after "durable"
    assert pasted.code == 0, pasted
    assert [r["id"] for r in json.loads(pasted.stdout)] == ["order-7"]
    assert "the next page" not in pasted.stderr  # nothing older is left
    oldest = cli("ls", "--before", "order-7", "--store", str(store))
    assert "no runs that started before 'order-7'" in oldest.stdout
    words = shlex.split(_next_page_of(["ls", "--limit", "1", "--store", str(store)], "with space"))
    assert words[words.index("--before") + 1] == "with space"


def _next_page_of(args: list[str], last: str) -> str:
    from durable._cli import StoreArg, _next_page  # noqa: PLC0415 - what the verb prints

    return _next_page((), (), 1, last, False, StoreArg(args[-1]))


@pytest.mark.parametrize("run", [cli, process], ids=["runner", "process"])
def test_ls_with_a_bad_store_path_is_a_usage_error(workdir: Path, run: Any) -> None:
    assert_usage_error(run("ls", "--store", "missing"), "no durable store at 'missing'")
    (workdir / "plain-file").write_text("")
    assert_usage_error(run("ls", "--store", "plain-file"), "'plain-file'", "not a directory")


def test_ls_uses_the_default_store(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_usage_error(cli("ls"), "'.durable'")
    write_journal(workdir / "from-env", failed_run())
    monkeypatch.setenv("DURABLE_STORE", str(workdir / "from-env"))
    assert "order-8" in cli("ls").stdout


# --- show ----------------------------------------------------------------------------


def test_show_prints_steps_attempts_recoveries_and_the_outcome(store: Path) -> None:
    outcome = cli("show", "order-7", "--store", str(store))
    assert outcome.code == 0, outcome
    text = outcome.stdout
    assert "run order-7 · verbs.order · completed" in text
    assert "('alice', 4200)" in text
    lines = text.splitlines()
    step0 = next(line for line in lines if "verbs.charge(4200)" in line)
    assert step0.split()[:4] == ["+10ms", "0", "activity", "2.24s"]
    assert "'pay_4200' (attempt 3)" in step0
    assert "attempt 1 failed after 0.0ms: ConnectionError: card service down; retry after 500ms" in text
    assert "attempt 2 failed after 490ms: TimeoutError: no answer; retry after 1.00s" in text
    recovery = next(line for line in lines if "recovery" in line)
    assert recovery.split()[:3] == ["+4.00s", "⟲", "recovery"]
    assert "process 4242 resumed the run and replayed it here: 1 finished step fed from the" in recovery
    assert "step 1 in flight, run again" in recovery
    assert "cut short (its process stopped)" in text  # step 1's attempt spans the restart
    # Time order: step 1 (+2.30s), then the recovery (+4.00s), then the outcome.
    where = {
        key: next(i for i, line in enumerate(lines) if key in line)
        for key in ("verbs.email(", "⟲", "run completed")
    }
    assert where["verbs.email("] < where["⟲"] < where["run completed"]
    assert "run completed → 'pay_4200'" in text


def test_show_a_failed_and_an_unfinished_run(store: Path) -> None:
    failed = cli("show", "order-8", "--store", str(store)).stdout
    assert "failed: ValueError: amount too small" in failed
    assert "run failed → durable.ActivityError" in failed
    running = cli("show", "order-9", "--store", str(store)).stdout
    assert "· queued" in running and "verbs.charge(5) → to run again" in running
    assert "waits for  a worker to take it, then step 0 activity verbs.charge(5)" in running
    assert "run completed" not in running and "run failed" not in running


def test_show_json_has_stable_keys(store: Path) -> None:
    outcome = cli("show", "order-7", "--json", "--store", str(store))
    assert outcome.code == 0, outcome
    doc = json.loads(outcome.stdout)
    assert list(doc) == (  # stable keys, in a stable order
        [
            "version",
            "id",
            "workflow",
            "args",
            "status",
            "started",
            "ended",
            "last_event",
            "duration",
            "result",
            "error",
            "journal_error",
            "waiting",
            "events",
            "steps",
            "recoveries",
            "notes",
            "doing",
            "held_by",
            "now",
            "holder",
            "until",
        ]
    )
    assert doc["version"] == 1
    assert (doc["id"], doc["workflow"], doc["status"], doc["result"]) == (
        "order-7",
        "verbs.order",
        "completed",
        "'pay_4200'",
    )
    assert doc["duration"] == pytest.approx(4.6)
    assert doc["events"] == 9
    charge, email = doc["steps"]
    assert list(charge) == (
        [
            "seq",
            "kind",
            "name",
            "args",
            "status",
            "scheduled",
            "ended",
            "duration",
            "result",
            "error",
            "until",
            "attempts",
            "notes",
        ]
    )
    assert (charge["seq"], charge["kind"], charge["name"], charge["args"]) == (
        0,
        "activity",
        "verbs.charge",
        "(4200)",
    )
    assert charge["duration"] == pytest.approx(2.24)
    assert [a["status"] for a in charge["attempts"]] == ["failed", "failed", "completed"]
    first = charge["attempts"][0]
    assert set(first) == {
        "attempt",
        "status",
        "started",
        "ended",
        "error",
        "retry_at",
        "resumed",
        "heartbeat",
    }
    assert first["error"]["type"] == "ConnectionError"
    assert first["error"]["message"] == "card service down"
    assert parse_time(first["retry_at"]) == pytest.approx(T0 + 0.51)
    assert parse_time(charge["attempts"][1]["started"]) == pytest.approx(T0 + 0.51)
    assert parse_time(email["attempts"][0]["resumed"]) == pytest.approx(T0 + 4.0)
    assert doc["recoveries"] == [
        {"t": doc["recoveries"][0]["t"], "pid": 4242, "replayed": [0], "in_flight": [1]}
    ]
    failed = json.loads(cli("show", "order-8", "--json", "--store", str(store)).stdout)
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "durable.ActivityError"
    assert failed["steps"][0]["error"] == {
        "type": "ValueError",
        "message": "amount too small",
        "traceback": "",
    }


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of <title> elements (the hover details)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.titles.append(data)

    def having(self, css: str, tag: str | None = None) -> list[dict[str, str]]:
        """Elements of the chart and table with this class (the legend's swatches, class "key", left out)."""
        return [
            a
            for t, a in self.tags
            if css in (classes := a.get("class", "").split())
            and "key" not in classes
            and (tag is None or t == tag)
        ]


def parse_html(path: Path) -> Elements:
    parser = Elements()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_a_recovery_says_which_steps_ran_again_and_which_still_wait() -> None:
    recovery = _timeline.Recovery(1.0, 42, replayed=[0], in_flight=[1, 2], waits=[2])
    assert recovery.text() == (
        "process 42 resumed the run and replayed it here: 1 finished step fed from the journal; "
        "step 1 in flight, run again; step 2 still waiting"
    )


def test_show_html_draws_steps_attempts_backoffs_and_recoveries(store: Path) -> None:
    outcome = cli("show", "order-7", "--html", "order-7.html", "--store", str(store))
    assert outcome.code == 0, outcome
    assert "order-7.html" in outcome.stdout
    page = parse_html(store.parent / "order-7.html")
    steps = page.having("step", "g")
    assert [s["data-seq"] for s in steps] == ["0", "1"]
    assert [s["data-status"] for s in steps] == ["completed", "completed"]
    attempts = page.having("attempt", "rect")
    assert [(a["data-attempt"], a["data-status"]) for a in attempts] == [
        ("1", "failed"),
        ("2", "failed"),
        ("3", "completed"),
        ("1", "completed"),
    ]
    assert [a["class"] for a in attempts] == ["attempt bad", "attempt bad", "attempt ok", "attempt ok"]
    assert [b["data-backoff"] for b in page.having("wait", "rect")] == ["1", "2"]
    assert len(page.having("lost", "rect")) == 1  # step 1 was in flight when the process died
    recoveries = page.having("recovery", "g")
    assert [r["data-pid"] for r in recoveries] == ["4242"]
    assert page.having("end", "g") and page.having("completed", "g")
    titles = "\n".join(page.titles)
    assert "attempt 1 failed after 0.0ms: ConnectionError: card service down" in titles
    assert "backoff of 1.00s before attempt 3" in titles
    assert "process 4242 resumed the run and replayed it here" in titles
    # The table under the chart lists the same, one row per step, attempt and recovery.
    assert [r["data-seq"] for r in page.having("step", "tr")] == ["0", "1"]
    assert len(page.having("detail", "tr")) == 4
    assert len(page.having("recovery", "tr")) == 1


def test_show_html_is_self_contained_and_escapes_values(workdir: Path) -> None:
    hostile = "</title><script>alert(1)</script>"
    write_journal(
        workdir / "s",
        [
            RunStarted("x", "verbs.order", call(hostile), T0),
            ActivityScheduled(0, "verbs.charge", call(hostile), T0 + 1),
        ],
    )
    assert cli("show", "x", "--html", "x.html", "--store", "s").code == 0
    text = (workdir / "x.html").read_text()
    page = parse_html(workdir / "x.html")
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "img", "iframe")]
    assert not [a for _, a in page.tags if "src" in a or "href" in a]
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    assert "&lt;script&gt;" in text
    assert [(a["data-seq"], a["data-status"]) for a in page.having("step", "g")] == [("0", "running")]
    assert page.having("run", "rect")  # in flight when the journal ends


def test_show_json_and_html_together(store: Path) -> None:
    outcome = cli("show", "order-8", "--json", "--html", "o8.html", "--store", str(store))
    assert outcome.code == 0, outcome
    assert json.loads(outcome.stdout)["id"] == "order-8"  # stdout stays JSON
    assert "o8.html" in outcome.stderr
    assert page_has_step(store.parent / "o8.html", "0")


def page_has_step(path: Path, seq: str) -> bool:
    return any(a["data-seq"] == seq for a in parse_html(path).having("step", "g"))


def test_show_a_damaged_journal_up_to_the_damage(store: Path) -> None:
    write_journal(store, retried_and_recovered("order-bad"))
    damage(store, "order-bad", record=4)
    outcome = cli("show", "order-bad", "--store", str(store))
    assert outcome.code == 0, outcome
    assert "corrupt" in outcome.stdout
    assert "damaged; shown up to the damage" in outcome.stdout and "checksum" in outcome.stdout
    assert "Restore the journal from a backup." in outcome.stdout
    assert "inspect it with `durable show`" not in outcome.stdout  # as it is being shown
    assert "  to damage " in outcome.stdout and "so far" not in outcome.stdout  # not timed to now
    assert "verbs.charge(4200)" in outcome.stdout
    doc = json.loads(cli("show", "order-bad", "--json", "--store", str(store)).stdout)
    assert doc["status"] == "corrupt" and doc["events"] == 4 and "checksum" in doc["journal_error"]
    assert cli("show", "order-bad", "--html", "bad.html", "--store", str(store)).code == 0
    assert "could not be read to its end" in (store.parent / "bad.html").read_text()


def test_show_a_journal_damaged_from_its_header_says_what_is_unknown(store: Path) -> None:
    write_journal(store, retried_and_recovered("order-head"))
    path = store / "runs" / "order-head.journal"
    path.write_bytes(b"garbage!" + path.read_bytes())
    listed = cli("ls", "--store", str(store))
    assert "inspect it with `durable show`" in listed.stdout  # where that advice helps
    outcome = cli("show", "order-head", "--store", str(store))
    assert outcome.code == 0, outcome
    facts = {line.split()[0]: line.split(None, 1)[1] for line in outcome.stdout.splitlines()[1:3]}
    assert facts == {"arguments": "unknown", "started": "unknown"}, outcome.stdout
    assert "bad magic bytes" in outcome.stdout and "no steps were journaled" in outcome.stdout


def test_every_verb_says_a_missing_run_the_same_way(store: Path) -> None:
    """show, signal, cancel, retry, rm and ls --before, as the dashboard (test_ui.py)."""
    said = f"no run 'order-77' in the store {str(store)!r} (`durable ls` lists its runs)"
    for verb in (["show"], ["show", "--locals"], ["signal", "go"], ["cancel"], ["retry"]):
        assert_usage_error(cli(verb[0], "order-77", *verb[1:], "--store", str(store)), said)
    listed = cli("ls", "--before", "order-77", "--store", str(store))
    assert_usage_error(listed, f"--before 'order-77': {said}")
    removed = cli("rm", "order-77", "--store", str(store))
    assert removed.code == 2 and said in removed.stderr


@pytest.mark.parametrize("run", [cli, process], ids=["runner", "process"])
def test_show_errors_are_one_line(store: Path, run: Any) -> None:
    assert_usage_error(run("show", "order-77", "--store", str(store)), "no run 'order-77'", "durable ls")
    assert_usage_error(run("show", "order-7", "--store", "missing"), "no durable store at 'missing'")
    line = assert_usage_error(run("show", "order-7", "--html", "no/such/dir/x.html", "--store", str(store)))
    assert "cannot write 'no/such/dir/x.html'" in line


def test_show_debug_shows_the_traceback(store: Path) -> None:
    outcome = process("show", "order-77", "--store", str(store), "--debug")
    assert outcome.code == 2  # a usage error, as without --debug
    assert "Traceback (most recent call last)" in outcome.stderr
    assert outcome.stderr.splitlines()[-1].startswith("error: no run 'order-77'")


def test_show_after_a_real_crash(workdir: Path) -> None:
    args = ("run", "verbs_crashy.py:crashy", "4", "--id", "c-1", "--store", "s")
    assert process(*args).code == 3  # the activity killed the process
    again = process(*args)
    assert again.code == 0, again
    assert again.stdout.strip() == "50"
    text = process("show", "c-1", "--store", "s")
    assert text.code == 0, text
    assert "resumed the run and replayed it here: 1 finished step fed from the journal" in text.stdout
    assert process("show", "c-1", "--html", "c-1.html", "--store", "s").code == 0
    page = parse_html(workdir / "c-1.html")
    assert [s["data-seq"] for s in page.having("step", "g")] == ["0", "1"]
    assert len(page.having("recovery", "g")) == 1
    assert page.having("lost", "rect")


# --- the timeline model, for event types this version does not know -----------------


@attrs.define
class FutureStepEvent:
    seq: int
    colour: str
    payload: bytes
    t: float


@attrs.define
class FutureRunEvent:
    reason: str
    t: float


def test_unknown_event_types_are_shown_by_class_name_and_fields() -> None:
    events = [
        *retried_and_recovered()[:5],
        FutureStepEvent(0, "blue", dumps_value([1, 2]), T0 + 2.26),
        FutureStepEvent(5, "green", b"\xff\x00", T0 + 2.27),
        FutureRunEvent("because", T0 + 2.28),
    ]
    timeline = _timeline.build("order-7", events)
    assert timeline.status == "running"
    charge = timeline.step(0)
    assert charge is not None and charge.status == "completed"
    assert charge.notes[0].type == "FutureStepEvent"
    assert charge.notes[0].fields == {"colour": "'blue'", "payload": "[1, 2]"}
    new = timeline.step(5)
    assert new is not None and (new.kind, new.status) == ("FutureStepEvent", "recorded")
    assert new.notes[0].fields["payload"] == "<2 bytes that do not decode>"
    assert timeline.notes[0].type == "FutureRunEvent"
    assert timeline.notes[0].fields == {"reason": "'because'"}
    text = "\n".join(f"{r.what} {r.text} {r.details}" for r in _timeline.rows(timeline))
    assert "FutureRunEvent reason='because'" in text
    assert "FutureStepEvent colour='blue'" in text
    json.dumps(_timeline.to_json(timeline))
    assert "FutureStepEvent" in to_html(timeline)


def test_a_journal_that_breaks_the_ordering_rules_still_makes_a_timeline() -> None:
    events = [
        ActivityCompleted(3, b"\xff", 2, T0),  # no RunStarted, no scheduling, undecodable value
        AttemptFailed(4, 1, error("E", "m"), T0 + 1, T0 + 0.5),
        RunResumed(T0 + 2, 1),
    ]
    timeline = _timeline.build("odd", events)
    assert [s.seq for s in timeline.steps] == [3, 4]
    assert timeline.started is None
    to_html(timeline)
    json.dumps(_timeline.to_json(timeline))
    empty = _timeline.build("empty", [])
    assert "no steps were journaled" in to_html(empty)
    assert _timeline.rows(empty) == []


# --- replay --------------------------------------------------------------------------


def record_orders(run: Any = cli) -> None:
    for run_id, user in (("o-1", "alice"), ("o-2", "bob")):
        outcome = run("run", "verbs_order_v1.py:order", user, "42", "--id", run_id, "--store", "s")
        assert outcome.code == 0, outcome


def test_replay_with_the_unchanged_module_is_ok(workdir: Path) -> None:
    record_orders()
    write_journal(workdir / "s", unfinished_run("o-3"))  # unfinished: replayed up to its end
    outcome = cli("replay", "verbs_order_v1.py", "--store", "s")
    assert outcome.code == 0, outcome
    assert "o-1 (verbs.order): replayed OK (2 steps)" in outcome.stdout
    assert "o-2 (verbs.order): replayed OK (2 steps)" in outcome.stdout
    assert "o-3 (verbs.order): replayed OK (1 step)" in outcome.stdout
    assert (
        "unfinished: step 0 was in flight; it continues on recovery: activity verbs.charge(5)"
        in outcome.stdout
    )
    assert "3 runs: 3 replayed OK" in outcome.stdout


def test_replay_finds_the_divergence_of_a_changed_module(workdir: Path) -> None:
    record_orders()
    outcome = cli("replay", "verbs_order_v2.py", "--store", "s")
    assert outcome.code == 1, outcome
    assert "o-1 (verbs.order): DIVERGED at step 0" in outcome.stdout
    assert "journal: activity verbs.charge(42)" in outcome.stdout
    assert "code:    activity verbs.email('alice', 'your order')" in outcome.stdout
    assert 'verbs_order_v2.py:14: yield email(user, "your order")' in outcome.stdout
    assert "2 runs: 0 replayed OK, 2 diverged" in outcome.stdout
    assert "durable.patched" in outcome.stdout
    assert outcome.stderr.startswith("error: 2 of 2 runs cannot be replayed")


def test_replay_as_a_process_before_and_after_a_change(workdir: Path) -> None:
    record_orders(process)
    same = process("replay", "verbs_order_v1.py", "o-1", "--store", "s")
    assert same.code == 0, same
    assert "o-1 (verbs.order): replayed OK (2 steps)" in same.stdout
    changed = process("replay", "verbs_order_v2.py", "o-1", "--store", "s")
    assert changed.code == 1, changed
    assert "DIVERGED at step 0" in changed.stdout
    assert "journal: activity verbs.charge(42)" in changed.stdout
    assert "code:    activity verbs.email('alice', 'your order')" in changed.stdout
    assert "Traceback" not in changed.stderr


def test_replay_of_runs_whose_workflow_the_module_does_not_define(workdir: Path) -> None:
    record_orders()
    write_journal(workdir / "s", [RunStarted("x-1", "verbs.elsewhere", call(), T0)])
    default = cli("replay", "verbs_order_v1.py", "--store", "s")
    assert default.code == 0, default
    assert "skipped 1 run of workflows verbs_order_v1.py does not define: verbs.elsewhere" in default.stdout
    strict = cli("replay", "verbs_order_v1.py", "--all", "--store", "s")
    assert strict.code == 1, strict
    assert "x-1 (verbs.elsewhere): workflow 'verbs.elsewhere' is not defined" in strict.stdout
    named = cli("replay", "verbs_order_v1.py", "x-1", "--store", "s")
    assert named.code == 1 and "not defined" in named.stdout
    # FILE:WORKFLOW replays the runs of that workflow only.
    one = cli("replay", "verbs_order_v1.py:order", "--store", "s")
    assert one.code == 0 and "o-1" in one.stdout and "x-1" not in one.stdout


def test_replay_of_a_damaged_journal_fails_the_check(workdir: Path) -> None:
    record_orders()
    write_journal(workdir / "s", retried_and_recovered("bad"))
    damage(workdir / "s", "bad", record=2)
    outcome = cli("replay", "verbs_order_v1.py", "--store", "s")
    assert outcome.code == 1
    assert "bad (verbs.order): cannot be replayed:" in outcome.stdout
    assert "o-1 (verbs.order): replayed OK" in outcome.stdout
    alone = cli("replay", "verbs_order_v1.py", "bad", "--store", "s")
    assert alone.code == 1 and "error: 1 of 1 run cannot be replayed" in alone.stderr, alone


@pytest.mark.parametrize("run", [cli, process], ids=["runner", "process"])
def test_replay_errors_are_one_line(workdir: Path, run: Any) -> None:
    record_orders()
    assert_usage_error(
        run("replay", "verbs_broken.py", "--store", "s"), "verbs_broken.py", "broken on purpose"
    )
    assert_usage_error(run("replay", "no_such_module_xyz", "--store", "s"), "no_such_module_xyz")
    assert_usage_error(run("replay", "verbs_order_v1.py", "o-404", "--store", "s"), "no run 'o-404'")
    assert_usage_error(run("replay", "verbs_order_v1.py", "--store", "missing"), "no durable store")
    assert_usage_error(run("replay", "verbs_order_v1.py:nope", "--store", "s"), "'nope'", "order")
    assert_usage_error(run("replay", "verbs_order_v1.py", "o-1", "--all", "--store", "s"), "--all")


# --- sim -----------------------------------------------------------------------------


def test_sim_of_a_crash_safe_workflow(workdir: Path) -> None:
    outcome = cli("sim", f"{EXAMPLE}:process_order", "alice", "4200", "tok_visa", "--budget", "4")
    assert outcome.code == 0, outcome
    lines = outcome.stdout.splitlines()
    assert lines[0] == "sim: process_order('alice', 4200, 'tok_visa')"
    header = next(line for line in lines if "crash points" in line)
    for column in (
        "schedules",
        "crash points",
        "failures",
        "time",
        "seed",
        "crashes",
        "result without crashes",
    ):
        assert column in header
    row = lines[lines.index(header) + 2].split()
    assert row[:3] == ["4", "31", "0"]
    assert "returned 'pay_" in outcome.stdout
    assert "all 4 schedules matched the crash-free run" in outcome.stdout


def test_sim_of_a_workflow_that_is_not_deterministic(workdir: Path) -> None:
    outcome = cli("sim", "verbs_random.py:sample", "x", "--budget", "3", "--crashes", "1", "--explain")
    assert outcome.code == 1, outcome
    assert "failing schedule" in outcome.stdout
    assert "different command at step 1" in outcome.stdout
    assert "failure 1: sim.Recipe(seed=0, crashes=(sim.Crash(at=1" in outcome.stdout
    assert "sim.replay_recipe(sample, 'x', recipe=sim.Recipe(" in outcome.stdout
    assert "Process 1 starts run" in outcome.stdout  # --explain narrates the first failure
    assert outcome.stderr.startswith("error: ") and "diverged from the crash-free run" in outcome.stderr


def test_sim_as_a_process(workdir: Path) -> None:
    outcome = process("sim", "verbs_random.py:sample", "x", "--budget", "2", "--seed", "3")
    assert outcome.code == 1, outcome
    assert "sim.replay_recipe(sample, 'x', recipe=sim.Recipe(seed=3" in outcome.stdout
    assert "Traceback" not in outcome.stderr


@pytest.mark.parametrize("run", [cli, process], ids=["runner", "process"])
def test_sim_errors_are_one_line(workdir: Path, run: Any) -> None:
    assert_usage_error(run("sim", f"{EXAMPLE}:proces_order"), "proces_order", "process_order")
    assert_usage_error(run("sim", "verbs_broken.py:anything"), "verbs_broken.py", "broken on purpose")
    assert_usage_error(run("sim", "verbs_random.py"), "FILE_OR_MODULE:WORKFLOW")
    # Arguments the workflow does not take: every schedule would fail alike, and pass.
    assert_usage_error(
        run("sim", "verbs_random.py:sample"), "do not fit workflow", "missing a required argument: 'item'"
    )


def test_sim_options_are_checked(workdir: Path) -> None:
    assert cli("sim", "verbs_random.py:sample", "x", "--crashes", "0").code == 2
    assert cli("sim", "verbs_random.py:sample", "x", "--budget", "0").code == 2


# --- help ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "example"),
    [
        ("ls", "durable ls --status running"),
        ("show", "durable show order-1 --html order-1.html"),
        ("replay", "durable replay shop.workflows --all"),
        ("sim", "durable sim examples/process_order.py:process_order alice 4200 tok_visa"),
    ],
)
def test_help_has_an_example_and_the_common_options(workdir: Path, verb: str, example: str) -> None:
    outcome = cli(verb, "--help")
    assert outcome.code == 0
    assert "Example" in outcome.stdout
    assert example in outcome.stdout
    assert "--store" in outcome.stdout and "--debug" in outcome.stdout


def test_top_level_help_lists_the_verbs(workdir: Path) -> None:
    outcome = cli("--help")
    for verb in ("run", "ls", "show", "replay", "sim"):
        assert f"  {verb} " in outcome.stdout


def test_the_timeout_of_a_wait_that_a_signal_answered_is_not_drawn_in_flight() -> None:
    events = [
        durable.lowlevel.RunStarted("pa", "approval", durable.lowlevel.dumps_value([[], {}]), 100.0),
        durable.lowlevel.TimerStarted(0, 3600.0, 3700.0, 100.0),
        durable.lowlevel.SignalReceived("decision", durable.lowlevel.dumps_value("yes"), 100.1, ""),
        durable.lowlevel.RunCompleted(durable.lowlevel.dumps_value("yes"), 100.2),
    ]
    timeline = _timeline.build("pa", events)
    [step] = timeline.steps
    assert (step.status, step.name) == ("completed", "wait_signal timeout")
    assert step.result == "a signal came first"


def test_ls_pages_a_store_without_its_starts_log_by_reading_first_records(store: Path) -> None:
    # A store made before the log (or one whose log a crash cut short): the journals'
    # first records say when each run started.
    (store / "starts.log").unlink()
    listed = cli("ls", "--limit", "2", "--json", "--store", str(store))
    assert [r["id"] for r in json.loads(listed.stdout)] == ["order-9", "order-8"]
    # Torn lines, and a start that is not the journal's: the log is what is listed by.
    (store / "starts.log").write_text("garbage\n0000000001.000000 order-8.journal\n00000")
    listed = cli("ls", "--json", "--store", str(store))
    assert [r["id"] for r in json.loads(listed.stdout)] == ["order-9", "order-7", "order-8"]


def test_sim_with_workers_reports_what_one_process_reports(workdir: Path) -> None:
    call = ("sim", f"{EXAMPLE}:process_order", "alice", "4200", "tok_visa", "--crashes", "1")
    alone, forked = cli(*call), cli(*call, "--workers", "2")
    assert alone.code == forked.code == 0, (alone, forked)

    def row(outcome: Outcome) -> list[str]:
        lines = outcome.stdout.splitlines()
        header = next(line for line in lines if "crash points" in line)
        values = lines[lines.index(header) + 2].split()
        return values[:3]  # schedules, crash points, failures (not the time)

    assert row(forked) == row(alone)
