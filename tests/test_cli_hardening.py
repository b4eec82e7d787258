"""The command line against hostile or broken input (issue 11): text that would drive a
terminal, journals whose records hold the wrong types or impossible times, a result that
does not decode, an unreachable or mistyped PostgreSQL store, a key=value DSN, the HTML
file's mode, and bytes that are not UTF-8 on the command line.

Journals are written by hand (framed with ``durable._core.codec``) where the runtime would
refuse to write them; the CLI runs through click's CliRunner, and as a real process where
what reaches the terminal (or the file system) is the point.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pgutil
import pytest
import trio
from click.testing import CliRunner
from rich.console import Console

import durable
from durable import _cli
from durable import _timeline as tl
from durable._core.codec import encode_header, encode_record
from durable._timeline_html import to_html
from durable._timeline_text import timeline_text
from durable.lowlevel import (
    ActivityCompleted,
    ActivityScheduled,
    AttemptFailed,
    RunCompleted,
    RunFailed,
    RunStarted,
    TimerStarted,
    dumps_value,
)

DURABLE = Path(sys.executable).parent / "durable"
T0 = 1_764_000_000.0
#: Characters that must never reach a terminal raw: C0 and C1 controls (but newline),
#: DEL, bidi overrides and isolates, lone surrogates.
FORBIDDEN = (
    {chr(c) for c in range(0x20) if c != 0x0A}
    | {chr(c) for c in range(0x7F, 0xA0)}
    | {chr(c) for c in range(0x202A, 0x202F)}
    | {chr(c) for c in range(0x2066, 0x206A)}
    | {chr(0xDCFF), chr(0xD800)}
)
HOSTILE_ID = "run\x1b[2J\r\u202eevil"
HOSTILE_WORKFLOW = "[bold red]wf\x1b]0;pwned\x07"

MODULE = f"""
    import durable

    @durable.activity(name="hard.echo")
    def echo(text):
        return text

    @durable.workflow(name="hard.wf")
    def wf(text):
        result = yield echo(text)
        return result

    @durable.workflow(name="hard.raises")
    def raises(text):
        yield echo(text)
        raise ValueError("bad input " + text)

    @durable.workflow(name={HOSTILE_WORKFLOW!r})
    def hostile(text):
        result = yield echo(text)
        return result
