"""The due index, one contract for every store that keeps one (``durable._store``).

Every unfinished run has a due time: a new run is due at once, a run let go
(``release``) is due when it said (``math.inf``: only a message wakes it), and a
message (``post``, ``wake``) makes it due now. ``due_runs`` lists the runs due and
held by nobody, oldest due first; ``next_due`` says when the next one comes.

The tests go through the Store interface only, so a store joins by adding its name
to ``STORES``. Due times are wall-clock epoch seconds, as the runtime's are: a store
may read its own clock to make a run due "now" (PostgreSQL does), and keep due times
to the second (FileStore does), so the due times set here are whole seconds.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import cbor2
import pgutil
import pytest
import trio

import durable
import sim
from durable._core import events as ev
from durable._store import JournalWriter, Store
from sim._disk import Crasher

STORES = ["memory", "file", "postgres"]

#: Far in the future, but finite: what "any time at all" is for a due time.
NEVER = 1e18


def _make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return durable.MemoryStore()
    if kind == "postgres":
        return pgutil.fresh_store()
    if kind == "file":
        return durable.FileStore(tmp_path / "store")
    raise AssertionError(f"no such store kind {kind!r}")


@pytest.fixture(
    params=[pytest.param(k, marks=pytest.mark.postgres) if k == "postgres" else k for k in STORES]
)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "postgres":
        pgutil.require()  # in a sync fixture: pytest-trio drops the reason of an async skip
    return kind


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> Any:
    made = _make_store(store_kind, tmp_path)
    yield made
    await made.aclose()


def whole_seconds() -> float:
    """The time now, in whole seconds: a store may keep due times to the second (rounding
    them down: a run due a little early only costs a replay), so the tests set them so."""
    return float(math.floor(time.time()))


def started(run_id: str, t: float) -> ev.RunStarted:
    return ev.RunStarted(run_id, "wf", cbor2.dumps([[run_id], {}]), t)


def signal(message_id: str) -> ev.SignalReceived:
    return ev.SignalReceived("decision", cbor2.dumps("yes"), time.time(), message_id)


async def create(store: Store, run_id: str, t: float) -> JournalWriter:
    writer = await store.create(started(run_id, t))
    assert writer is not None
    return writer


async def let_go(store: Store, run_id: str, due: float, t: float | None = None) -> None:
    """Create a run and let it go until ``due``, as a runtime does with a run that waits."""
    writer = await create(store, run_id, whole_seconds() - 60 if t is None else t)
    await writer.sync()
    await store.release(writer, due)


async def test_a_new_run_is_due_at_once_but_not_while_its_creator_holds_it(store: Store) -> None:
    now = whole_seconds()
    writer = await create(store, "new", now - 5)
    assert await store.due_runs(now, 10) == []  # held by its creator
    writer.close()
    assert await store.due_runs(now, 10) == ["new"]
    assert await store.due_runs(now - 10, 10) == []  # not yet created, by that clock
    assert await store.next_due(now) is None


async def test_a_run_held_open_is_not_listed(store: Store) -> None:
    now = whole_seconds()
    (await create(store, "a", now - 5)).close()
    (await create(store, "b", now - 4)).close()
    opened = await store.open("a")
    assert opened is not None
    assert await store.due_runs(time.time(), 10) == ["b"]
    opened.writer.close()
    assert await store.due_runs(time.time(), 10) == ["a", "b"]


async def test_a_run_let_go_is_listed_once_its_due_time_comes(store: Store) -> None:
    now = whole_seconds()
    due = now + 3600
    await let_go(store, "sleeper", due)
    assert await store.due_runs(now, 10) == []
    assert await store.due_runs(due - 1, 10) == []
    assert await store.next_due(now) == due
    assert await store.due_runs(due, 10) == ["sleeper"]
    assert await store.due_runs(due + 60, 10) == ["sleeper"]
    assert await store.next_due(due) is None  # due now, not later


async def test_a_run_waiting_for_a_message_is_never_due_by_time(store: Store) -> None:
    await let_go(store, "waiter", math.inf)
    assert await store.due_runs(NEVER, 10) == []
    assert await store.next_due(time.time()) is None


async def test_next_due_is_the_earliest_due_time_after_now(store: Store) -> None:
    now = whole_seconds()
    await let_go(store, "late", now + 300)
    await let_go(store, "soon", now + 100)
    await let_go(store, "never", math.inf)
    (await create(store, "new", now - 1)).close()  # due already: not "after now"
    assert await store.next_due(now) == now + 100
    assert await store.next_due(now + 100) == now + 300
    assert await store.next_due(now + 300) is None


@pytest.mark.parametrize("wait", [math.inf, 3600.0], ids=["for a message", "for an hour"])
async def test_a_message_posted_to_a_run_let_go_makes_it_due_at_once(store: Store, wait: float) -> None:
    await let_go(store, "waiter", whole_seconds() + wait)
    await store.post("waiter", signal("m-1"))
    assert await store.due_runs(time.time(), 10) == ["waiter"]


async def test_wake_makes_a_run_let_go_due_at_once(store: Store) -> None:
    await let_go(store, "waiter", math.inf)
    await let_go(store, "other", math.inf)
    await store.wake("waiter")
    assert await store.due_runs(time.time(), 10) == ["waiter"]
    await store.wake("no such run")  # nothing to wake


async def test_a_message_does_not_list_a_run_that_is_held(store: Store) -> None:
    writer = await create(store, "held", time.time() - 5)
    await store.post("held", signal("m-1"))
    await store.wake("held")
    assert await store.due_runs(time.time(), 10) == []
    writer.close()
    assert await store.due_runs(time.time(), 10) == ["held"]


async def test_a_run_that_ended_is_never_listed(store: Store) -> None:
    now = whole_seconds()
    writer = await create(store, "done", now - 50)
    writer.append(ev.RunCompleted(cbor2.dumps(1), now - 40))
    await writer.sync()
    await store.ended("done")  # what the runtime says once the outcome is durable
    writer.close()
    (await create(store, "open", now - 5)).close()
    assert await store.due_runs(NEVER, 10) == ["open"]
    await store.wake("done")
    assert await store.due_runs(NEVER, 10) == ["open"]
    assert await store.due_runs(NEVER, 10, among=["done"]) == []
    assert await store.next_due(0.0) == now - 5  # "open"'s, not "done"'s


async def test_the_oldest_due_come_first_up_to_the_limit(store: Store) -> None:
    now = whole_seconds()
    (await create(store, "b", now - 30)).close()
    await let_go(store, "a", now - 10, t=now - 50)  # let go until a time that has come
    (await create(store, "c", now - 20)).close()
    await let_go(store, "later", now + 60)
    assert await store.due_runs(now, 10) == ["b", "c", "a"]
    assert await store.due_runs(now, 2) == ["b", "c"]
    assert await store.due_runs(now, 0) == []
    assert await store.due_runs(now + 60, 10) == ["b", "c", "a", "later"]


async def test_among_lists_only_the_runs_named(store: Store) -> None:
    now = whole_seconds()
    for offset, run_id in enumerate(["a", "b", "c", "d"]):
        (await create(store, run_id, now - 10 + offset)).close()
    await let_go(store, "e", now + 60)
    assert await store.due_runs(now, 10, among={"d", "b", "e", "nope"}) == ["b", "d"]
    assert await store.due_runs(now, 1, among=["d", "b"]) == ["b"]
    assert await store.due_runs(now, 10, among=[]) == []
    assert await store.due_runs(now + 60, 10, among=("e",)) == ["e"]


async def test_a_run_continued_as_new_stays_held_then_due(store: Store) -> None:
    now = whole_seconds()
    writer = await create(store, "chain", now - 5)
    writer.append(ev.RunContinuedAsNew(cbor2.dumps([[1], {}]), now - 4))
    await writer.sync()
    fresh = await store.restart(started("chain", now - 4), writer)
    assert await store.due_runs(now, 10) == []  # the continuation holds it
    await store.release(fresh, now + 60)
    assert await store.due_runs(now, 10) == []
    assert await store.due_runs(now + 60, 10) == ["chain"]


async def test_release_closes_the_writer(store: Store) -> None:
    writer = await create(store, "r", time.time() - 5)
    await writer.sync()
    await store.release(writer, time.time() + 60)
    writer.close()  # idempotent
    opened = await store.open("r")  # nobody holds it now
    assert opened is not None
    opened.writer.close()


async def test_held_says_which_runs_a_live_process_holds(store: Store) -> None:
    """What ``durable ls`` asks to tell a run being executed from one that waits."""
    writer = await create(store, "held", time.time() - 5)
    await let_go(store, "let-go", time.time() + 3600)
    assert await store.held(["held", "let-go", "no such run"]) == {"held"}
    writer.close()
    assert await store.held(["held", "let-go"]) == set()
    assert await store.held([]) == set()


# -- the runs that have not ended, without reading the finished ones ----------------------


async def test_unfinished_lists_runs_waiting_for_time_or_a_message_never_ended_ones(store: Store) -> None:
    now = whole_seconds()
    await let_go(store, "timer", now + 3600)
    await let_go(store, "signal", math.inf)
    held = await create(store, "held", now - 5)
    ended = await create(store, "ended", now - 5)
    ended.append(ev.RunCompleted(cbor2.dumps(None), now))
    await ended.sync()
    ended.close()
    await store.ended("ended")
    assert await store.unfinished() == ["held", "signal", "timer"]
    held.close()


class CountingReads(durable.lowlevel.OsFileSystem):
    """The real file system, counting the journals opened for reading."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def open(self, path: str, *, write: bool) -> int:
        if path.endswith(".journal") and not write:
            self.opened.append(Path(path).name)
        return super().open(path, write=write)


