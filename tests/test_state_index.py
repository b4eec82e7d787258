"""Listings by state read only the journals that may match (``Store.state_index``).

A FileStore logs each run's end in ``ends.log`` (durable/_store_file/ends.py) and
lists its unfinished runs in its due index; PostgreSQL keeps each run's end in a
column. ``durable ls --status S`` and the dashboard's state filter then skip the
journals of the runs known to be in another state. The index is a cache: every
test here checks that a filtered listing is exactly the unfiltered listing
filtered (on a store whose ends were all logged, whose log was lost, cut short,
stale after a retry, or mixed with garbage), and, where it says so, that the
journals of the runs in other states were not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgutil
import pytest
import trio

import durable
from durable import _timeline as tl
from durable._cli import _every, _newest
from durable._store import StateIndex, Store

#: What the runs do: "ok" completes, "bad" fails (until fixed), "wait" waits for a signal.
PLAN = ["ok", "bad", "ok", "wait", "ok", "bad", "cancel", "ok"]
BROKEN = {"yes"}


@durable.workflow(name="tests.state_index.job")
def job(kind: str):  # type: ignore[no-untyped-def]
    if kind == "bad" and BROKEN:
        raise ValueError("broken (a bug fixed later)")
    if kind in ("wait", "cancel"):
        yield durable.wait_signal("go")
    return kind


@pytest.fixture(params=["file", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    BROKEN.add("yes")
    if request.param == "file":
        yield durable.FileStore(tmp_path / "store")
    else:
        made = pgutil.fresh_store()
        yield made
        trio.run(made.aclose)  # drops its schema


class Counted:
    """Counts the journals a listing reads (``store.read``), by run id."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads: list[str] = []
        real = store.read

        async def read(run_id: str) -> Any:
            self.reads.append(run_id)
            return await real(run_id)

        monkeypatch.setattr(store, "read", read)


async def make_runs(store: Store) -> None:
    """One run per kind of PLAN; the waiting one is left waiting, the one to cancel cancelled."""
    async with durable.Runtime(store) as runtime:
        handles = [await runtime.start(job, kind, id=f"r{n}-{kind}") for n, kind in enumerate(PLAN)]
        for handle in handles:
            if handle.run_id.endswith("-cancel"):
                await runtime.cancel(handle.run_id, "not wanted")
        for handle in handles:
            if handle.run_id.endswith("-ok"):
                assert await handle.result() == "ok"
            elif not handle.run_id.endswith("-wait"):
                with pytest.raises((durable.WorkflowFailed, durable.Cancelled)):
                    await handle.result()


async def by_status(store: Store, status: str) -> list[str]:
    rows, more = await _newest(store, None, lambda t: t.status == status, None, None, None, (status,))
    assert not more  # no limit: the whole listing
    return [t.run_id for t in rows]


async def check_every_status(store: Store) -> dict[str, list[str]]:
    """Each status's filtered listing is the unfiltered listing filtered: what it lists."""
    everything, _ = await _newest(store, None, _every, None, None)
    found = {}
    for status in tl.STATUSES:
        expected = [t.run_id for t in everything if t.status == status]
        assert await by_status(store, status) == expected, status
        found[status] = expected
    return found


