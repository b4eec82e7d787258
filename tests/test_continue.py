"""durable.continue_as_new: a fresh journal under the same run id, the handle following the chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import durable
import sim
from durable.lowlevel import RunContinuedAsNew, RunStarted

KEYS: list[str] = []


@durable.activity
async def tick(n: int) -> int:
    KEYS.append(durable.activity_info().idempotency_key)
    return n + 1


@durable.workflow(name="tests.continue.counter")
def counter(n: int, limit: int):  # type: ignore[no-untyped-def]
    for _ in range(3):
        n = yield tick(n)
    if n < limit:
        yield durable.continue_as_new(n, limit)
    return n


@pytest.fixture(autouse=True)
def _clear() -> None:
    KEYS.clear()


async def test_the_handle_follows_the_chain_to_the_last_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        handle = await runtime.start(counter, 0, 10, id="c")
        assert await handle.result() == 12


async def test_each_incarnation_keeps_a_fresh_bounded_journal(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    store = durable.FileStore(tmp_path)
    async with durable.Runtime(store) as runtime:
        await (await runtime.start(counter, 0, 30, id="c")).result()
    events = await store.read("c")
    assert events is not None
    assert len(events) == 8  # RunStarted, three steps, RunCompleted: not 10 incarnations' worth
    first = events[0]
    assert isinstance(first, RunStarted)
    assert (first.incarnation, first.first_seq) == (9, 27)
    assert not list((tmp_path / "runs").glob("*.next"))


async def test_step_numbers_and_idempotency_keys_go_on_across_incarnations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        await (await runtime.start(counter, 0, 6, id="k")).result()
    assert [f"k/{seq}" for seq in range(6)] == KEYS


async def test_attaching_with_the_first_arguments_returns_the_final_result(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await (await runtime.start(counter, 0, 6, id="c")).result()
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        assert await (await runtime.start(counter, 0, 6, id="c")).result() == 6


class _CrashesBeforeTheSwap(durable.FileStore):
    async def restart(self, started: RunStarted, writer: durable.lowlevel.JournalWriter) -> Any:
        raise durable.StoreError("the process died before the fresh journal was in place")


async def test_a_crash_before_the_fresh_journal_is_in_place_continues_on_recovery(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with durable.Runtime(_CrashesBeforeTheSwap(tmp_path)) as runtime:
        handle = await runtime.start(counter, 0, 6, id="c")
        with pytest.raises(durable.StoreError):
            await handle.result()
    events = await durable.FileStore(tmp_path).read("c")
    assert events is not None and isinstance(events[-1], RunContinuedAsNew)
    KEYS.clear()
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        [handle] = await runtime.recover()
        assert await handle.result() == 6
    assert KEYS == ["c/3", "c/4", "c/5"]


def test_continue_as_new_refuses_unjournalable_arguments() -> None:
    with pytest.raises(durable.SerializationError, match="continue_as_new"):
        durable.continue_as_new(object())


def test_continue_as_new_survives_every_crash_including_the_journal_swap() -> None:
    report = sim.Simulator(hash_seeds=()).explore(counter, 0, 7, max_crashes=1)
    assert report.ok, report.failure_text()
    assert report.result == 9
    labels = [p.label for p in report.reference.lifetimes[0].points]
    assert any(label.startswith("before rename") for label in labels)


# --- messages the old incarnation never took carry over, exactly once -----------

GATE: dict[str, trio.Event] = {}


@durable.activity
async def wait_for_gate(name: str) -> None:
    await GATE[name].wait()


@durable.workflow(name="tests.continue.late_reader")
def late_reader(incarnation: int):  # type: ignore[no-untyped-def]
    """Incarnation 0 is busy while the signal comes; incarnation 1 waits for it."""
    if incarnation == 0:
        yield wait_for_gate("busy")
        yield durable.continue_as_new(1)
    first = yield durable.wait_signal("note", timeout="1h")
    second = yield durable.wait_signal("note", timeout="1h")
    return [first, second]


async def test_signals_sent_before_continue_as_new_are_delivered_after_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    GATE["busy"] = trio.Event()
    store = durable.FileStore(tmp_path)
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(late_reader, 0, id="r")
        await runtime.signal("r", "note", "one")
        await runtime.signal("r", "note", "two")
        GATE["busy"].set()
        assert await handle.result() == ["one", "two"]  # not SignalTimeout, in order
    events = await store.read("r")
    assert events is not None
    payloads = [e.payload for e in events if isinstance(e, durable.lowlevel.SignalReceived)]
    assert len(payloads) == 2  # each journaled once in the new incarnation
    assert not list((tmp_path / "inbox").glob("*.message"))


@durable.workflow(name="tests.continue.hands_over")
def hands_over(incarnation: int):  # type: ignore[no-untyped-def]
    if incarnation == 0:
        yield durable.continue_as_new(1)
    return (yield durable.wait_signal("note", timeout="1h"))


async def _journal_ending_in_continue_as_new(tmp_path: Path) -> None:
    """A run whose old incarnation is journaled up to RunContinuedAsNew, then the process
    died before the fresh journal was in place."""
    async with durable.Runtime(_CrashesBeforeTheSwap(tmp_path)) as runtime:
        handle = await runtime.start(hands_over, 0, id="h")
        with pytest.raises(durable.StoreError):
            await handle.result()


async def test_a_signal_journaled_after_continue_as_new_survives_the_crash_before_the_swap(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    await _journal_ending_in_continue_as_new(tmp_path)
    client = durable.Client(durable.FileStore(tmp_path))
    await client.signal("h", "note", "kept")  # nobody holds it: journaled in the old journal
    events = await durable.FileStore(tmp_path).read("h")
    assert events is not None and isinstance(events[-1], durable.lowlevel.SignalReceived)
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        [handle] = await runtime.recover()
        assert await handle.result() == "kept"


async def test_a_cancel_request_after_continue_as_new_cancels_the_next_incarnation(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    await _journal_ending_in_continue_as_new(tmp_path)
    await durable.Client(durable.FileStore(tmp_path)).cancel("h", "stop it")
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        [handle] = await runtime.recover()
        with pytest.raises(durable.Cancelled, match="stop it"):
            await handle.result()


class _CrashesAfterPosting(durable.FileStore):
    """Dies (once) after the carried messages are in the inbox, before the swap."""

    crashed = False

    async def restart(self, started: RunStarted, writer: durable.lowlevel.JournalWriter) -> Any:
        if not _CrashesAfterPosting.crashed:
            _CrashesAfterPosting.crashed = True
            raise durable.StoreError("the process died before the fresh journal was in place")
        return await super().restart(started, writer)


async def test_carried_messages_are_journaled_once_across_a_crash_after_posting_them(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    await _journal_ending_in_continue_as_new(tmp_path)
    await durable.Client(durable.FileStore(tmp_path)).signal("h", "note", "once")
    _CrashesAfterPosting.crashed = False
    async with durable.Runtime(_CrashesAfterPosting(tmp_path)) as runtime:
        [handle] = await runtime.recover()  # posts the carried signal, then dies
        with pytest.raises(durable.StoreError):
            await handle.result()
    assert list((tmp_path / "inbox").glob("*.message"))
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        [handle] = await runtime.recover()  # posts it again (a no-op), swaps, journals it once
        assert await handle.result() == "once"
    events = await durable.FileStore(tmp_path).read("h")
    assert events is not None
    assert sum(isinstance(e, durable.lowlevel.SignalReceived) for e in events) == 1
    assert not list((tmp_path / "inbox").glob("*.message"))


# --- one run's damaged message file keeps no other run from its messages ---------------


@durable.workflow(name="tests.continue.waits_for_note")
def waits_for_note():  # type: ignore[no-untyped-def]
    return (yield durable.wait_signal("note", timeout="1h"))


async def test_a_damaged_message_of_one_run_does_not_stop_the_others_messages(tmp_path: Path) -> None:
    others = [f"b{n}" for n in range(6)]
    async with durable.Runtime(durable.FileStore(tmp_path), poll=0.01) as runtime:
        handles = [await runtime.start(waits_for_note, id=run_id) for run_id in ["a", *others]]
        inbox = tmp_path / "inbox"
        inbox.mkdir(mode=0o700, exist_ok=True)
        (inbox / f"a.{0:020d}-deadbeef.message").write_bytes(b"not a message file")
        client = durable.Client(durable.FileStore(tmp_path))
        for run_id in others:
            await client.signal(run_id, "note", run_id)  # posted: the runtime holds the run
        with trio.fail_after(10):
            results = [await handle.result() for handle in handles[1:]]
        assert results == others
        await runtime.cancel("a")
