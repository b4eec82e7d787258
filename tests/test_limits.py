"""What the journal cannot hold is refused before anything is written, and stays local.

SPEC §4, guarantees 6 and 7: a value over the record size limit, a value cbor2
cannot encode (a lone surrogate, a cycle, nesting too deep to decode) and an
absurd duration are refused at ``start`` / at the yield, or fail the attempt as
a non-retryable ``SerializationError`` journaled as the step's failure, so no
store ever acknowledges a record it cannot read back and no activity re-runs in
a loop. Records with valid checksums but fields of the wrong types are that
run's ``JournalCorruptError``.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
import trio.testing

import durable
from durable._core.codec import FRAME_SIZE, HEADER_SIZE, encode_header, encode_record, scan
from durable._core.errors import ErrorInfo
from durable._core.values import MAX_RECORD, MAX_VALUE, encode_call, encode_value
from durable.lowlevel import ActivityCompleted, ActivityFailed, ActivityScheduled, RunStarted

TOO_BIG = MAX_VALUE + 1024  # over the limit for one value, under the record's frame limit too
HUGE = 70 * 1024 * 1024  # the review's 70 MB: over the frame limit itself

CALLS: list[str] = []


def _cyclic() -> list[Any]:
    cycle: list[Any] = []
    cycle.append(cycle)
    return cycle


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


POISON = {
    "huge bytes": lambda: b"x" * HUGE,
    "just over the value limit": lambda: b"x" * TOO_BIG,
    "a lone surrogate": lambda: "caf\udce9",
    "a lone surrogate inside a dict": lambda: {"name": "caf\udce9"},
    "a cycle": _cyclic,
    "nesting too deep to decode": lambda: _nested(1000),
}


@durable.activity(retries=3, initial_backoff="1s")
async def poisoned(kind: str) -> Any:
    CALLS.append(kind)
    return POISON[kind]()


@durable.workflow(name="tests.limits.returns_poison")
def returns_poison(kind: str):  # type: ignore[no-untyped-def]
    try:
        yield poisoned(kind)
    except durable.ActivityError as exc:
        return [exc.type_name, exc.attempts, exc.message]
    return "unreachable"


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()


@pytest.mark.parametrize("kind", list(POISON))
async def test_a_result_the_journal_cannot_hold_fails_the_step_once_and_for_good(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, kind: str
) -> None:
    store = durable.FileStore(tmp_path)
    async with durable.Runtime(store) as runtime:
        type_name, attempts, message = await (await runtime.start(returns_poison, kind, id="p")).result()
    assert (type_name, attempts) == ("durable.SerializationError", 1)  # never retried
    assert "result of activity" in message
    events = await store.read("p")
    assert events is not None
    assert any(isinstance(e, ActivityFailed) for e in events)  # journaled as the step's failure
    # Attaching to the finished run, and a recovery, never run the activity again.
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        again = await (await runtime.start(returns_poison, kind, id="p")).result()
        assert await runtime.recover() == []
    assert again[:2] == ["durable.SerializationError", 1]
    assert [kind] == CALLS


async def test_a_too_large_result_names_the_limit_and_the_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        _, _, message = await (await runtime.start(returns_poison, "huge bytes", id="p")).result()
    assert f"{HUGE + 5:,} bytes" in message  # the encoded size: 5 bytes of CBOR header
    assert f"limit of {MAX_VALUE:,} bytes" in message


@durable.workflow(name="tests.limits.echo")
def echo(value: Any):  # type: ignore[no-untyped-def]
    yield durable.sleep(0)
    return "ran"


@pytest.mark.parametrize("kind", ["huge bytes", "a lone surrogate", "a cycle", "nesting too deep to decode"])
async def test_an_argument_the_journal_cannot_hold_is_refused_at_start(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, kind: str
) -> None:
    store = durable.FileStore(tmp_path)
    async with durable.Runtime(store) as runtime:
        with pytest.raises(durable.SerializationError, match="argument 1 of workflow"):
            await runtime.start(echo, POISON[kind](), id="big")
    assert await store.run_ids() == []  # nothing was created: the run did not vanish, it never was
    with pytest.raises(durable.SerializationError):
        await durable.Client(store).start(echo, POISON[kind](), id="big")
    assert await store.run_ids() == []


def test_durable_run_refuses_a_too_large_argument_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(durable.SerializationError) as caught:
        durable.run(echo, b"x" * HUGE, id="big", store=durable.FileStore(tmp_path))
    assert caught.value.size == HUGE + 5  # the argument's own encoding: 5 bytes of header
    assert caught.value.limit == MAX_VALUE
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@durable.activity
async def takes(value: Any) -> str:
    CALLS.append("takes")
    return "took"


@durable.workflow(name="tests.limits.passes_big")
def passes_big():  # type: ignore[no-untyped-def]
    try:
        yield takes("y" * HUGE)
    except durable.SerializationError as exc:
        return f"refused at the yield: {exc.size}"
    return "unreachable"


async def test_an_activity_argument_over_the_limit_is_refused_at_the_yield(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store) as runtime:
        assert await (await runtime.start(passes_big, id="y")).result() == f"refused at the yield: {HUGE + 5}"
    events = await store.read("y")
    assert events is not None
    assert not any(isinstance(e, ActivityScheduled) for e in events)
    assert CALLS == []


@durable.workflow(name="tests.limits.waits")
def waits():  # type: ignore[no-untyped-def]
    return (yield durable.wait_signal("data", timeout="1h"))


async def test_a_signal_payload_over_the_limit_is_refused_to_its_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        handle = await runtime.start(waits, id="w")
        with pytest.raises(durable.SerializationError, match="payload of signal 'data'"):
            await runtime.signal("w", "data", b"z" * HUGE)
        await runtime.signal("w", "data", "small")
        assert await handle.result() == "small"


@durable.workflow(name="tests.limits.returns_big")
def returns_big():  # type: ignore[no-untyped-def]
    yield durable.sleep(0)
    return b"r" * HUGE


async def test_a_workflow_result_over_the_limit_fails_the_run_readably(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        handle = await runtime.start(returns_big, id="r")
        with pytest.raises(durable.WorkflowFailed, match="over the journal's limit"):
            await handle.result()
    events = await durable.FileStore(tmp_path).read("r")  # and the journal reads back
    assert events is not None


def test_the_record_encoder_refuses_a_record_over_the_frame_limit() -> None:
    started = RunStarted("r", "wf", b"\x00" * MAX_RECORD, 1.0)
    with pytest.raises(durable.SerializationError, match="over the journal's limit") as caught:
        encode_record(started, 0, -1)
    assert caught.value.limit == MAX_RECORD


def test_the_writer_writes_nothing_for_a_record_over_the_limit(tmp_path: Path) -> None:
    async def main() -> None:
        store = durable.FileStore(tmp_path)
        writer = await store.create(RunStarted("r", "wf", b"\x82\x80\xa0", 1.0))
        assert writer is not None
        with pytest.raises(durable.SerializationError):
            writer.append(ActivityCompleted(0, b"\x00" * MAX_RECORD, 1, 2.0))
        writer.append(ActivityCompleted(0, b"\xf6", 1, 2.0))  # the journal goes on
        await writer.sync()
        writer.close()
        events = await store.read("r")
        assert events is not None and len(events) == 2

    trio.run(main)


def test_a_value_just_under_the_limit_is_journaled_and_reads_back() -> None:
    value = b"v" * (MAX_VALUE - 16)
    encoded = encode_value(value, what="x")
    record = encode_record(ActivityCompleted(0, encoded, 1, 1.0), 1, 0)
    assert len(record) <= FRAME_SIZE + MAX_RECORD
    found = scan(
        encode_header() + encode_record(RunStarted("r", "wf", b"\x82\x80\xa0", 1.0), 0, -1) + record, "j"
    )
    assert found.events[1].result == encoded


def test_error_messages_and_tracebacks_are_cut_to_fit_a_record() -> None:
    info = ErrorInfo.from_exception(ValueError("m" * HUGE), traceback="t" * HUGE)
    assert len(info.message) < 20_000 and len(info.traceback) < 70_000
    assert "characters cut" in info.message
    surrogate = ErrorInfo.from_exception(ValueError("bad \udce9 byte"))
    surrogate.message.encode()  # journalable


def test_memoryview_is_journaled_as_bytes() -> None:
    assert cbor2.loads(encode_value(memoryview(b"ab"), what="x")) == b"ab"
    assert encode_value(memoryview(b"ab"), what="x") == encode_value(b"ab", what="x")
    assert cbor2.loads(encode_call((memoryview(b"ab"),), {}, what="x")) == [[b"ab"], {}]


def test_nesting_at_the_decoders_depth_is_refused_with_its_path() -> None:
    encode_value(_nested(390), what="x")  # deep, but readable
    with pytest.raises(durable.SerializationError, match="nests containers too deeply"):
        encode_value(_nested(401), what="x")


DEEP_VALUES = {
    "a list": "deep",
    "a dict's value": "{'k': deep}",
    "a dict's key": "{chain: 1}",
    "tuples": "chain",
    "frozensets": "frozen",
    "a dataclass field": "[Box(deep)]",
}


@pytest.mark.parametrize("expression", list(DEEP_VALUES.values()), ids=list(DEEP_VALUES))
def test_a_value_nested_far_too_deep_is_refused_not_a_crash(expression: str) -> None:
    # cbor2's encoder recurses on the C stack without a limit: a list nested 20,000 deep
    # crashed the process (SIGSEGV), again at every retry of the step. In a child
    # process, so that a crash is this test's failure, not the test runner's.
    code = (
        "import dataclasses, durable\n"
        "from durable._core.values import encode_value, encode_call\n"
        "@dataclasses.dataclass\n"
        "class Box:\n"
        "    inside: object\n"
        "durable.register(Box)\n"
        "deep, chain, frozen = [], (), frozenset()\n"
        "for _ in range(20_000):\n"
        "    deep, chain, frozen = [deep], (chain,), frozenset([frozen])\n"
        f"value = {expression}\n"
        "for encode, given in ((encode_value, value), (encode_call, ((value,), {}))):\n"
        "    try:\n"
        "        encode(*([given] if encode is encode_value else given), what='x')\n"
        "    except durable.SerializationError as exc:\n"
        "        print('refused:', 'too deeply' in str(exc))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["refused: True", "refused: True"], done.stdout + done.stderr


def test_an_absurd_duration_is_refused_at_the_call() -> None:
    with pytest.raises(ValueError, match="100 years"):
        durable.sleep(1e12)
    with pytest.raises(ValueError, match="100 years"):
        durable.wait_signal("x", timeout=1e12)
    with pytest.raises(ValueError, match="100 years"):
        durable.activity(timeout="999999999h")(lambda: None)
    durable.sleep("36500d")  # 100 years is still a duration


# --- records with right checksums and wrong field types ------------------------------


def _journal_with(payload: list[Any]) -> bytes:
    """A journal holding RunStarted and one record framed around ``payload`` (any CBOR)."""
    first = encode_record(RunStarted("r", "wf", b"\x82\x80\xa0", 1.0), 0, -1)
    body = cbor2.dumps(payload)
    length = struct.pack("<I", len(body))
    frame = b"\xd5J" + length + struct.pack("<I", zlib.crc32(length + body)) + body
    return encode_header() + first + frame


WRONG = {
    "text where a step number belongs": [4, 1, 0, "zero", b"\xf6", 1, 2.0],
    "a list as a name": [2, 1, 0, 0, ["n"], b"\x82\x80\xa0", 2.0],
    "a NaN time": [4, 1, 0, 0, b"\xf6", 1, math.nan],
    "an infinite time": [6, 1, 0, 0, 5.0, math.inf, 2.0],
    "a time in year 33715": [6, 1, 0, 0, 1e12, 1e12, 2.0],
    "a bool as attempts": [4, 1, 0, 0, b"\xf6", True, 2.0],
    "text as a result": [4, 1, 0, 0, "not bytes", 1, 2.0],
    "an error that is not text": [5, 1, 0, 0, [1, 2, 3], 1, 2.0],
    "an error of the wrong length": [5, 1, 0, 0, ["a"], 1, 2.0],
    "too few fields": [4, 1, 0, 0, b"\xf6"],
    "a negative step number": [2, 1, 0, -5, "n", b"\x82\x80\xa0", 2.0],
    "a step number of 10**30": [2, 1, 0, 10**30, "n", b"\x82\x80\xa0", 2.0],
    "a negative process id": [17, 1, 0, 2.0, -1],
}


@pytest.mark.parametrize("payload", list(WRONG.values()), ids=list(WRONG))
def test_a_record_with_fields_of_the_wrong_types_is_corrupt(payload: list[Any]) -> None:
    data = _journal_with(payload)
    with pytest.raises(durable.JournalCorruptError) as caught:
        scan(data, "runs/r.journal")
    assert caught.value.offset == HEADER_SIZE + len(
        encode_record(RunStarted("r", "wf", b"\x82\x80\xa0", 1.0), 0, -1)
    )


def test_older_records_without_trailing_fields_and_int_times_still_read() -> None:
    # RunStarted before incarnation/first_seq, SignalReceived before message_id, an int time.
    data = encode_header()
    for index, fields in enumerate([[1, 0, -1, "r", "wf", b"\x82\x80\xa0", 7], [9, 1, 0, "s", b"\xf6", 8]]):
        body = cbor2.dumps(fields)
        length = struct.pack("<I", len(body))
        data += b"\xd5J" + length + struct.pack("<I", zlib.crc32(length + body)) + body
        assert index == fields[1]
    started, signal = scan(data, "j").events
    assert (started.t, started.incarnation, signal.message_id) == (7, 0, "")


@pytest.mark.postgres
def test_on_postgresql_a_too_large_result_fails_the_step_and_the_run_reads_back() -> None:
    import pgutil  # noqa: PLC0415 - only where PostgreSQL is wanted

    pgutil.require()

    async def main() -> None:
        store = pgutil.fresh_store()
        other = pgutil.store_on(store.schema)  # another process, re-attaching
        try:
            async with durable.Runtime(store) as runtime:
                first = await (await runtime.start(returns_poison, "huge bytes", id="p")).result()
            async with durable.Runtime(other) as runtime:
                again = await (await runtime.start(returns_poison, "huge bytes", id="p")).result()
        finally:
            await other.aclose()
            await store.aclose()
        assert first[:2] == again[:2] == ["durable.SerializationError", 1]

    trio.run(main)
    assert CALLS == ["huge bytes"]


# --- values inside sound records that do not decode -------------------------------------


async def _write_journal(store: durable.FileStore, events: list[Any]) -> None:
    writer = await store.create(events[0])
    assert writer is not None
    for event in events[1:]:
        writer.append(event)
    await writer.sync()
    writer.close()


FOREIGN_TAG = cbor2.dumps(cbor2.CBORTag(9999, 1))  # a tag the journal does not allow


async def test_a_finished_run_whose_result_does_not_decode_is_that_runs_journal_corrupt_error(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    store = durable.FileStore(tmp_path)
    await _write_journal(
        store,
        [
            RunStarted("bad", "tests.limits.echo", encode_call((1,), {}, what="x"), 1.0),
            durable.lowlevel.RunCompleted(FOREIGN_TAG, 2.0),
        ],
    )
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(echo, 1, id="bad")
        with pytest.raises(durable.JournalCorruptError, match=r"run 'bad'.*result: cannot be decoded.*9999"):
            await handle.result()
    with pytest.raises(durable.JournalCorruptError, match="run 'bad'"):
        await (await durable.Client(store).start(echo, 1, id="bad")).result()


@durable.workflow(name="tests.limits.one_step")
def one_step():  # type: ignore[no-untyped-def]
    return (yield takes(1))


@pytest.mark.parametrize(
    "events",
    [
        [
            RunStarted("v", "tests.limits.one_step", b"\x82\x80\xa0", 1.0),
            ActivityScheduled(0, "takes", b"\x82\x81\x01\xa0", 1.0),
            ActivityCompleted(0, FOREIGN_TAG, 1, 2.0),
        ],
        [RunStarted("v", "tests.limits.one_step", FOREIGN_TAG, 1.0)],
        [RunStarted("v", "tests.limits.one_step", cbor2.dumps({"not": "a call"}), 1.0)],
    ],
    ids=["a step's result", "the run's arguments", "arguments that are not a call"],
)
async def test_replaying_a_value_that_does_not_decode_stops_with_journal_corrupt_error(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, events: list[Any]
) -> None:
    store = durable.FileStore(tmp_path)
    await _write_journal(store, events)
    async with durable.Runtime(store) as runtime:
        [handle] = await runtime.recover()
        with pytest.raises(durable.JournalCorruptError, match="run 'v'"):
            await handle.result()
    assert CALLS == []  # nothing was executed


async def test_a_name_the_journal_cannot_encode_is_refused_before_anything_is_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(waits, id="w")
        with pytest.raises(durable.SerializationError, match="SignalReceived record cannot be encoded"):
            await runtime.signal("w", "data\udce9", "x")
        with pytest.raises(durable.SerializationError, match="CancelRequested record cannot be encoded"):
            await runtime.cancel("w", "because \udce9")
        await runtime.signal("w", "data", "fine")
        assert await handle.result() == "fine"


def test_a_key_value_dsn_is_a_postgres_store_for_the_library_too(tmp_path: Path, monkeypatch: Any) -> None:
    from durable._store_from import store_from  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    store = store_from("host=127.0.0.1 dbname=test password=secret")
    assert isinstance(store, durable.PostgresStore)
    monkeypatch.setenv("DURABLE_STORE", "host=127.0.0.1 dbname=test password=secret")
    assert isinstance(store_from(None), durable.PostgresStore)
    assert list(tmp_path.iterdir()) == []  # no directory named after the password


# --- from the adversarial review: values whose repr or str raise -------------------------


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr boom")

    def __hash__(self) -> int:
        return 1


class _LoudStr(str):
    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        raise RuntimeError("encode boom")


class _StrSubclassMessage(Exception):
    def __str__(self) -> str:
        return _LoudStr("hello")


@pytest.mark.parametrize(
    "make",
    [lambda: {10**5000: object()}, lambda: {_BadRepr(): object()}, lambda: [1, _BadRepr()]],
    ids=["an int key too large to print", "a key whose repr raises", "an item whose repr raises"],
)
def test_a_value_whose_parts_cannot_be_shown_is_still_a_serialization_error(make: Any) -> None:
    with pytest.raises(durable.SerializationError, match="cannot be stored in the journal"):
        encode_value(make(), what="the result of activity 'x'")
    with pytest.raises(durable.SerializationError):
        encode_call((make(),), {}, what="workflow 'x'")


def test_an_exception_whose_str_is_a_str_subclass_is_journaled_as_plain_text() -> None:
    info = ErrorInfo.from_exception(_StrSubclassMessage())
    assert info.message == "hello" and type(info.message) is str


@pytest.mark.parametrize("store_kind", ["memory", "file"])
async def test_a_run_whose_first_record_is_refused_leaves_no_trace_and_no_lock(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, store_kind: str
) -> None:
    store = durable.MemoryStore() if store_kind == "memory" else durable.FileStore(tmp_path)
    badly_named = RunStarted("r", "w\udcff", b"\x82\x80\xa0", 1.0)
    for _ in range(2):  # the second try meets no lock and no half-made run
        with pytest.raises(durable.SerializationError):
            await store.create(badly_named)
    assert await store.run_ids() == []
    writer = await store.create(RunStarted("r", "w", b"\x82\x80\xa0", 1.0))
    assert writer is not None
    writer.close()


def test_names_too_long_or_not_text_are_refused_at_decoration() -> None:
    with pytest.raises(ValueError, match="at most 1,000"):
        durable.activity(name="a" * 2_000_000)(lambda: None)
    with pytest.raises(ValueError, match="lone surrogate"):

        @durable.workflow(name="w\udcff")
        def bad():  # type: ignore[no-untyped-def]
            yield durable.sleep(0)

    def produce() -> int:
        return 1

    produce.__qualname__ = "p" * 2_000_000
    with pytest.raises(ValueError, match="at most 1,000"):
        durable.side_effect(produce)


def test_the_nesting_limit_is_the_decoders_400_levels_for_a_value_and_398_for_a_call() -> None:
    # cbor2 decodes up to its max_depth of 400 (plus the innermost container).
    encode_value(_nested(400), what="x")
    with pytest.raises(durable.SerializationError, match="at most 400 levels"):
        encode_value(_nested(401), what="x")
    encode_call((_nested(398),), {}, what="x")
    with pytest.raises(durable.SerializationError, match="398 for a call's arguments"):
        encode_call((_nested(399),), {}, what="x")


@pytest.mark.parametrize(
    ("run_id", "says"),
    [("x" * 201, "201 characters long; a run id has at most 200"), ("a\x00b", "holds a NUL character")],
)
def test_a_bad_run_id_says_which_rule_it_breaks(run_id: str, says: str) -> None:
    from durable._core.ids import check_run_id  # noqa: PLC0415

    with pytest.raises(ValueError, match=says):
        check_run_id(run_id)
