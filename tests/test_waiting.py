"""Waiting costs nothing: a run that only waits is let go, and taken back by replay when due.

These tests drive a :class:`durable.Runtime` on a MemoryStore under trio's virtual
clock. What a worker process does with the same runs, on FileStore and PostgreSQL,
is in ``test_worker.py`` and ``test_postgres_workers.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio
import trio.testing

import durable
import sim
from durable.lowlevel import ActivityScheduled, RunResumed, TimerFired

CALLS: list[str] = []


@durable.activity
async def note(label: str) -> str:
    CALLS.append(label)
    return label


@durable.workflow(name="tests.waiting.reminder")
def reminder(name: str):  # type: ignore[no-untyped-def]
    yield note(f"hello {name}")
    yield durable.sleep("1h")
    return (yield note(f"reminded {name}"))


@durable.workflow(name="tests.waiting.approval")
def approval():  # type: ignore[no-untyped-def]
    yield note("asked")
    decision = yield durable.wait_signal("decision")
    return (yield note(f"decided {decision}"))


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()


def events_of(store: durable.MemoryStore, run_id: str) -> list[object]:
    return durable.lowlevel.scan(bytes(store.journals[run_id]), run_id).events


async def test_a_sleeping_run_is_let_go_and_taken_back_by_replay_when_its_time_comes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(reminder, "ada", id="r")
        await trio.sleep(60)
        assert runtime.running == 0  # no execution, no generator: only the journal
        fired_at = next(e.fire_at for e in events_of(store, "r") if hasattr(e, "fire_at"))
        assert store.due["r"] == fired_at
        assert await handle.result() == "reminded ada"
    assert trio.current_time() == pytest.approx(3600, abs=0.01)
    assert CALLS == ["hello ada", "reminded ada"]  # the first activity was not run again
    kinds = [type(e) for e in events_of(store, "r")]
    assert kinds.count(RunResumed) == 1 and kinds.count(TimerFired) == 1
    assert "r" not in store.due  # ended: due never again


async def test_a_run_waiting_for_a_signal_is_let_go_and_the_signal_brings_it_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(approval, id="a")
        await trio.sleep(3600 * 24)
        assert runtime.running == 0
        assert store.due["a"] == math.inf  # only a message wakes it
        begin = trio.current_time()
        await runtime.signal("a", "decision", "yes")
        assert await handle.result() == "decided yes"
        assert trio.current_time() - begin < 1  # at once: no wait for a poll or a timer
    assert CALLS == ["asked", "decided yes"]


async def test_a_retry_backoff_lets_the_run_go_until_the_next_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []

    @durable.activity(retries=1, initial_backoff="10m", max_backoff="1h")
    async def flaky() -> str:
        attempts.append(trio.current_time())
        if len(attempts) == 1:
            raise ConnectionError("down")
        return "up"

    @durable.workflow(name="tests.waiting.backoff")
    def backoff():  # type: ignore[no-untyped-def]
        return (yield flaky())

    store = durable.MemoryStore()
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(backoff, id="b")
        await trio.sleep(60)
        assert runtime.running == 0  # let go during the backoff
        assert await handle.result() == "up"
    assert attempts[1] - attempts[0] == pytest.approx(600, abs=0.01)


async def test_a_gather_of_timers_is_let_go_until_the_earliest_and_ends_after_the_last(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @durable.workflow(name="tests.waiting.timers")
    def timers():  # type: ignore[no-untyped-def]
        yield durable.gather(durable.sleep("1h"), durable.sleep("2h"))
        return "both"

    store = durable.MemoryStore()
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(timers, id="t")
        await trio.sleep(60)
        assert runtime.running == 0
        deadlines = [e.fire_at for e in events_of(store, "t") if hasattr(e, "fire_at")]
        assert store.due["t"] == pytest.approx(min(deadlines))
        assert await handle.result() == "both"
    assert trio.current_time() == pytest.approx(7200, abs=0.01)


async def test_a_short_wait_keeps_its_place(autojump_clock: trio.testing.MockClock) -> None:
    @durable.workflow(name="tests.waiting.short")
    def short():  # type: ignore[no-untyped-def]
        yield durable.sleep("500ms")
        return "done"

    store = durable.MemoryStore()
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(short, id="s")
        await trio.sleep(0.1)
        assert runtime.running == 1  # letting it go would cost more than the wait
        assert await handle.result() == "done"
    assert not any(isinstance(e, RunResumed) for e in events_of(store, "s"))


async def test_waiting_runs_stay_in_memory_while_the_cache_has_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store, waiting_cache=2) as runtime:
        handles = [await runtime.start(reminder, str(n), id=f"c{n}") for n in range(4)]
        await trio.sleep(60)
        assert runtime.running == 2  # two kept; the others were let go
        assert len(await store.due_runs(math.inf, 10)) == 2  # let go: the store has them
        assert [await h.result() for h in handles] == [f"reminded {n}" for n in range(4)]
    # None keeps every waiting run, as before durable let runs go.
    async with durable.Runtime(durable.MemoryStore(), waiting_cache=None) as runtime:
        for n in range(3):
            await runtime.start(reminder, str(n), id=f"k{n}")
        await trio.sleep(60)
        assert runtime.running == 3


async def test_take_due_takes_new_runs_and_due_runs_but_not_waiting_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What a worker does: it takes whatever the store says is due, and keeps nothing of
    the runs it lets go (its memory follows its work, not its waiting runs)."""
    store = durable.MemoryStore()
    client = durable.Client(store)  # creates runs, executes nothing
    for n in range(3):
        await client.start(reminder, str(n), id=f"w{n}")
        await trio.sleep(1)
    async with durable.Runtime(store, waiting_cache=0) as worker:
        taken = await worker.take_due(limit=2)
        assert [h.run_id for h in taken] == ["w0", "w1"]  # oldest first, up to the room it has
        await trio.sleep(60)
        assert worker.running == 0 and [h.status for h in taken] == ["waiting", "waiting"]
        assert [h.run_id for h in await worker.take_due(limit=5)] == ["w2"]
        await trio.sleep(60)
        assert await worker.take_due(limit=5) == []  # all three wait: nothing is due
        await trio.sleep(3600)
        again = await worker.take_due(limit=5)
        assert sorted(h.run_id for h in again) == ["w0", "w1", "w2"]
        assert [await h.result() for h in again] == ["reminded 0", "reminded 1", "reminded 2"]
        assert await taken[0].result() == "reminded 0"  # a let-go handle reads the end from the store
    scheduled = [e for e in events_of(store, "w0") if isinstance(e, ActivityScheduled)]
    assert len(scheduled) == 2


