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