async def test_a_file_store_finds_its_unfinished_runs_without_reading_the_finished(tmp_path: Path) -> None:
    setup = durable.FileStore(tmp_path / "store")
    now = whole_seconds()
    for n in range(40):
        writer = await create(setup, f"done-{n}", now - 60)
        writer.append(ev.RunCompleted(cbor2.dumps(n), now - 30))
        await writer.sync()
        writer.close()
        await setup.ended(f"done-{n}")
    await let_go(setup, "waits-for-a-signal", math.inf)
    await let_go(setup, "waits-for-a-timer", now + 3600)
    fs = CountingReads()
    store = durable.FileStore(tmp_path / "store", fs=fs)
    assert await store.unfinished() == ["waits-for-a-signal", "waits-for-a-timer"]
    assert sorted(fs.opened) == ["waits-for-a-signal.journal", "waits-for-a-timer.journal"]


async def test_an_entry_left_by_a_run_that_ended_is_removed_when_found(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    writer = await create(store, "r", whole_seconds() - 5)
    writer.append(ev.RunCompleted(cbor2.dumps(1), whole_seconds()))
    await writer.sync()
    writer.close()  # a crash before ended(): its entry stays
    entries = [p for p in (tmp_path / "store" / "due").rglob("*") if p.is_file()]
    assert [p.name for p in entries] == ["r"]
    assert await durable.FileStore(tmp_path / "store").unfinished() == []
    assert not [p for p in (tmp_path / "store" / "due").rglob("*") if p.is_file()]
    assert (tmp_path / "store" / "due" / "waiting").is_dir()  # it stays, empty: the index has it


async def test_an_entry_another_process_removed_first_is_no_error(tmp_path: Path) -> None:
    """A worker whose run's entry was removed by another process (one that found it
    stale, or `durable prune` and the id used again) ends the run all the same: it said
    "gave up ... removing ... (the due index) failed: No such file or directory"."""
    store = durable.FileStore(tmp_path / "store")
    writer = await create(store, "r", whole_seconds() - 5)
    writer.append(ev.RunCompleted(cbor2.dumps(1), whole_seconds()))
    await writer.sync()
    (entry,) = [p for p in (tmp_path / "store" / "due").rglob("*") if p.is_file()]
    entry.unlink()  # as another process does
    await store.ended("r", "completed")
    writer.close()
    assert await store.unfinished() == []


async def test_an_index_from_before_waiting_entries_gets_them_from_the_journals_once(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    await let_go(store, "signal", math.inf)
    await let_go(store, "timer", whole_seconds() + 3600)
    # As an older durable left it: no waiting/, and no entry for a run let go until a message.
    waiting = tmp_path / "store" / "due" / "waiting"
    for entry in waiting.iterdir():
        entry.unlink()
    waiting.rmdir()
    fs = CountingReads()
    upgraded = durable.FileStore(tmp_path / "store", fs=fs)
    assert await upgraded.unfinished() == ["signal", "timer"]
    assert (waiting / "signal").is_file()
    fs.opened.clear()
    again = durable.FileStore(tmp_path / "store", fs=fs)
    assert await again.unfinished() == ["signal", "timer"]
    assert sorted(fs.opened) == ["signal.journal", "timer.journal"]  # no second migration


async def test_recover_resumes_a_run_let_go_until_a_signal(tmp_path: Path) -> None:
    @durable.workflow(name="tests.due.approve")
    def approve() -> Any:
        decision = yield durable.wait_signal("decision")
        return decision

    store = durable.FileStore(tmp_path / "store")
    async with durable.Runtime(store, waiting_cache=0) as runtime:
        await runtime.start(approve, id="a-1")
        while not (events := await store.read("a-1")) or not isinstance(
            events[-1], ev.RunStarted | ev.TimerStarted
        ):
            await trio.sleep(0.01)
    async with durable.Runtime(store) as runtime:
        assert [h.run_id for h in await runtime.recover()] == ["a-1"]


# -- the index after a crash at every point ----------------------------------------------


async def _life_of_four_runs(store: durable.FileStore) -> None:
    """Runs let go until a message and until a time, one that ends, one held at the crash."""
    now = whole_seconds()
    for run_id, due in (("message", math.inf), ("timer", now + 3600), ("ends", now + 1)):
        writer = await create(store, run_id, now - 10)
        await writer.sync()
        await store.release(writer, due)
    opened = await store.open("ends")
    assert opened is not None
    opened.writer.append(ev.RunCompleted(cbor2.dumps(1), now))
    await opened.writer.sync()
    opened.writer.close()
    await store.ended("ends")
    held = await create(store, "held", now - 5)
    await held.sync()
    taken = await store.open("message")  # a message woke it, and a worker holds it now
    assert taken is not None


def _crash_points() -> int:
    disk = sim.SimDisk()
    trio.run(_life_of_four_runs, durable.FileStore("/s", fs=disk))
    return len(disk.crasher.points)


async def _listed_and_unfinished(store: durable.FileStore) -> tuple[list[str], list[str]]:
    """What the index lists as unfinished, and what the journals say is."""
    unfinished = []
    for run_id in await store.run_ids():
        events = await store.read(run_id)
        if events and not isinstance(events[-1], ev.TERMINAL):
            unfinished.append(run_id)
    return await store.unfinished(), unfinished


@pytest.mark.parametrize("how", ["kill", "drop", "torn"])
def test_after_a_crash_at_any_point_every_unfinished_run_is_listed(how: str) -> None:
    for crash_at in range(1, _crash_points() + 1):
        disk = sim.SimDisk(Crasher(crash_at))
        with pytest.raises(sim.SimulatedCrash):
            trio.run(_life_of_four_runs, durable.FileStore("/s", fs=disk))
        disk.crash(how, random.Random(crash_at))
        disk.crasher = Crasher()
        listed, unfinished = trio.run(_listed_and_unfinished, durable.FileStore("/s", fs=disk))
        assert listed == unfinished, f"crash at point {crash_at} ({how})"