class SlowRelease(durable.MemoryStore):
    """Lets a run go slowly, so that a message can arrive in the middle of it."""

    async def release(self, writer: durable.lowlevel.JournalWriter, due: float) -> None:
        await trio.sleep(5)
        await super().release(writer, due)


async def test_a_signal_that_arrives_while_the_run_is_let_go_is_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SlowRelease()
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(approval, id="a")
        await trio.sleep(1)  # the run decided to go, and is being let go
        assert runtime.running == 1
        await runtime.signal("a", "decision", "yes")  # goes through the store once it is let go
        with trio.fail_after(600):  # a lost wake-up would wait forever
            assert await handle.result() == "decided yes"
    assert trio.current_time() < 10
    signals = [e for e in events_of(store, "a") if type(e).__name__ == "SignalReceived"]
    assert len(signals) == 1


async def test_a_cancel_request_brings_a_waiting_run_back_to_be_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(reminder, "bob", id="c")
        await trio.sleep(60)
        assert runtime.running == 0
        await runtime.cancel("c", "not needed")
        with pytest.raises(durable.Cancelled):
            await handle.result()
        assert trio.current_time() < 120
    assert CALLS == ["hello bob"]


async def test_a_file_store_made_before_the_due_index_gets_one_built_from_its_journals(
    loop: str,
    tmp_path: Path,
) -> None:
    import shutil  # noqa: PLC0415

    import cbor2  # noqa: PLC0415

    from durable._core import events as ev  # noqa: PLC0415

    store = durable.FileStore(tmp_path / "store", sync="none")
    for run_id in ["open", "done"]:
        writer = await store.create(ev.RunStarted(run_id, "wf", cbor2.dumps([[], {}]), 1000.0))
        assert writer is not None
        if run_id == "done":
            writer.append(ev.RunCompleted(cbor2.dumps(1), 1001.0))
        writer.close()
    shutil.rmtree(tmp_path / "store" / "due")  # as a durable without the index left the store
    fresh = durable.FileStore(tmp_path / "store", sync="none")
    assert await fresh.due_runs(2000.0, 10) == ["open"]  # every unfinished run, due at once
    entries = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert entries == ["due", "holders", "runs", "starts.log"]  # none staged left


def test_ls_and_show_tell_a_run_let_go_from_one_held(tmp_path: Path) -> None:
    """An operator sees that a run waits, for what and until when, and that no process
    holds it; a run a process holds stays ``running``."""
    import json  # noqa: PLC0415

    from click.testing import CliRunner  # noqa: PLC0415

    from durable._cli import main as cli  # noqa: PLC0415

    store_path = tmp_path / "store"
    store = durable.FileStore(store_path, sync="none")

    async def park() -> durable.lowlevel.JournalWriter:
        async with durable.Runtime(store, waiting_cache=0) as runtime:
            await runtime.start(reminder, "ada", id="sleeper")
            await runtime.start(approval, id="approver")
            while runtime.running:
                await trio.sleep(0.01)
        held = await store.create(durable.lowlevel.RunStarted("held", "wf", b"\x82\x80\xa0", 0.0))
        assert held is not None
        return held

    held = trio.run(park)
    try:
        listed = CliRunner().invoke(cli, ["ls", "--json", "--store", str(store_path)])
        shown = CliRunner().invoke(cli, ["show", "sleeper", "--store", str(store_path)])
        waiting = CliRunner().invoke(cli, ["ls", "--status", "waiting", "--store", str(store_path)])
    finally:
        held.close()
    assert listed.exit_code == 0, (listed.stdout, listed.stderr, listed.exception)
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows["sleeper"]["status"] == "waiting"
    assert rows["sleeper"]["waiting"].startswith("timer sleep(1h) (step 1), until "), rows
    assert rows["approver"]["status"] == "waiting"
    assert rows["approver"]["waiting"] == "signal 'decision' (step 1)", rows
    assert rows["held"]["status"] == "running" and rows["held"]["waiting"] is None
    assert "waiting" in shown.stdout and "waits for" in shown.stdout, shown.stdout
    assert "sleeper" in waiting.stdout and "held" not in waiting.stdout, waiting.stdout


