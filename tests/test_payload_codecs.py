"""Payload codecs (SPEC section 9, journal contract v1 section 8.2): ``codec=`` on every store.

A store seals every payload it writes (arguments, results, side-effect values,
signal payloads, continue-as-new arguments, child calls) and unseals what it
reads; names, ids, times and errors stay clear. These tests run a workflow that
writes every kind of payload on each store, look at the raw journal bytes,
rotate keys, crash and resume, and check the errors: a missing codec, a wrong
key, tampered bytes, a codec that is not one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pgutil
import pytest
import trio
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import durable
import sim
from durable import lowlevel
from durable._cli import main
from durable._core import payloads as pl
from durable._loader import load_module
from durable.codecs import AesGcm, Zlib
from durable.lowlevel import scan

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(32, 64))
SECRET = "card-4242-secret"

# --- a workflow that writes every kind of payload ---------------------------------------


@durable.activity
async def charge(card: str, cents: int) -> dict[str, Any]:
    return {"charged": cents, "card": card}


@durable.workflow
def receipt(card: str, cents: int):  # type: ignore[no-untyped-def]
    charged = yield charge(card, cents)
    return {"receipt": charged}


@durable.workflow
def checkout(card: str, cents: int, rounds: int = 1):  # type: ignore[no-untyped-def]
    token = yield durable.side_effect(lambda: f"{card}-token")
    done = yield receipt(card, cents)  # a child run: its arguments and result are payloads
    if rounds:
        yield durable.continue_as_new(card, cents, rounds=rounds - 1)
    approval = yield durable.wait_signal("approve", timeout="1h")
    return [token, done, approval]


EXPECTED = [f"{SECRET}-token", {"receipt": {"charged": 500, "card": SECRET}}, {"by": "carol"}]

STORES = ["memory", "file", "postgres"]


def make_store(kind: str, tmp_path: Path, codec: Any) -> Any:
    if kind == "memory":
        return durable.MemoryStore(codec=codec)
    if kind == "postgres":
        return pgutil.fresh_store(codec=codec)
    return durable.FileStore(tmp_path / "store", codec=codec)


def raw_journal(store: Any, run_id: str) -> bytes:
    """A run's journal as it is stored, payloads sealed."""
    if isinstance(store, durable.MemoryStore):
        return bytes(store.journals[run_id])
    if isinstance(store, durable.FileStore):
        return Path(store.journal_path(run_id)).read_bytes()
    return pgutil.journal_bytes(store, run_id)


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "postgres":
        pgutil.require()
    return kind


def encrypted() -> list[Any]:
    return [Zlib(), AesGcm({"k1": KEY_1})]


async def run_checkout(store: Any) -> tuple[Any, list[str]]:
    """Run checkout to its end (its signal sent while it waits); its result and run ids."""
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(checkout, SECRET, 500, id="order-1")
        while True:
            events = await store.read("order-1")
            if events and type(events[-1]).__name__ == "TimerStarted":
                break
            await trio.sleep(0.01)
        await runtime.signal("order-1", "approve", {"by": "carol"})
        return await handle.result(), await store.run_ids()


async def test_every_payload_is_sealed_on_every_store(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path, encrypted())
    try:
        result, run_ids = await run_checkout(store)
        assert result == EXPECTED
        assert len(run_ids) >= 2  # the run and its child
        for run_id in run_ids:
            data = raw_journal(store, run_id)
            assert SECRET.encode() not in data, f"{run_id}: a payload is in clear"
            sealed = [
                getattr(event, field)
                for event in scan(data, run_id).events
                for field in ("args", "result", "value", "payload")
                if isinstance(getattr(event, field, None), bytes)
            ]
            assert sealed and all(pl.is_sealed(payload) for payload in sealed)
            # Reading through the store gives the plain events back.
            events = await store.read(run_id)
            assert events is not None and not any(
                pl.is_sealed(getattr(e, f))
                for e in events
                for f in ("args", "result", "value", "payload")
                if isinstance(getattr(e, f, None), bytes)
            )
        # Names stay clear: the tools list runs without the key.
        assert b"approve" in raw_journal(store, "order-1")
    finally:
        await store.aclose()


