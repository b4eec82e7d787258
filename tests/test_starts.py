"""The FileStore's starts log and its check remembered in ``starts.checked``
(durable/_store_file/starts.py): a listing of a store whose ``runs/`` has not
changed reads only the log, any change sends it back to the check, and what is
listed is the same either way."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cbor2

import durable
import sim
from durable._core import events as ev
from durable._fs import OsFileSystem

T0 = 1_700_000_000.0


class CountingFs(OsFileSystem):
    """The real disk, counting the listings of ``runs/``; ``writable=False`` refuses
    every new file (a read-only store), ``lose_starts`` every append to the starts log."""

    def __init__(self) -> None:
        super().__init__()
        self.listings = 0
        self.writable = True
        self.lose_starts = False

    def listdir(self, path: str) -> list[str]:
        if os.path.basename(path) == "runs":
            self.listings += 1
        return super().listdir(path)

    def replace_file(self, path: str) -> int:
        if not self.writable:
            raise PermissionError(13, "Permission denied (test)", path)
        return super().replace_file(path)

    def append(self, path: str, data: bytes) -> None:
        if self.lose_starts and path.endswith("starts.log"):
            return  # as a crash between the journal's creation and the log's line
        super().append(path, data)


class CountingDisk(sim.SimDisk):
    def __init__(self) -> None:
        super().__init__()
        self.listings = 0

    def listdir(self, path: str) -> list[str]:
        if os.path.basename(path) == "runs":
            self.listings += 1
        return super().listdir(path)


async def add(store: durable.FileStore, run_id: str, t: float) -> None:
    writer = await store.create(ev.RunStarted(run_id, "wf", cbor2.dumps([[], {}]), t))
    assert writer is not None
    writer.close()


def settle(store: durable.FileStore) -> None:
    """Make ``runs/`` look last changed a minute ago (its stamp is then trusted)."""
    old = time.time_ns() - 60_000_000_000
    os.utime(os.path.join(store.path, "runs"), ns=(old, old))


async def listings(store: durable.FileStore) -> tuple[list[str], ...]:
    return (
        await store.newest_first(),
        await store.newest_first(2),
        await store.newest_first(2, before="b"),
        await store.newest_first(None, before="c"),
        await store.started_before(T0 + 1.5),
        await store.finished_before(T0 + 10),
    )


EXPECTED = (["d", "c", "b", "a"], ["d", "c"], ["a"], ["b", "a"], ["a", "b"], [])


async def store_of_four(tmp_path: Path) -> tuple[durable.FileStore, CountingFs]:
    fs = CountingFs()
    store = durable.FileStore(tmp_path / "store", sync="none", fs=fs)
    for n, run_id in enumerate("abcd"):
        await add(store, run_id, T0 + n)
    fs.listings = 0  # the due index listed runs/ once, to build itself
    return store, fs


def checked(store: durable.FileStore) -> Path:
    return Path(store.path) / "starts.checked"


async def test_a_settled_store_is_listed_from_the_log_alone(tmp_path: Path) -> None:
    store, fs = await store_of_four(tmp_path)
    settle(store)
    assert await listings(store) == EXPECTED
    assert fs.listings == 1  # the first listing checked, and remembered it
    assert checked(store).exists()
    assert await listings(store) == EXPECTED
    assert fs.listings == 1
    # Without what it remembered, the check again: the same runs.
    checked(store).unlink()
    assert await listings(store) == EXPECTED
    assert fs.listings == 2


async def test_a_fresh_runs_directory_is_checked_at_each_listing_never_remembered(tmp_path: Path) -> None:
    store, fs = await store_of_four(tmp_path)  # runs/ changed just now: its stamp may be racy
    assert await listings(store) == EXPECTED
    assert await store.newest_first(1) == ["d"]
    assert fs.listings == 7
    assert not checked(store).exists()


async def test_any_change_to_runs_or_the_log_is_seen(tmp_path: Path) -> None:
    store, fs = await store_of_four(tmp_path)
    settle(store)
    assert await store.newest_first(2) == ["d", "c"]
    assert await store.newest_first(2) == ["d", "c"]
    assert fs.listings == 1
    await add(store, "e", T0 + 10)  # a new run
    assert await store.newest_first(2) == ["e", "d"]
    settle(store)
    assert await store.newest_first(2) == ["e", "d"]  # checked again, remembered
    assert await store.newest_first(2) == ["e", "d"]
    assert fs.listings == 3
    await store.remove("e", unfinished=True)  # rm
    assert await store.newest_first(2) == ["d", "c"]
    fs.lose_starts = True  # a run whose log line a crash lost
    await add(store, "f", T0 + 20)
    assert await store.newest_first(2) == ["f", "d"]
    # A line appended to the log (its size changed) while runs/ looks unchanged.
    settle(store)
    assert await store.newest_first(2) == ["f", "d"]
    before = fs.listings
    with open(os.path.join(store.path, "starts.log"), "a") as log:
        log.write(f"{T0 + 30:017.6f} a.journal\n")
    assert await store.newest_first(2) == ["a", "f"]  # the log's latest line for a run
    assert fs.listings == before + 1


async def test_a_removed_run_or_a_lost_line_gets_the_log_rewritten_exact(tmp_path: Path) -> None:
    store, fs = await store_of_four(tmp_path)
    log = Path(store.path) / "starts.log"
    await store.remove("b", unfinished=True)
    fs.lose_starts = True
    await add(store, "e", T0 + 10)
    assert await store.newest_first() == ["e", "d", "c", "a"]
    assert log.read_text() == "".join(
        f"{T0 + n:017.6f} {r}.journal\n" for n, r in ((0, "a"), (2, "c"), (3, "d"), (10, "e"))
    )
    assert sorted(p.name for p in Path(store.path).iterdir()) == ["due", "holders", "runs", "starts.log"]
    # Exact again: the next listing of the settled store remembers it, the one after skips the check.
    settle(store)
    assert await store.newest_first() == ["e", "d", "c", "a"]
    assert await store.newest_first() == ["e", "d", "c", "a"]
    assert fs.listings == 2
    # A page after a removed run still starts where that run was (the log keeps its line
    # until rewritten; then no such run, as for any id).
    assert await store.newest_first(None, before="b") == []


async def test_a_damaged_starts_checked_is_no_cache(tmp_path: Path) -> None:
    store, fs = await store_of_four(tmp_path)
    settle(store)
    assert await store.newest_first(1) == ["d"]
    good = checked(store).read_bytes()
    for damaged in (good[:-1], good[:-3] + b"\n", b"", b"garbage\n", b"\xff" * len(good), good + good):
        checked(store).write_bytes(damaged)
        before = fs.listings
        assert await store.newest_first(1) == ["d"]
        assert fs.listings == before + 1, damaged
        assert checked(store).read_bytes() == good  # the check rewrote it


async def test_a_log_rewritten_at_the_same_size_is_caught(tmp_path: Path) -> None:
    store, _ = await store_of_four(tmp_path)
    settle(store)
    assert await store.newest_first(1) == ["d"]
    log = Path(store.path) / "starts.log"
    log.write_bytes(b"x" * log.stat().st_size)  # as if starts.checked lied
    assert await store.newest_first() == ["d", "c", "b", "a"]  # from the journals
    assert await store.started_before(T0 + 1.5) == ["a", "b"]


async def test_a_read_only_store_is_listed_without_writing_anything(tmp_path: Path) -> None:
    store, fs = await store_of_four(tmp_path)
    await store.remove("b", unfinished=True)
    settle(store)
    fs.writable = False
    for _ in range(2):
        assert await store.newest_first() == ["d", "c", "a"]
    assert fs.listings == 2
    assert not checked(store).exists()
    assert "b.journal" in (Path(store.path) / "starts.log").read_text()


async def test_the_simulated_disk_stamps_each_change_of_a_directory(tmp_path: Path) -> None:
    disk = CountingDisk()
    disk.makedirs("/store/runs")
    stamps = [disk.dir_stamp("/store/runs")]
    for change in (
        lambda: disk.close(disk.create("/store/runs/a")),
        lambda: disk.append("/store/runs/b", b"x"),
        lambda: disk.rename("/store/runs/b", "/store/runs/c"),
        lambda: disk.unlink("/store/runs/a"),
        lambda: disk.discard("/store/runs/c"),
    ):
        change()
        stamps.append(disk.dir_stamp("/store/runs"))
        disk.append("/store/other", b"x")  # another directory's change
        assert disk.dir_stamp("/store/runs") == stamps[-1]
    assert len(set(stamps)) == len(stamps)
    # The FileStore on it: a count of changes is exact, so always trusted.
    store = durable.FileStore("/store", sync="none", fs=disk)
    for n, run_id in enumerate("abcd"):
        await add(store, run_id, T0 + n)
    disk.listings = 0
    assert await listings(store) == EXPECTED
    assert await listings(store) == EXPECTED
    assert disk.listings == 1
    await store.remove("b", unfinished=True)
    assert await store.newest_first() == ["d", "c", "a"]
    assert disk.listings == 2
