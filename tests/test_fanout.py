"""durable.gather and durable.race: concurrency, journal order, cancellation, replay, crashes."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import durable
import sim
from durable.lowlevel import ActivityCompleted, Replay, Returned, StepCancelled, loads_value

STARTED: list[str] = []
CANCELLED: list[str] = []


@durable.activity(retries=0)
async def work(label: str, seconds: float) -> str:
    STARTED.append(label)
    try:
        await trio.sleep(seconds)
    except trio.Cancelled:
        CANCELLED.append(label)
        raise
    if label.startswith("fail"):
        raise ValueError(f"{label} broke")
    return label.upper()


@pytest.fixture(autouse=True)
def _clear() -> None:
    STARTED.clear()
    CANCELLED.clear()


async def run_in(store: durable.Store, workflow: Any, *args: Any) -> Any:
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(workflow, *args, id="f")
        return await handle.result()


def replayed(events: list[Any], workflow: Any) -> Any:
    core = Replay(workflow, events[0])
    for event in events[1:]:
        core.apply(event)
    assert isinstance(core.outcome, Returned)
    return loads_value(core.outcome.result)


# --- gather ------------------------------------------------------------------------------


@durable.workflow(name="tests.fanout.gathers")
def gathers():  # type: ignore[no-untyped-def]
    return (yield durable.gather(work("a", 30), work("b", 10), work("c", 20)))


async def test_gather_runs_side_by_side_and_returns_results_in_argument_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    assert await run_in(durable.MemoryStore(), gathers) == ["A", "B", "C"]
    assert trio.current_time() - started == pytest.approx(30)  # not 60: they overlapped


async def test_gather_journals_completions_in_the_order_they_happened(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    await run_in(store, gathers)
    events = await store.read("f")
    assert events is not None
    assert [e.seq for e in events if isinstance(e, ActivityCompleted)] == [1, 2, 0]
    assert replayed(events, gathers) == ["A", "B", "C"]


@durable.workflow(name="tests.fanout.gather_fails")
def gather_fails():  # type: ignore[no-untyped-def]
    try:
        yield durable.gather(work("slow", 100), work("fail-fast", 5), work("fail-later", 10))
    except durable.ActivityError as error:
        return error.message
    return "no error"


async def test_the_first_failure_raises_and_the_others_are_cancelled_and_journaled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    assert await run_in(store, gather_fails) == "fail-fast broke"
    assert sorted(CANCELLED) == ["fail-later", "slow"]
    events = await store.read("f")
    assert events is not None
    assert sorted(e.seq for e in events if isinstance(e, StepCancelled)) == [0, 2]
    assert replayed(events, gather_fails) == "fail-fast broke"


async def test_gather_of_nothing_is_an_empty_list(autojump_clock: trio.testing.MockClock) -> None:
    @durable.workflow(name="tests.fanout.empty")
    def empty():  # type: ignore[no-untyped-def]
        return (yield durable.gather())

    assert await run_in(durable.MemoryStore(), empty) == []


# --- race --------------------------------------------------------------------------------


@durable.workflow(name="tests.fanout.races")
def races(timeout: str):  # type: ignore[no-untyped-def]
    index, result = yield durable.race(work("answer", 60), durable.sleep(timeout))
    return ["answered", result] if index == 0 else ["timed out", None]


async def test_race_returns_the_index_and_result_of_the_first_to_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    assert await run_in(durable.MemoryStore(), races, "2m") == ["answered", "ANSWER"]


async def test_race_against_a_timer_is_a_timeout_and_the_loser_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    started = trio.current_time()
    assert await run_in(store, races, "10s") == ["timed out", None]
    assert trio.current_time() - started == pytest.approx(10)
    assert CANCELLED == ["answer"]
    events = await store.read("f")
    assert events is not None
    assert [e.seq for e in events if isinstance(e, StepCancelled)] == [0]


async def test_the_winner_is_decided_once_in_the_journal_and_replay_honours_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    await run_in(durable.FileStore(tmp_path), races, "10s")
    STARTED.clear()
    # Attaching again (a new process) feeds the journaled winner; nothing runs again.
    assert await run_in(durable.FileStore(tmp_path), races, "10s") == ["timed out", None]
    assert STARTED == []


async def test_a_crash_before_the_race_was_decided_runs_it_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.start(races, "2m", id="f")
        await trio.sleep(30)  # dies with both contestants still running
    assert await run_in(durable.FileStore(tmp_path), races, "2m") == ["answered", "ANSWER"]
    assert STARTED == ["answer", "answer"]


# --- bad input ---------------------------------------------------------------------------


def test_gather_and_race_take_only_commands_that_can_run_side_by_side() -> None:
    with pytest.raises(TypeError, match="argument 2 is 42"):
        durable.gather(work("a", 1), 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="call it"):
        durable.gather(work)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot run in a gather"):
        durable.gather(durable.patched("x"))
    with pytest.raises(TypeError, match="cannot run in a race"):
        durable.race(durable.gather(work("a", 1)))
    with pytest.raises(TypeError, match="at least one"):
        durable.race()


# --- under the simulator -----------------------------------------------------------------


@durable.activity
async def fetch(key: str) -> str:
    return key.upper()


@durable.workflow(name="tests.fanout.fan")
def fan():  # type: ignore[no-untyped-def]
    got = yield durable.gather(fetch("a"), fetch("b"), fetch("c"))
    index, first = yield durable.race(fetch("x"), durable.sleep("1s"))
    return [got, index, first]


def test_gather_and_race_survive_every_crash_and_every_completion_order() -> None:
    report = sim.Simulator(hash_seeds=()).explore(fan)
    assert report.ok, report.failure_text()
    orders = list(report.explorer.order_recipes())
    assert len(orders) == 5  # 3! completion orders of the gather, less the reference's own


NOTED: list[str] = []


@durable.activity
async def note(label: str) -> str:
    NOTED.append(label)
    return label


@durable.workflow(name="tests.fanout.order_dependent")
def order_dependent():  # type: ignore[no-untyped-def]
    yield durable.gather(note("a"), note("b"))
    first = NOTED[-2]  # wrong on purpose: which finished first is not a journaled result
    yield note(f"after {first}")


def test_a_workflow_that_depends_on_completion_order_is_caught_with_a_recipe() -> None:
    report = sim.Simulator(hash_seeds=()).explore(order_dependent, max_crashes=1)
    assert not report.ok
    order_failures = [f for f in report.failures if f.recipe.order_seed is not None]
    assert order_failures
    assert "does not replay" in order_failures[0].divergence or "different" in order_failures[0].divergence