async def test_a_waiting_run_resumes_in_a_new_runtime_with_the_codec(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path, encrypted())
    try:
        async with durable.Runtime(store) as runtime:
            await runtime.start(checkout, SECRET, 500, rounds=0, id="order-1")
            while not (events := await store.read("order-1")) or type(events[-1]).__name__ != "TimerStarted":
                await trio.sleep(0.01)
        # "crash": the runtime is gone; a new one (another process) recovers the run.
        async with durable.Runtime(store) as runtime:
            await runtime.signal("order-1", "approve", {"by": "carol"})
            handle = await runtime.start(checkout, SECRET, 500, rounds=0, id="order-1")
            assert await handle.result() == EXPECTED
    finally:
        await store.aclose()


async def test_a_signal_posted_to_a_held_run_waits_sealed_in_the_inbox(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store", codec=encrypted())
    async with durable.Runtime(store) as runtime:
        await runtime.start(checkout, SECRET, 500, rounds=0, id="order-1")
    await store.post("order-1", lowlevel.SignalReceived("approve", b"\xa1bbyfcarol2", 0.0, message_id="m-1"))
    inbox = [path for path in (tmp_path / "store").rglob("*") if path.is_file() and "inbox" in str(path)]
    assert inbox and all(b"carol2" not in path.read_bytes() for path in inbox)
    [message] = await store.messages("order-1")
    assert isinstance(message, lowlevel.SignalReceived) and message.payload == b"\xa1bbyfcarol2"


# --- reading without the codec, with another key, after rotation ------------------------


def test_without_the_codec_a_run_is_refused_clearly_and_nothing_is_written(tmp_path: Path) -> None:
    durable.run(receipt, SECRET, 5, id="r-1", store=durable.FileStore(tmp_path, codec=encrypted()))
    before = Path(durable.FileStore(tmp_path).journal_path("r-1")).read_bytes()
    with pytest.raises(durable.PayloadCodecError, match=r"encoded by 'zlib\+aes-gcm'.*codec=") as failed:
        durable.run(receipt, SECRET, 5, id="r-1", store=durable.FileStore(tmp_path))
    assert failed.value.run_id == "r-1" and failed.value.codec == "zlib+aes-gcm"
    assert Path(durable.FileStore(tmp_path).journal_path("r-1")).read_bytes() == before
    # A tool shows each payload as encoded, never garbage.
    events = trio.run(durable.FileStore(tmp_path).read, "r-1")
    assert events is not None
    assert repr(lowlevel.loads_shown(events[0].args)) == "<encoded by zlib+aes-gcm>"


def test_a_wrong_key_fails_authentication_and_an_unknown_key_id_is_named(tmp_path: Path) -> None:
    durable.run(receipt, SECRET, 5, id="r-1", store=durable.FileStore(tmp_path, codec=encrypted()))
    wrong = durable.FileStore(tmp_path, codec=[Zlib(), AesGcm({"k1": KEY_2})])
    with pytest.raises(durable.PayloadCodecError, match="authentication failed with the key 'k1'"):
        trio.run(wrong.read, "r-1")
    other = durable.FileStore(tmp_path, codec=[Zlib(), AesGcm({"k2": KEY_2})])
    with pytest.raises(durable.PayloadCodecError, match=r"encrypted with the key 'k1'.*add that key"):
        trio.run(other.read, "r-1")
    no_zlib = durable.FileStore(tmp_path, codec=AesGcm({"k1": KEY_1}))
    with pytest.raises(durable.PayloadCodecError, match="add a codec named 'zlib'"):
        trio.run(no_zlib.read, "r-1")


async def test_keys_rotate_old_payloads_still_read_and_new_ones_use_the_current_key(tmp_path: Path) -> None:
    first = durable.FileStore(tmp_path, codec=[AesGcm({"k1": KEY_1})])
    async with durable.Runtime(first) as runtime:
        await runtime.start(checkout, SECRET, 500, rounds=0, id="order-1")
        while not (events := await first.read("order-1")) or type(events[-1]).__name__ != "TimerStarted":
            await trio.sleep(0.01)
    rotated = durable.FileStore(tmp_path, codec=[AesGcm({"k1": KEY_1, "k2": KEY_2}, current="k2")])
    async with durable.Runtime(rotated) as runtime:
        await runtime.signal("order-1", "approve", {"by": "carol"})
        handle = await runtime.start(checkout, SECRET, 500, rounds=0, id="order-1")
        assert await handle.result() == EXPECTED
    raw = scan(Path(rotated.journal_path("order-1")).read_bytes(), "order-1").events
    assert b"k1" in raw[0].args and b"k2" in raw[-1].result  # old key for old, new for new
    only_new = durable.FileStore(tmp_path, codec=[AesGcm({"k2": KEY_2})])
    with pytest.raises(durable.PayloadCodecError, match="'k1'"):
        await only_new.read("order-1")


async def test_a_codec_added_to_a_store_reads_its_plain_journals(tmp_path: Path) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.start(checkout, SECRET, 500, rounds=0, id="order-1")
    coded = durable.FileStore(tmp_path, codec=encrypted())
    async with durable.Runtime(coded) as runtime:
        await runtime.signal("order-1", "approve", {"by": "carol"})
        handle = await runtime.start(checkout, SECRET, 500, rounds=0, id="order-1")
        assert await handle.result() == EXPECTED
    raw = scan(Path(coded.journal_path("order-1")).read_bytes(), "order-1").events
    assert not pl.is_sealed(raw[0].args) and pl.is_sealed(raw[-1].result)


def test_a_tampered_payload_is_refused_never_misread(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path, codec=[AesGcm({"k1": KEY_1})])
    durable.run(receipt, SECRET, 5, id="r-1", store=store)
    path = Path(store.journal_path("r-1"))
    events = scan(path.read_bytes(), "r-1").events
    # Re-frame the journal with one ciphertext byte flipped: the record checksums are
    # right, so only the codec's authentication can tell.
    result = bytearray(events[-1].result)
    result[-1] ^= 1
    forged = [*events[:-1], lowlevel.RunCompleted(bytes(result), events[-1].t)]
    records = b"".join(lowlevel.encode_record(e, at, at) for at, e in enumerate(forged))
    path.write_bytes(lowlevel.encode_header() + records)
    with pytest.raises(durable.PayloadCodecError, match="authentication failed"):
        trio.run(store.read, "r-1")


# --- the codec objects ---------------------------------------------------------------------


class Upper:
    """A codec of the user's own (not reversible on purpose where the test says)."""

    name = "swap"

    def encode(self, data: bytes) -> bytes:
        return data[::-1]

    def decode(self, data: bytes) -> bytes:
        return data[::-1]


def test_any_object_with_a_name_encode_and_decode_is_a_codec(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path, codec=[Upper(), Zlib(level=9)])
    result = durable.run(receipt, SECRET, 5, id="r-1", store=store)
    assert result == {"receipt": {"charged": 5, "card": SECRET}}
    assert isinstance(Upper(), lowlevel.PayloadCodec)
    assert "codec='swap+zlib'" in repr(store)


@pytest.mark.parametrize(
    ("codec", "error", "match"),
    [
        (object(), TypeError, "non-empty `name`"),
        ([Zlib(), Zlib()], ValueError, "'zlib' twice"),
        ("zlib", TypeError, "non-empty `name`"),
    ],
)
def test_what_is_not_a_codec_is_refused_when_the_store_is_made(codec: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        durable.MemoryStore(codec=codec)


class Broken:
    name = "broken"

    def encode(self, data: bytes) -> str:
        return "not bytes"

    def decode(self, data: bytes) -> bytes:
        return data


def test_a_codec_that_fails_to_encode_stops_the_start_before_the_run_exists(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path, codec=Broken())
    with pytest.raises(durable.PayloadCodecError, match=r"'broken'.encode returned str, not bytes"):
        durable.run(receipt, SECRET, 5, id="r-1", store=store)
    assert trio.run(durable.FileStore(tmp_path).run_ids) == []


def test_zlib_refuses_a_decompression_bomb_and_truncated_data() -> None:
    bomb = Zlib(level=9).encode(b"\0" * (70 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="more than"):
        Zlib().decode(bomb)
    with pytest.raises(ValueError, match="truncated"):
        Zlib().decode(Zlib().encode(b"x" * 1000)[:-2])
    with pytest.raises(ValueError, match="unknown layout"):
        Zlib().decode(b"\x07abc")
    with pytest.raises(ValueError, match="level"):
        Zlib(level=10)


def test_zlib_stores_short_or_incompressible_payloads_as_they_are() -> None:
    codec = Zlib()
    assert codec.encode(b"short") == b"\x00short"
    noise = os.urandom(4096)
    assert codec.encode(noise) == b"\x00" + noise
    text = b"leave it at the door " * 50
    packed = codec.encode(text)
    assert packed[0] == 1 and len(packed) < len(text) / 5
    for data in (b"", b"short", noise, text):
        assert codec.decode(codec.encode(data)) == data


def test_aes_gcm_checks_its_keys_and_never_shows_them() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        AesGcm({"k": b"short"})
    with pytest.raises(ValueError, match="say which one encrypts"):
        AesGcm({"a": KEY_1, "b": KEY_2})
    with pytest.raises(ValueError, match="not one of the key ids"):
        AesGcm({"a": KEY_1}, current="b")
    codec = AesGcm({"a": KEY_1, "b": KEY_2}, current="b")
    assert KEY_1.hex() not in repr(codec) and repr(KEY_1) not in repr(codec)
    assert len(AesGcm.generate_key()) == 32
    # A fresh nonce each time: the same payload never encrypts to the same bytes.
    assert codec.encode(b"same") != codec.encode(b"same")


@given(
    data=st.binary(max_size=2048),
    chain=st.lists(st.sampled_from(["zlib", "aes", "swap"]), min_size=1, max_size=3, unique=True),
)
def test_sealing_then_unsealing_gives_the_payload_back(data: bytes, chain: list[str]) -> None:
    made = {"zlib": Zlib(), "aes": AesGcm({"k": KEY_1}), "swap": Upper()}
    payloads = pl.payloads_from([made[name] for name in chain])
    assert payloads is not None
    sealed = payloads.seal_bytes(data)
    assert pl.is_sealed(sealed)
    assert payloads.unseal_bytes(sealed, "r") == data
    # Unsealing a plain payload leaves it as it is (a journal written before the codec);
    # random bytes that happen to begin like a sealed payload are not plain.
    if not pl.is_sealed(data):
        event = lowlevel.ActivityCompleted(0, data, 1, 0.0)
        assert payloads.unseal(event, "r") == event


# --- the simulator -------------------------------------------------------------------------


def test_the_simulator_explores_with_a_codec() -> None:
    report = sim.Simulator(codec=encrypted(), hash_seeds=(1,)).explore(receipt, SECRET, 5, max_crashes=1)
    assert report.ok, report.explain()
    assert report.schedules > 1


def test_the_simulator_refuses_what_is_not_a_codec() -> None:
    with pytest.raises(TypeError, match="codec="):
        sim.Simulator(codec=object())


def test_the_aes_gcm_key_is_never_needed_to_list_runs(tmp_path: Path) -> None:
    durable.run(receipt, SECRET, 5, id="r-1", store=durable.FileStore(tmp_path, codec=encrypted()))
    assert trio.run(durable.FileStore(tmp_path).run_ids) == ["r-1"]
    assert os.path.exists(durable.FileStore(tmp_path).journal_path("r-1"))


# --- the command line: --codec ------------------------------------------------------------

CODEC_MODULE = """
from durable.codecs import AesGcm, Zlib

codec = [Zlib(), AesGcm({"k1": bytes(range(32))})]
wrong = [Zlib(), AesGcm({"k1": bytes(32)})]
"""

WORKFLOW_MODULE = """
import durable

@durable.activity(name="cli.charge")
def charge(card: str, cents: int) -> dict:
    return {"charged": cents, "card": card}

@durable.workflow(name="cli.receipt")
def receipt(card: str, cents: int):
    charged = yield charge(card, cents)
    approval = yield durable.wait_signal("approve", timeout="1h")
    return {"receipt": charged, "approval": approval}
"""


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    (tmp_path / "codecmod.py").write_text(CODEC_MODULE)
    (tmp_path / "cliflows.py").write_text(WORKFLOW_MODULE)
    store = str(tmp_path / "store")

    def invoke(*args: str, codec: str | None = "codec") -> Any:
        more = ["--store", store] + ([] if codec is None else ["--codec", f"{tmp_path}/codecmod.py:{codec}"])
        return CliRunner().invoke(main, [*args, *more], catch_exceptions=False)

    invoke.flows = str(tmp_path / "cliflows.py")  # type: ignore[attr-defined]
    invoke.store = store  # type: ignore[attr-defined]
    return invoke


def _start_waiting(cli: Any) -> None:
    """Start cli.receipt with the codec; it waits for its signal when this returns."""
    flows = load_module(cli.flows)
    codec = load_module(cli.flows.replace("cliflows", "codecmod")).codec

    async def start() -> None:
        store = durable.FileStore(cli.store, codec=codec)
        async with durable.Runtime(store) as runtime:
            await runtime.start(flows.receipt, SECRET, 5, id="r-1")
            while not (events := await store.read("r-1")) or type(events[-1]).__name__ != "TimerStarted":
                await trio.sleep(0.01)

    trio.run(start)


def test_signal_and_run_with_codec_then_show_with_and_without_it(cli: Any) -> None:
    _start_waiting(cli)
    sent = cli("signal", "r-1", "approve", "{'by': 'carol-the-approver'}")
    assert sent.exit_code == 0, sent.output
    resumed = cli("run", f"{cli.flows}:receipt", SECRET, "5", "--id", "r-1")
    assert resumed.exit_code == 0, resumed.output
    assert "carol-the-approver" in resumed.output
    raw = Path(durable.FileStore(cli.store).journal_path("r-1")).read_bytes()
    assert b"carol-the-approver" not in raw and SECRET.encode() not in raw

    plain = cli("show", "r-1", codec=None)
    assert plain.exit_code == 0, plain.output
    assert "<encoded by zlib+aes-gcm>" in plain.output and SECRET not in plain.output
    decoded = cli("show", "r-1")
    assert decoded.exit_code == 0 and SECRET in decoded.output and "encoded by" not in decoded.output
    as_json = cli("show", "r-1", "--json", codec=None)
    assert as_json.exit_code == 0 and "<encoded by zlib+aes-gcm>" in as_json.output
    listed = cli("ls", codec=None)
    assert listed.exit_code == 0 and "r-1" in listed.output and "completed" in listed.output


def test_a_wrong_key_on_the_command_line_shows_payloads_encoded_with_a_warning(cli: Any) -> None:
    _start_waiting(cli)
    shown = cli("show", "r-1", codec="wrong")
    assert shown.exit_code == 0
    assert "<encoded by zlib+aes-gcm>" in shown.output
    assert "payloads left encoded" in shown.output and "authentication failed" in shown.output


def test_replay_and_sim_take_the_codec(cli: Any) -> None:
    _start_waiting(cli)
    assert cli("replay", cli.flows).exit_code == 0
    without = cli("replay", cli.flows, codec=None)
    assert without.exit_code == 1 and "zlib+aes-gcm" in without.output
    explored = cli("sim", f"{cli.flows}:receipt", "card", "5", "--crashes", "1", "--budget", "20")
    assert explored.exit_code == 0, explored.output


def test_a_codec_option_that_names_nothing_is_a_usage_error(cli: Any, tmp_path: Path) -> None:
    _start_waiting(cli)
    for spec, message in [
        ("nocolon", "MODULE:ATTR"),
        (f"{tmp_path}/codecmod.py:missing", "no attribute 'missing'"),
    ]:
        args = ["show", "r-1", "--store", cli.store, "--codec", spec]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 2 and message in result.output, result.output


def test_signal_without_the_codec_refuses_to_write_a_payload_in_clear(cli: Any) -> None:
    _start_waiting(cli)
    refused = cli("signal", "r-1", "approve", "{'code': 'IN-CLEAR'}", codec=None)
    assert refused.exit_code == 2
    assert "would be written in clear" in refused.output and "--codec" in refused.output
    inbox = Path(cli.store) / "inbox"
    assert not inbox.exists() or all(
        b"IN-CLEAR" not in p.read_bytes() for p in inbox.rglob("*") if p.is_file()
    )


def test_sim_reports_a_codec_option_that_names_nothing_as_a_usage_error(cli: Any) -> None:
    result = cli("sim", f"{cli.flows}:receipt", "card", "5", codec="missing")
    assert result.exit_code == 2 and "no attribute 'missing'" in result.output


def test_codec_errors_never_print_a_key_and_a_class_is_not_a_codec() -> None:
    key = bytes(range(32))
    with pytest.raises(TypeError) as refused:
        durable.MemoryStore(codec=key)  # type: ignore[arg-type]
    assert repr(key) not in str(refused.value) and "got a bytes" in str(refused.value)
    with pytest.raises(TypeError, match=r"pass Zlib\(\), not Zlib"):
        durable.MemoryStore(codec=Zlib)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"AesGcm\(\{'2026-12': key\}\)"):
        AesGcm(key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"bytes.fromhex"):
        AesGcm({"k": key.hex()})  # type: ignore[dict-item]
