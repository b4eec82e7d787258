"""Workflow primitives: durable timers, recorded values, side effects, versioning markers.

Every timer test runs on MockClock (no test sleeps in wall time); crash safety is
checked with the simulator.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
import trio
import trio.testing

import durable
import sim
from durable.lowlevel import PatchRecorded, SideEffectRecorded, TimerFired, TimerStarted

CALLS: list[str] = []


@durable.activity
async def act(label: str) -> str:
    CALLS.append(label)
    return f"did {label}"


@durable.workflow
def napper(seconds: float):  # type: ignore[no-untyped-def]
    yield durable.sleep(seconds)
    return (yield act("after the nap"))


@durable.workflow
def recorder():  # type: ignore[no-untyped-def]
    when = yield durable.now()
    number = yield durable.random()
    ident = yield durable.uuid4()
    doubled = yield durable.side_effect(lambda x: x * 2, 21)
    return [when.isoformat(), number, str(ident), doubled]


def counted(x: int) -> int:
    CALLS.append(f"side effect {x}")
    return x + 1


@durable.workflow
def effectful():  # type: ignore[no-untyped-def]
    value = yield durable.side_effect(counted, 1)
    yield act(str(value))
    return value


@durable.workflow(name="tests.versioned")
def versioned_old():  # type: ignore[no-untyped-def]
    a = yield act("one")
    b = yield act("old two")
    return [a, b]


@durable.workflow(name="tests.versioned")
def versioned_new():  # type: ignore[no-untyped-def]
    a = yield act("one")
    if (yield durable.patched("new-two")):
        b = yield act("new two")
    else:
        b = yield act("old two")
    return [a, b]


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


async def run_in(store: durable.Store, workflow: Any, *args: Any, run_id: str = "r") -> Any:
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(workflow, *args, id=run_id)
        return await handle.result()


# --- sleep ----------------------------------------------------------------------------


async def test_sleep_waits_its_duration_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    started = trio.current_time()
    assert await run_in(durable.MemoryStore(), napper, 3600) == "did after the nap"
    assert trio.current_time() - started == pytest.approx(3600)


async def test_sleep_journals_its_deadline_as_wall_clock_time(autojump_clock: trio.testing.MockClock) -> None:
    store = durable.MemoryStore()
    await run_in(store, napper, 90)
    events = await store.read("r")
    assert events is not None
    timer = next(e for e in events if isinstance(e, TimerStarted))
    fired = next(e for e in events if isinstance(e, TimerFired))
    assert timer.seconds == 90
    assert timer.fire_at == pytest.approx(timer.t + 90)
    assert fired.t == pytest.approx(timer.fire_at)


async def test_a_process_restarted_during_a_sleep_waits_only_what_is_left(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    store = durable.FileStore(tmp_path)
    async with durable.Runtime(store) as runtime:
        await runtime.start(napper, 3600, id="r")
        await trio.sleep(1200)  # the process dies 20 minutes into the hour
    restarted_at = trio.current_time()
    assert await run_in(durable.FileStore(tmp_path), napper, 3600) == "did after the nap"
    assert trio.current_time() - restarted_at == pytest.approx(2400)
    assert CALLS == ["after the nap"]


async def test_a_restart_after_the_deadline_does_not_wait(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.start(napper, 60, id="r")
        await trio.sleep(10)
    await trio.sleep(3600)  # down for an hour
    restarted_at = trio.current_time()
    await run_in(durable.FileStore(tmp_path), napper, 60)
    assert trio.current_time() == restarted_at


@pytest.mark.parametrize("bad", ["-1s", -5, "3 parsecs", None, True])
def test_sleep_refuses_what_is_not_a_duration(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="sleep duration"):
        durable.sleep(bad)


# --- recorded values ------------------------------------------------------------------


async def test_now_random_uuid4_and_side_effect_give_values_of_their_kind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    when, number, ident, doubled = await run_in(durable.MemoryStore(), recorder)
    assert datetime.datetime.fromisoformat(when).tzinfo is not None
    assert 0 <= number < 1
    assert uuid.UUID(ident).version == 4
    assert doubled == 42


async def test_recorded_values_are_replayed_not_drawn_again(autojump_clock: trio.testing.MockClock) -> None:
    store = durable.MemoryStore()
    first = await run_in(store, recorder)
    events = await store.read("r")
    assert events is not None
    names = [e.name for e in events if isinstance(e, SideEffectRecorded)]
    assert names[:3] == ["durable.now", "durable.random", "durable.uuid4"]
    assert names[3].endswith("<lambda>")
    # Replaying the journal through the pure core gives back the recorded values.
    core = durable.lowlevel.Replay(recorder, events[0])  # type: ignore[arg-type]
    for event in events[1:]:
        core.apply(event)
    assert isinstance(core.outcome, durable.lowlevel.Returned)
    assert durable.lowlevel.loads_value(core.outcome.result) == first


async def test_a_side_effect_runs_once_even_when_the_run_resumes(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    assert await run_in(durable.FileStore(tmp_path), effectful) == 2
    assert await run_in(durable.FileStore(tmp_path), effectful) == 2
    assert CALLS == ["side effect 1", "2"]


async def test_a_side_effect_that_raises_raises_at_its_yield_every_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def broken() -> int:
        raise LookupError("no such key")

    @durable.workflow
    def catches():  # type: ignore[no-untyped-def]
        try:
            yield durable.side_effect(broken)
        except durable.ActivityError as error:
            return error.type_name
        return "no error"

    store = durable.MemoryStore()
    assert await run_in(store, catches) == "LookupError"
    events = await store.read("r")
    assert events is not None
    recorded = next(e for e in events if isinstance(e, SideEffectRecorded))
    assert recorded.error is not None and recorded.error.type == "LookupError"


def test_side_effect_refuses_what_cannot_be_called_or_journaled() -> None:
    with pytest.raises(TypeError, match="needs a function"):
        durable.side_effect(42)  # type: ignore[arg-type]
    with pytest.raises(durable.SerializationError, match="argument 1"):
        durable.side_effect(print, object())


# --- patched --------------------------------------------------------------------------


async def test_patched_is_true_for_a_new_run(autojump_clock: trio.testing.MockClock) -> None:
    store = durable.MemoryStore()
    assert await run_in(store, versioned_new) == ["did one", "did new two"]
    events = await store.read("r")
    assert events is not None
    assert next(e for e in events if isinstance(e, PatchRecorded)).change_id == "new-two"


async def test_patched_is_false_for_a_run_whose_journal_went_past_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An old run, started before the change, finished its second step the old way...
    store = durable.MemoryStore()
    await run_in(store, versioned_old)
    # ... and replays through the old path under the new code.
    events = await store.read("r")
    assert events is not None
    core = durable.lowlevel.Replay(versioned_new, events[0])  # type: ignore[arg-type]
    for event in events[1:]:
        core.apply(event)
    assert isinstance(core.outcome, durable.lowlevel.Returned)
    assert durable.lowlevel.loads_value(core.outcome.result) == ["did one", "did old two"]


async def test_a_resumed_run_past_the_end_of_its_journal_takes_the_new_path(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An old run stopped right after its first step completed: its journal ends
    # before the patch point, so the resumed run reaches it live.
    old = durable.MemoryStore()
    await run_in(old, versioned_old)
    events = await old.read("r")
    assert events is not None
    cut = durable.MemoryStore()
    cut.journals["r"] = bytearray(
        durable.lowlevel.encode_header()
        + b"".join(durable.lowlevel.encode_record(e, i, i) for i, e in enumerate(events[:3]))
    )
    CALLS.clear()
    assert await run_in(cut, versioned_new) == ["did one", "did new two"]
    assert CALLS == ["new two"]


async def test_a_run_that_went_past_the_patch_point_keeps_the_old_path_when_it_resumes(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    release = trio.Event()

    @durable.activity
    async def slow(label: str) -> str:
        await release.wait()
        return label

    @durable.workflow(name="tests.deploy")
    def before():  # type: ignore[no-untyped-def]
        yield act("one")
        return (yield slow("x"))

    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.start(before, id="r")
        await trio.sleep(1)  # dies while step 1 is in flight; then the new code is deployed

    @durable.workflow(name="tests.deploy")
    def after():  # type: ignore[no-untyped-def]
        yield act("one")
        if (yield durable.patched("drop-slow")):
            return "new path"
        return (yield slow("x"))

    release.set()
    assert await run_in(durable.FileStore(tmp_path), after) == "x"
    assert CALLS == ["one"]


def test_patched_needs_a_change_id() -> None:
    with pytest.raises(TypeError, match="change id"):
        durable.patched("")
    with pytest.raises(TypeError, match="change id"):
        durable.patched(3)  # type: ignore[arg-type]


# --- under crashes ----------------------------------------------------------------------


def test_every_primitive_survives_every_single_and_double_crash() -> None:
    @durable.workflow(name="tests.all_primitives")
    def everything():  # type: ignore[no-untyped-def]
        started = yield durable.now()
        token = yield durable.uuid4()
        yield durable.sleep("2h")
        if (yield durable.patched("v2")):
            yield act(str(token))
        later = yield durable.now()
        return round((later - started).total_seconds())

    report = sim.Simulator(hash_seeds=()).explore(everything)
    assert report.ok, report.failure_text()
    assert report.result >= 7200
    assert report.schedules > report.crash_points / 2


def test_a_value_recorded_before_an_activity_is_durable_before_it_runs() -> None:
    seen: list[float] = []

    @durable.activity
    def use(value: float) -> None:
        seen.append(value)

    @durable.workflow(name="tests.random_then_activity")
    def draws():  # type: ignore[no-untyped-def]
        value = yield durable.random()
        yield use(value)
        return value

    report = sim.Simulator(
        hash_seeds=(),
        before_each=seen.clear,
        after_each=lambda: None if len(set(seen)) <= 1 else f"use() saw different values: {seen}",
    ).explore(draws)
    assert report.ok, report.failure_text()