async def test_a_listing_by_state_reads_only_what_may_match(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_runs(store)
    found = await check_every_status(store)
    assert found["completed"] == ["r7-ok", "r4-ok", "r2-ok", "r0-ok"]
    assert found["failed"] == ["r5-bad", "r1-bad"]
    assert found["cancelled"] == ["r6-cancel"]
    (unfinished,) = [ids for status, ids in found.items() if "r3-wait" in ids]

    counted = Counted(store, monkeypatch)
    assert await by_status(store, "failed") == ["r5-bad", "r1-bad"]
    # The failed runs and the unfinished one: no completed or cancelled journal.
    assert sorted(counted.reads) == ["r1-bad", "r3-wait", "r5-bad"]
    counted.reads.clear()
    assert (
        await by_status(store, "queued")
        + await by_status(store, "waiting")
        + await by_status(store, "stalled")
        == unfinished
    )
    assert set(counted.reads) == {"r3-wait"}


async def test_a_retried_run_is_listed_as_it_ends_now(store: Store) -> None:
    await make_runs(store)
    BROKEN.clear()  # the bug is fixed
    async with durable.Runtime(store) as runtime:
        assert await (await runtime.retry("r1-bad")).result() == "bad"
    found = await check_every_status(store)
    assert found["failed"] == ["r5-bad"]
    assert found["completed"] == ["r7-ok", "r4-ok", "r2-ok", "r1-bad", "r0-ok"]


def ends(log: Path) -> list[str]:
    """The ends log's lines as ``<status> <run id>``, sorted (each names the run's start too)."""
    found = []
    for line in log.read_text().splitlines():
        if line:
            status, _, name = line.split(" ")
            found.append(f"{status} {name.removesuffix('.journal')}")
    return sorted(found)


def lines_of(log: Path) -> list[str]:
    """The ends log's lines, without the empty ones (each line begins with a newline)."""
    return [line for line in log.read_text().splitlines() if line]


async def test_a_file_store_whose_ends_log_is_lost_or_damaged_lists_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    BROKEN.add("yes")
    store = durable.FileStore(tmp_path / "store")
    await make_runs(store)
    log = tmp_path / "store" / "ends.log"
    whole = lines_of(log)
    assert ends(log) == sorted(
        [f"completed r{n}-ok" for n in (0, 2, 4, 7)]
        + ["failed r1-bad", "failed r5-bad", "cancelled r6-cancel"]
    )

    log.unlink()  # a store from before the log: every ended run is unknown, and read
    counted = Counted(store, monkeypatch)
    assert await by_status(store, "cancelled") == ["r6-cancel"]
    assert len(counted.reads) == len(PLAN)
    # The listing noted the ends that never change (not a failure: a retry changes it).
    assert ends(log) == [
        "cancelled r6-cancel",
        *[f"completed r{n}-ok" for n in (0, 2, 4, 7)],
    ]
    counted.reads.clear()
    assert await by_status(store, "cancelled") == ["r6-cancel"]
    assert sorted(counted.reads) == ["r1-bad", "r3-wait", "r5-bad", "r6-cancel"]

    # Cut short by a crash, garbage, a stale line: never a run left out.
    (r5,) = [line for line in whole if line.endswith(" r5-bad.journal")]
    stale = r5.replace("failed", "completed")  # an earlier line: the last one wins
    log.write_text(f"{stale}\n" + "\n".join(whole) + "\ngarbage\nfailed r0-o")
    await check_every_status(store)
    log.write_text("\n".join(whole[::2]) + "\n")  # lines lost
    await check_every_status(store)


async def test_a_run_whose_end_was_not_logged_before_a_crash_is_still_found(tmp_path: Path) -> None:
    """The line is written before the due entry goes: a crash between the journal's end
    and the line leaves the entry, so the run counts as unfinished and is read; whoever
    finds the stale entry logs the end."""
    BROKEN.add("yes")
    store = durable.FileStore(tmp_path / "store")
    real_ended = store.ended

    async def crash_before_the_line(run_id: str, status: str | None = None) -> None:
        if run_id != "r1-bad":
            await real_ended(run_id, status)

    store.ended = crash_before_the_line  # type: ignore[method-assign]
    await make_runs(store)
    log = tmp_path / "store" / "ends.log"
    assert "r1-bad" not in log.read_text()
    assert "r1-bad" in (await store.state_index()).unfinished
    assert await by_status(store, "failed") == ["r5-bad", "r1-bad"]
    await store.unfinished()  # recovery finds the entry stale, and logs the end
    assert "failed r1-bad" in ends(log)
    assert "r1-bad" not in (await store.state_index()).unfinished
    await check_every_status(store)


def test_a_state_index_answers_for_the_states_it_knows() -> None:
    index = StateIndex(frozenset({"u"}), {"c": "completed", "f": "failed", "u": "failed"})
    assert "u" not in index.ruled_out(["completed"])  # unfinished: read, whatever the ends say
    assert "x" not in index.ruled_out(["completed"]) and not index.knows("x")  # unknown: read
    assert "c" in index.ruled_out(["failed"]) and "c" not in index.ruled_out(["failed", "completed"])
    assert "f" in index.ruled_out(["queued", "running", "waiting", "stalled"])
    assert "c" not in index.ruled_out(["corrupt"])  # a journal damaged after its end was noted
    assert index.ruled_out(["completed"]) == {"f"}
    assert index.ruled_out(["failed"]) == {"c"}
    assert index.ruled_out(["queued", "waiting"]) == {"c", "f"}
    assert index.ruled_out(["corrupt"]) == set()
    assert index.ruled_out(["failed", "completed"]) == set()


async def test_the_dashboards_counts_read_only_the_runs_the_index_does_not_know(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from durable._ui.data import StateCounter  # noqa: PLC0415 - the ui extra's module

    await make_runs(store)
    counted = Counted(store, monkeypatch)
    counts = await StateCounter(store, None).count()
    assert counts.unread == 0 and counts.total == len(PLAN)
    assert {k: v for k, v in counts.counts.items() if k not in ("queued", "waiting", "stalled")} == {
        "completed": 4,
        "failed": 2,
        "cancelled": 1,
    }
    assert counted.reads == ["r3-wait"]  # the unfinished run alone


async def test_a_line_left_by_a_removed_run_says_nothing_of_a_new_run_of_the_same_id(
    tmp_path: Path,
) -> None:
    """`rm`, then the same id started again: the removed run's `completed` line names
    its start, not the new run's, so the new run's failure is listed even when a crash
    lost its line (found by a new-user trial: the run was missing from --status failed)."""
    BROKEN.add("yes")
    store = durable.FileStore(tmp_path / "store")
    async with durable.Runtime(store) as runtime:
        assert await (await runtime.start(job, "ok", id="r")).result() == "ok"
    assert (await store.remove("r")) == "removed"
    log = tmp_path / "store" / "ends.log"
    before = log.read_text()
    async with durable.Runtime(store) as runtime:
        with pytest.raises(durable.WorkflowFailed):
            await (await runtime.start(job, "bad", id="r")).result()
    assert ends(log) == ["completed r", "failed r"]
    log.write_text(before)  # the new run's line lost, its due entry gone
    assert await by_status(store, "failed") == ["r"]
    assert await by_status(store, "completed") == []
    await check_every_status(store)


async def test_a_line_cut_short_by_a_crash_does_not_swallow_the_next(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    async with durable.Runtime(store) as runtime:
        assert await (await runtime.start(job, "ok", id="a")).result() == "ok"
    log = tmp_path / "store" / "ends.log"
    log.write_text(log.read_text().rstrip("\n")[:-5])  # torn: no newline at its end
    async with durable.Runtime(store) as runtime:
        assert await (await runtime.start(job, "ok", id="b")).result() == "ok"
    torn, whole = lines_of(log)
    assert torn.endswith(" a.jo") and whole.startswith("completed ") and whole.endswith(" b.journal")
    assert (await store.state_index()).ended == {"b": "completed"}  # a is unknown: read
    await check_every_status(store)


async def test_a_retried_run_whose_new_end_was_lost_is_not_taken_for_its_failure(
    tmp_path: Path,
) -> None:
    """A retry writes a `retried` line and fsyncs it before it writes to the journal: if a
    crash loses the line of the retried run's new end, the run is unknown (and read), not
    `failed` as its earlier line says."""
    BROKEN.add("yes")
    store = durable.FileStore(tmp_path / "store")
    async with durable.Runtime(store) as runtime:
        with pytest.raises(durable.WorkflowFailed):
            await (await runtime.start(job, "bad", id="r")).result()
    BROKEN.clear()
    log = tmp_path / "store" / "ends.log"
    async with durable.Runtime(store) as runtime:
        handle = await runtime.retry("r")
        retried = log.read_text()  # the retried line, before the run goes on
        assert await handle.result() == "bad"
    assert [line.split(" ")[0] for line in lines_of(log)] == ["failed", "retried", "completed"]
    log.write_text(retried)  # the completed line lost, the due entry gone
    assert "r" not in (await store.state_index()).ended
    assert await by_status(store, "completed") == ["r"]
    assert await by_status(store, "failed") == []


async def test_runs_whose_ids_are_no_file_names_are_indexed_by_their_ids(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    odd = ["with space", "50%", "a/b", "ünï", ".", "é" * 60]  # the last: a hashed file name
    async with durable.Runtime(store) as runtime:
        for run_id in odd:
            assert await (await runtime.start(job, "ok", id=run_id)).result() == "ok"
    ended = (await store.state_index()).ended
    assert ended == {run_id: "completed" for run_id in odd[:-1]}  # a hashed name is read
    assert sorted(await by_status(store, "completed")) == sorted(odd)
    await check_every_status(store)