"""


@attrs.frozen
class Outcome:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "hard.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    path = list(sys.path)
    yield tmp_path
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(tmp_path.resolve()):
            del sys.modules[name]


def cli(*args: str) -> Outcome:
    result = CliRunner().invoke(_cli.main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(result.exception))
        return Outcome(1, result.stdout, result.stderr + tb)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def process(*args: str, timeout: float = 120) -> Outcome:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [str(DURABLE), *args], capture_output=True, text=True, timeout=timeout, env=env, errors="replace"
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def one_line_error(outcome: Outcome, code: int = 2) -> str:
    assert outcome.code == code, outcome
    assert "Traceback" not in outcome.stderr, outcome.stderr
    line = outcome.stderr.strip()
    assert "\n" not in line, f"expected one line on stderr, got:\n{outcome.stderr}"
    assert line.startswith("error: "), line
    return line


def assert_printable(text: str) -> None:
    raw = sorted({c for c in text if c in FORBIDDEN})
    assert not raw, f"raw control characters {raw!r} in:\n{text!r}"


def call(*args: Any) -> bytes:
    return dumps_value([list(args), {}])


def write_raw(store: Path, events: list[Any]) -> None:
    """A journal of exactly these events, framed and checksummed: what the runtime would refuse."""
    run_id = events[0].run_id

    async def make() -> None:  # a valid run first, so the store's layout is the real one
        writer = await durable.FileStore(store).create(RunStarted(run_id, "hard.wf", call("x"), T0))
        assert writer is not None
        writer.close()

    trio.run(make)
    path = durable.FileStore(store).journal_path(run_id)
    data = encode_header() + b"".join(encode_record(e, i, i) for i, e in enumerate(events))
    Path(path).write_bytes(data)


def write_journal(store: Path, events: list[Any]) -> None:
    async def write() -> None:
        writer = await durable.FileStore(store).create(events[0])
        assert writer is not None
        for event in events[1:]:
            writer.append(event)
            await writer.sync()
        writer.close()

    trio.run(write)


def hostile_run() -> list[Any]:
    error = durable.ErrorInfo("ValueError", "no\rFAKE OK\x1b[31m \u202edesrever")
    return [
        RunStarted(HOSTILE_ID, HOSTILE_WORKFLOW, call("\x1b[2J"), T0),
        ActivityScheduled(0, "[red]act\x9b1m", call("\x1b]8;;http://x\x07"), T0 + 0.1),
        AttemptFailed(0, 1, error, T0 + 0.6, T0 + 0.2),
        ActivityCompleted(0, dumps_value("\x1b[2Jdone"), 2, T0 + 0.7),
        RunFailed(durable.ErrorInfo("Boom\x1b[5m", "gone\x1b[2J"), T0 + 1),
    ]


# --- 1. control characters never reach the terminal raw ---------------------------------


def test_ls_show_and_replay_escape_control_characters_and_print_markup_as_text(workdir: Path) -> None:
    store = workdir / "store"
    write_journal(store, hostile_run())
    listed = cli("ls", "--store", str(store))
    assert listed.code == 0, listed
    assert_printable(listed.stdout)
    assert "run\\x1b[2J\\r\\u202eevil" in listed.stdout
    assert "[bold red]wf\\x1b]0;pwned\\x07" in listed.stdout  # markup printed as text
    shown = cli("show", HOSTILE_ID, "--store", str(store))
    assert shown.code == 0, shown
    assert_printable(shown.stdout)
    for text in ("[red]act\\x9b1m", "no\\rFAKE OK\\x1b[31m", "gone\\x1b[2J", "[bold red]wf"):
        assert text in shown.stdout, text
    replayed = cli("replay", "hard.py", HOSTILE_ID, "--store", str(store))
    assert_printable(replayed.stdout + replayed.stderr)
    assert "run\\x1b[2J" in replayed.stdout
    # --json stays JSON, holding the text as it is.
    document = json.loads(cli("show", HOSTILE_ID, "--json", "--store", str(store)).stdout)
    assert document["id"] == HOSTILE_ID
    assert document["workflow"] == HOSTILE_WORKFLOW


def test_run_prints_a_result_and_a_failure_escaped(workdir: Path) -> None:
    done = cli("run", "hard.py:wf", "'\\x1b[2Jclear\\rfake\\u202e'", "--store", "s")
    assert done.code == 0, done
    assert_printable(done.stdout)
    assert done.stdout.strip() == "\\x1b[2Jclear\\rfake\\u202e"
    failed = cli("run", "hard.py:raises", "'\\x1b[2J'", "--store", "s")
    assert failed.code == 1, failed
    assert_printable(failed.stderr)
    assert "bad input \\x1b[2J" in failed.stderr


def test_click_s_own_errors_quote_what_was_typed_escaped(workdir: Path) -> None:
    outcome = cli("show", "order-1", "extra\r\x1b]0;title\x07")
    assert outcome.code == 2
    assert_printable(outcome.stderr)
    assert "extra\\r\\x1b]0;title\\x07" in outcome.stderr


def test_the_worker_logs_names_escaped(workdir: Path) -> None:
    store = workdir / "store"

    async def start() -> None:
        sys.path.insert(0, str(workdir))
        import hard  # type: ignore[import-not-found]  # noqa: PLC0415 - written by the fixture

        await durable.Client(str(store)).start(hard.hostile, "x", id="w\x1b[2J1")

    trio.run(start)
    worker = subprocess.Popen(
        [str(DURABLE), "worker", "hard.py", "--store", str(store), "--poll", "50ms"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = trio.run(durable.FileStore(store).read, "w\x1b[2J1")
            if events and isinstance(events[-1], RunCompleted):
                break
            time.sleep(0.1)
        time.sleep(0.3)  # the worker prints how the run ended right after journaling it
    finally:
        worker.send_signal(signal.SIGINT)
        out, err = worker.communicate(timeout=60)
    assert_printable(out + err)
    assert "'w\\x1b[2J1' ([bold red]wf\\x1b]0;pwned\\x07)" in err, err
    assert "completed 'w\\x1b[2J1'" in err, err


def test_the_html_page_escapes_everything_and_holds_no_lone_surrogate(workdir: Path) -> None:
    events = [
        RunStarted("r\udcff\x1b<b>", "wf\u202e<script>", call("\x00<i>"), T0),
        ActivityScheduled(0, "act\ud800&", call(1), T0 + 1),
        ActivityCompleted(0, dumps_value("x"), 1, T0 + 2),
    ]
    page = to_html(tl.build("r\udcff\x1b<b>", events))
    page.encode("utf-8")  # a page with a lone surrogate could not be written at all
    assert "<script>" not in page and "<b>" not in page
    assert not {c for c in page if c in FORBIDDEN - {"\t"}}
    assert "r\\udcff\\x1b&lt;b&gt;" in page


def test_printable_escapes_what_a_terminal_would_obey_and_keeps_the_rest() -> None:
    assert tl.printable("plain text, ünïcödé, 中文, emoji 🎉") == "plain text, ünïcödé, 中文, emoji 🎉"
    assert tl.printable("a\x1b[2Jb\rc\x9bd\u202ee\u2066f\udcffg") == (
        "a\\x1b[2Jb\\rc\\x9bd\\u202ee\\u2066f\\udcffg"
    )
    assert tl.printable("two\nlines\t", keep="\n") == "two\nlines\\t"
    assert tl.printable(tl.printable("\x1b")) == "\\x1b"  # printing twice changes nothing more


# --- 2. one bad journal stays that run's; times that are no date render -------------------


def test_ls_lists_every_run_when_records_hold_the_wrong_types(workdir: Path) -> None:
    store = workdir / "store"
    write_journal(store, [RunStarted("good", "hard.wf", call("x"), T0), RunCompleted(dumps_value(1), T0 + 1)])
    write_raw(store, [RunStarted("list-name", ["a", "b"], call("x"), T0)])  # type: ignore[arg-type]
    write_raw(store, [RunStarted("text-time", "hard.wf", call("x"), "yesterday")])  # type: ignore[arg-type]
    write_raw(
        store,
        [
            RunStarted("text-seq", "hard.wf", call("x"), T0),
            ActivityScheduled("zero", "hard.echo", call("x"), T0),  # type: ignore[arg-type]
        ],
    )
    write_raw(
        store,
        [RunStarted("nan-timer", "hard.wf", call("x"), T0), TimerStarted(0, math.inf, math.nan, math.inf)],
    )
    outcome = cli("ls", "--store", str(store))
    assert outcome.code == 0, outcome
    rows = {line.split()[0]: line for line in outcome.stdout.splitlines()[2:] if line.strip()}
    assert "completed" in rows["good"]
    for run_id in ("list-name", "text-time", "text-seq", "nan-timer"):
        assert "corrupt" in rows[run_id], outcome.stdout
    listed = json.loads(cli("ls", "--json", "--store", str(store)).stdout)
    assert {run["id"]: run["status"] for run in listed} == {
        "good": "completed",
        "list-name": "corrupt",
        "text-time": "corrupt",
        "text-seq": "corrupt",
        "nan-timer": "corrupt",
    }
    replayed = cli("replay", "hard.py", "--all", "--store", str(store))
    assert replayed.code == 1, replayed  # runs that cannot be replayed fail the check
    assert "Traceback" not in replayed.stderr
    assert "good (hard.wf): " in replayed.stdout  # the others are checked too
    assert replayed.stdout.count("cannot be replayed") == 4, replayed.stdout
    for run_id in ("list-name", "text-time", "text-seq", "nan-timer"):
        shown = cli("show", run_id, "--store", str(store))
        assert shown.code == 0, shown  # like any damaged journal: shown up to the damage
        assert "damaged; shown up to the damage" in shown.stdout
        assert json.loads(cli("show", run_id, "--json", "--store", str(store)).stdout)["journal_error"]
        html = workdir / f"{run_id}.html"
        assert cli("show", run_id, "--html", str(html), "--store", str(store)).code == 0


def test_a_timeline_with_records_of_the_wrong_types_stops_there_as_damage() -> None:
    events = [
        RunStarted("r", "wf", call(1), T0),
        ActivityScheduled(0, "act", call(1), T0 + 1),
        ActivityCompleted(0, dumps_value(2), "three", T0 + 2),  # type: ignore[arg-type]
        RunCompleted(dumps_value(2), T0 + 3),
    ]
    timeline = tl.build("r", events)
    assert timeline.status == "corrupt"
    assert timeline.journal_error is not None
    assert "record 2 (ActivityCompleted)" in timeline.journal_error
    assert "'attempts'" in timeline.journal_error
    assert [step.seq for step in timeline.steps] == [0]


TIMES = [T0 + 1e12, math.inf, -math.inf, math.nan, -1e300]


@pytest.mark.parametrize("t", TIMES, ids=["year-33715", "inf", "-inf", "nan", "far-past"])
def test_times_that_are_no_date_render(t: float) -> None:
    events = [
        RunStarted("r", "wf", call(1), T0),
        TimerStarted(0, t - T0, t, T0 + 1),
        ActivityScheduled(1, "act", call(1), T0 + 2),
        AttemptFailed(1, 1, durable.ErrorInfo("E", "x"), t, T0 + 3),
        RunCompleted(dumps_value(1), t),
    ]
    timeline = tl.build("r", events)
    assert timeline.journal_error is None
    text = io.StringIO()
    console = Console(file=text, width=200, markup=False)
    for line in timeline_text(timeline):
        console.print(line)
    assert "timer" in text.getvalue()
    json.dumps(tl.to_json(timeline), allow_nan=False)  # JSON has no NaN: such a time is null
    json.dumps(tl.summary_json(timeline), allow_nan=False)
    assert "<svg" in to_html(timeline)
    assert tl.local_time(t)
    assert tl.duration_text(t - T0)
    assert tl.iso_time(t) is None


def test_a_far_future_time_says_so() -> None:
    assert tl.local_time(T0 + 1e12).startswith("far future")
    assert tl.local_time(math.nan) == "no time (NaN)"
    assert tl.duration_text(math.inf) == "inf s"


# --- 3. a result that does not decode ---------------------------------------------------


def test_run_of_a_finished_run_whose_result_does_not_decode_is_one_line(workdir: Path) -> None:
    store = workdir / "store"
    write_raw(store, [RunStarted("bad-result", "hard.wf", call("x"), T0), RunCompleted(b"\xff\xff", T0 + 1)])
    line = one_line_error(cli("run", "hard.py:wf", "x", "--id", "bad-result", "--store", str(store)))
    assert "'bad-result'" in line
    assert "cannot be decoded" in line or "damaged" in line


# --- 4. an unreachable PostgreSQL server ---------------------------------------------------

UNREACHABLE = "postgresql://someone:s3cret@127.0.0.1:1/nowhere?connect_timeout=2"


@pytest.mark.parametrize(
    "verb",
    [
        ("ls",),
        ("show", "order-1"),
        ("show", "order-1", "--json"),
        ("signal", "order-1", "go"),
        ("cancel", "order-1"),
        ("run", "hard.py:wf", "x"),
        ("replay", "hard.py"),
    ],
    ids=lambda v: "-".join(v[:3]),
)
def test_every_verb_against_an_unreachable_server_is_one_line_exit_2(
    workdir: Path, verb: tuple[str, ...]
) -> None:
    line = one_line_error(cli(*verb, "--store", UNREACHABLE))
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in line
    assert "s3cret" not in line


@pytest.mark.parametrize("verb", [("show", "order-1"), ("run", "hard.py:wf", "x")], ids=str)
def test_a_verb_against_an_unreachable_server_as_a_process(workdir: Path, verb: tuple[str, ...]) -> None:
    # One line on stderr: `run` starts the store's LISTEN thread too, which tells of
    # its first refused connection no more than the verb's own error does.
    outcome = process(*verb, "--store", UNREACHABLE)
    line = one_line_error(outcome)
    assert "cannot connect to PostgreSQL" in line
    assert outcome.stdout == ""


# --- 5. a key=value DSN is PostgreSQL, and its password is never written --------------------

KEY_VALUE = "host=127.0.0.1 port=1 dbname=nowhere user=someone password=s3cret connect_timeout=2"


@pytest.mark.parametrize("verb", [("run", "hard.py:wf", "x"), ("ls",), ("worker", "hard.py")], ids=str)
def test_a_key_value_dsn_is_postgres_never_a_directory(workdir: Path, verb: tuple[str, ...]) -> None:
    before = set(os.listdir(workdir))
    outcome = cli(*verb, "--store", KEY_VALUE)
    line = one_line_error(outcome)
    assert "PostgreSQL at 127.0.0.1:1/nowhere" in line
    assert "s3cret" not in outcome.stdout + outcome.stderr
    assert set(os.listdir(workdir)) - {"__pycache__"} == before - {"__pycache__"}


def test_a_key_value_dsn_from_durable_store_is_postgres_too(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLE_STORE", KEY_VALUE)
    line = one_line_error(cli("run", "hard.py:wf", "x"))
    assert "PostgreSQL at 127.0.0.1:1" in line
    assert not any("s3cret" in name for name in os.listdir(workdir))


@pytest.mark.parametrize(
    "store",
    [
        "POSTGRESQL://postgres:QpwQ5@127.0.0.1:5432/test?schema=s",
        "postgresql:/postgres:QpwQ5@127.0.0.1/test",
        "mysql://root:QpwQ5@127.0.0.1/test",
    ],
    ids=["upper-case scheme", "one slash", "another database's URL"],
)
@pytest.mark.parametrize("verb", [("run", "hard.py:wf", "x"), ("ls",)], ids=str)
def test_a_mistyped_url_is_never_a_directory_and_never_shown_with_its_password(
    workdir: Path, verb: tuple[str, ...], store: str
) -> None:
    # From the review of issue 11: these made ./POSTGRESQL:/postgres:QpwQ5@.../runs/x.journal
    # and ran the workflow on local disk, and the reading verbs printed the password.
    before = set(os.listdir(workdir))
    outcome = cli(*verb, "--store", store)
    line = one_line_error(outcome)
    assert "URL" in line and "***" in line
    assert "QpwQ5" not in outcome.stdout + outcome.stderr
    assert set(os.listdir(workdir)) - {"__pycache__"} == before - {"__pycache__"}


def test_a_mistyped_url_is_refused_by_the_library_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from durable._store_from import store_from  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    with pytest.raises(durable.StoreError, match=r"postgresql://") as info:
        store_from("Postgres://u:QpwQ5@db/app")
    assert "QpwQ5" not in str(info.value)
    assert store_from("./C:/not/a/url") is not None  # a directory that merely has a colon
    assert list(tmp_path.iterdir()) == []


def test_a_stores_name_never_holds_its_password() -> None:
    for dsn in (
        KEY_VALUE,
        "postgresql://someone:s3cret@db/app",
        "postgresql://someone@db/app?password=s3cret&schema=jobs",
        "host=db password='s3 cret' schema=jobs",
    ):
        assert "s3cret" not in _cli._store_name(durable.PostgresStore(dsn))
        assert "s3" not in _cli._store_name(durable.PostgresStore(dsn)).replace("s3cret", "")


def test_a_key_value_dsn_that_libpq_refuses_does_not_echo_its_password() -> None:
    with pytest.raises(durable.StoreError) as info:
        durable.PostgresStore("host=db password=s3 cr3t")
    assert "cr3t" not in str(info.value)
    assert "invalid PostgreSQL connection string" in str(info.value)


def test_what_looks_like_a_dsn() -> None:
    from durable._store_postgres import looks_like_dsn  # noqa: PLC0415 - a private helper

    assert looks_like_dsn("postgresql://db/app")
    assert looks_like_dsn("host=db dbname=app")
    assert looks_like_dsn("  dbname = app")
    assert looks_like_dsn("schema=jobs host=db")
    assert not looks_like_dsn(".durable")
    assert not looks_like_dsn("./host=db")
    assert not looks_like_dsn("runs=old")  # not a libpq keyword: a directory name


@pytest.mark.postgres
def test_a_key_value_dsn_with_store_options_reaches_the_server(workdir: Path) -> None:
    pgutil.require()
    schema = pgutil.fresh_schema()
    params = " ".join(f"{k}={v}" for k, v in _conninfo().items())
    dsn = f"{params} schema={schema} lease_ttl=5s"
    try:
        done = cli("run", "hard.py:wf", "x", "--id", "kv-1", "--store", dsn)
        assert done.code == 0, done
        assert done.stdout.strip() == "x"
        listed = cli("ls", "--store", dsn)
        assert "kv-1" in listed.stdout and "completed" in listed.stdout
        assert _schema_exists(schema)
        assert not [name for name in os.listdir(workdir) if "=" in name]
    finally:
        pgutil.drop_schema(schema)


def _conninfo() -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - pgutil.require() checked psycopg

    return {k: str(v) for k, v in conninfo_to_dict(pgutil.dsn()).items()}


# --- 6. reading never creates a store -------------------------------------------------------


def _schema_exists(schema: str) -> bool:
    return bool(pgutil.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]))


@pytest.mark.postgres
@pytest.mark.parametrize(
    "verb",
    [
        ("ls",),
        ("ls", "--json"),
        ("show", "order-1"),
        ("replay", "hard.py"),
        ("signal", "order-1", "go"),
        ("cancel", "order-1"),
    ],
    ids=lambda v: "-".join(v),
)
def test_reading_a_mistyped_schema_creates_nothing(workdir: Path, verb: tuple[str, ...]) -> None:
    pgutil.require()
    schema = pgutil.fresh_schema()
    try:
        line = one_line_error(cli(*verb, "--store", f"{pgutil.dsn()}?schema={schema}"))
        assert f"no durable store in schema '{schema}'" in line
        assert not _schema_exists(schema)
    finally:
        pgutil.drop_schema(schema)


@pytest.mark.postgres
async def test_the_store_s_reads_create_nothing_and_its_first_write_makes_the_tables() -> None:
    store = pgutil.fresh_store()
    try:
        assert await store.has_tables() is False
        assert await store.run_ids() == []
        assert await store.unfinished() == []
        assert await store.read("run-1") is None
        assert await store.open("run-1") is None
        assert await store.open_many(["run-1"]) == [None]
        assert await store.messages("run-1") == []
        assert await store.runs_with_messages() == set()
        with pytest.raises(durable.UnknownRunError):
            await store.post("run-1", durable.lowlevel.CancelRequested("", T0, "m-1"))
        assert not _schema_exists(store.schema)
        writer = await store.create(RunStarted("run-1", "wf", call(1), T0))
        assert writer is not None
        writer.close()
        assert await store.has_tables() is True
        assert await store.run_ids() == ["run-1"]
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_a_reader_sees_tables_another_process_made_after_it_looked() -> None:
    reader = pgutil.fresh_store()
    writer_store = pgutil.store_on(reader.schema)
    try:
        assert await reader.run_ids() == []
        writer = await writer_store.create(RunStarted("run-1", "wf", call(1), T0))
        assert writer is not None
        writer.close()
        assert await reader.run_ids() == ["run-1"]
    finally:
        await writer_store.aclose()
        await reader.aclose()


# --- 7. the HTML file ------------------------------------------------------------------------


@pytest.fixture
def one_run(workdir: Path) -> Path:
    store = workdir / "store"
    write_journal(store, [RunStarted("r-1", "hard.wf", call("x"), T0), RunCompleted(dumps_value(1), T0 + 1)])
    return store


def test_show_html_writes_its_file_0600_whatever_the_umask(one_run: Path, workdir: Path) -> None:
    old = os.umask(0o022)
    try:
        assert cli("show", "r-1", "--html", "page.html", "--store", str(one_run)).code == 0
        (workdir / "old.html").write_text("old")
        os.chmod(workdir / "old.html", 0o644)
        assert cli("show", "r-1", "--html", "old.html", "--store", str(one_run)).code == 0
    finally:
        os.umask(old)
    for name in ("page.html", "old.html"):
        assert stat.S_IMODE((workdir / name).stat().st_mode) == 0o600, name
        assert "<svg" in (workdir / name).read_text()
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_show_html_never_writes_through_a_symlink(one_run: Path, workdir: Path) -> None:
    victim = workdir / "victim.txt"
    victim.write_text("precious")
    (workdir / "page.html").symlink_to(victim)
    assert cli("show", "r-1", "--html", "page.html", "--store", str(one_run)).code == 0
    assert victim.read_text() == "precious"
    assert not (workdir / "page.html").is_symlink()
    assert "<svg" in (workdir / "page.html").read_text()


# --- 8. bytes that are not UTF-8 on the command line -----------------------------------------


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("show", "x\udcff"), "the run id"),
        (("signal", "x\udcff", "go"), "the run id"),
        (("signal", "r-1", "go\udcff"), "the signal name"),
        (("cancel", "x\udcff"), "the run id"),
        (("cancel", "r-1", "--reason", "x\udcff"), "--reason"),
        (("replay", "hard.py", "x\udcff"), "the run id"),
        (("run", "hard.py:wf", "x", "--id", "x\udcff"), "the run id"),
        (("run", "hard.py:wf", "x\udcff"), "the workflow argument"),
        (("ls", "--before", "x\udcff"), "--before"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v[:2]),
)
def test_a_lone_surrogate_on_the_command_line_is_one_clear_line(
    one_run: Path, args: tuple[str, ...], what: str
) -> None:
    line = one_line_error(cli(*args, "--store", str(one_run)))
    assert f"{what} 'x\\udcff'" in line or f"{what} 'go\\udcff'" in line
    assert "not valid text" in line


def test_bytes_that_are_not_utf8_in_argv_as_a_process(one_run: Path) -> None:
    done = subprocess.run(
        [str(DURABLE).encode(), b"show", b"x\xff", b"--store", str(one_run).encode()],
        capture_output=True,
        timeout=120,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    assert done.returncode == 2
    assert b"Traceback" not in done.stderr
    assert done.stderr.count(b"\n") == 1
    assert b"the run id 'x\\udcff' is not valid text" in done.stderr


def test_an_entry_durable_cannot_read_as_a_journal_is_listed_unreadable_not_corrupt(workdir: Path) -> None:
    # A directory where a journal should be was never read: "unreadable", not "corrupt"
    # (damage found inside a journal), as the status column promises.
    assert cli("run", "hard.py:wf", "x", "--id", "fine").code == 0
    (workdir / ".durable" / "runs" / "odd.journal").mkdir()
    outcome = cli("ls", "--json")
    assert outcome.code == 0, outcome
    statuses = {row["id"]: row["status"] for row in json.loads(outcome.stdout)}
    assert statuses == {"fine": "completed", "odd": "unreadable"}


INTERRUPTIBLE = textwrap.dedent(
    """
    import asyncio
    import os
    import durable
    import sniffio
    import trio

    @durable.activity
    async def slow():
        open(os.environ["IN_FLIGHT"], "w").close()
        seconds = float(os.environ["SLOW_SECONDS"])
        if sniffio.current_async_library() == "asyncio":
            await asyncio.sleep(seconds)
        else:
            await trio.sleep(seconds)
        return "done"

    @durable.workflow
    def wf():
        return (yield slow())
    """
)


def test_ctrl_c_during_durable_run_says_how_to_resume_and_loses_nothing(tmp_path: Path, loop: str) -> None:
    """Not a traceback of trio's exception groups: one line, exit 130, and the run resumes."""
    (tmp_path / "slow_wf.py").write_text(INTERRUPTIBLE)
    command = [str(Path(sys.executable).parent / "durable"), "run", "slow_wf.py:wf", "--id", "ctrl-c"]
    command += ["--store", str(tmp_path / "store"), "--loop", loop]
    in_flight = tmp_path / "in-flight"
    env = dict(os.environ, IN_FLIGHT=str(in_flight), SLOW_SECONDS="3600")
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
    while not in_flight.exists():
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.decode() == (
        "interrupted: what the run journaled stays; `durable run` with --id ctrl-c resumes it\n"
    )
    resumed = subprocess.run(
        command, cwd=tmp_path, env=dict(env, SLOW_SECONDS="0"), capture_output=True, text=True, timeout=60
    )
    assert (resumed.returncode, resumed.stdout) == (0, "done\n"), resumed.stderr