@durable.workflow(name="tests.waiting.child")
def napping_child(name: str):  # type: ignore[no-untyped-def]
    yield durable.sleep("1h")
    return (yield note(f"child {name} woke"))


@durable.workflow(name="tests.waiting.parent")
def parent_of_a_napper():  # type: ignore[no-untyped-def]
    yield note("parent began")
    woke = yield napping_child("c")
    return (yield note(f"parent saw {woke!r}"))


async def test_a_parent_waiting_for_its_child_is_let_go_and_the_childs_end_wakes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(parent_of_a_napper, id="p")
        await trio.sleep(60)
        assert runtime.running == 0  # the parent waits for its child, the child for its timer
        assert sorted(store.due) == ["p", "p/1"]
        assert await handle.result() == "parent saw 'child c woke'"
    # Woken by the child's end, not by the periodic look (CHILD_RECHECK) at the parent.
    assert trio.current_time() == pytest.approx(3600, abs=1)
    assert CALLS == ["parent began", "child c woke", "parent saw 'child c woke'"]


@durable.workflow(name="tests.waiting.napping_children")
def parent_of_nappers():  # type: ignore[no-untyped-def]
    woke = yield durable.gather(napping_child("a"), napping_child("b"))
    index, first = yield durable.race(napping_child("c"), durable.sleep("2h"))
    return (yield note(f"parent saw {woke!r} then {index}: {first!r}"))


async def test_a_parent_waiting_for_a_gather_or_race_of_children_is_let_go_between_their_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(parent_of_nappers, id="g")
        await trio.sleep(60)
        assert runtime.running == 0  # the parent waits for both children, each for its timer
        assert sorted(store.due) == ["g", "g/0", "g/1"]
        await trio.sleep(3600)
        assert runtime.running == 0  # both woke and ended; the parent now waits in the race
        assert sorted(store.due) == ["g", "g/2"]
        assert await handle.result() == "parent saw ['child a woke', 'child b woke'] then 0: 'child c woke'"
    assert trio.current_time() == pytest.approx(7200, abs=2)
    assert CALLS[-1] == "parent saw ['child a woke', 'child b woke'] then 0: 'child c woke'"


def test_a_parent_let_go_between_its_childrens_ends_survives_every_crash() -> None:
    """Every crash point of the parent and its children (each let go and taken back, as a
    worker does in the simulator), the release of the parent between two ends included."""
    report = sim.explore(parent_of_nappers, max_crashes=1)
    assert report.ok, report.failure_text()
    assert report.crash_points > 100


async def test_a_parent_whose_child_could_not_wake_it_is_looked_at_again(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash right after the child ended, before it woke its parent: the parent is
    taken back at its next periodic look, and finds the child's end."""
    from durable._executor import CHILD_RECHECK  # noqa: PLC0415

    store = durable.MemoryStore()

    async def lost_wake(run_id: str) -> None:
        pass

    monkeypatch.setattr(store, "wake", lost_wake)
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(parent_of_a_napper, id="p")
        with trio.fail_after(3600 + 2 * CHILD_RECHECK):
            assert await handle.result() == "parent saw 'child c woke'"
    assert 3600 < trio.current_time() <= 3600 + CHILD_RECHECK + 1


async def test_a_run_let_go_whose_workflow_is_gone_ends_its_handle_and_is_not_taken_again(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its workflow was undefined while it waited (a registry changed under a test, a
    # module reloaded): the watch once took such a run back at every turn, forever.
    from durable._core import commands  # noqa: PLC0415 - the registry of this process

    store = durable.MemoryStore()
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        handle = await runtime.start(reminder, "ada", id="r")
        await trio.sleep(60)
        assert runtime.running == 0
        monkeypatch.delitem(commands._REGISTRY, "tests.waiting.reminder")
        opens = 0
        real_open = store.open

        async def counting_open(run_id: str) -> object:
            nonlocal opens
            opens += 1
            return await real_open(run_id)

        monkeypatch.setattr(store, "open", counting_open)
        with pytest.raises(durable.UnknownWorkflowError, match=r"tests\.waiting\.reminder"):
            await handle.result()
        await trio.sleep(7200)
        assert opens == 1  # taken back once, when due; then left in the store
    assert "r" in store.due  # it still waits, in the store, for a process that defines it
