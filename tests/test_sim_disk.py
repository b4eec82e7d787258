"""The simulated disk's fault model (docs/journal-v1.md §15), tested directly on ``sim.SimDisk``.

``kill`` keeps everything the process wrote; a power loss (``drop``, ``torn``,
``zeros``, ``garbage``, ``hole``) loses or damages unsynced bytes only (F1-F5),
never synced ones (F8); a file created since its directory's last fsync may
vanish (F6); an unsynced truncate may be lost (F7). Crash points are numbered,
and a crashed process can do nothing more. The real ``durable.FileStore`` runs
on the simulated disk as it does on a real one.
"""

from __future__ import annotations

import errno
import random
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import durable
import sim
from durable.lowlevel import (
    ActivityCompleted,
    ActivityScheduled,
    RunStarted,
    dumps_value,
    encode_header,
    encode_record,
)
from sim._disk import Crasher

DIR = "/data"
PATH = "/data/f.journal"
POWER_LOSSES = tuple(kind for kind in sim.DISK_FAULTS if kind != "kill")


def new_file(disk: sim.SimDisk, path: str = PATH, *, durable_entry: bool = True) -> int:
    """Create ``path`` and, unless told otherwise, make its directory entry durable."""
    disk.makedirs(DIR)
    fd = disk.create(path)
    if durable_entry:
        disk.fsync_dir(DIR)
    return fd


def content(disk: sim.SimDisk, path: str = PATH) -> bytes:
    return bytes(disk.files[path].data)


def synced(disk: sim.SimDisk, path: str = PATH) -> bytes:
    return bytes(disk.files[path].synced)


# --- what survives a crash --------------------------------------------------------


def test_drop_loses_unsynced_writes() -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, b"synced ")
    disk.fdatasync(fd)
    disk.write(fd, b"lost")
    assert content(disk) == b"synced lost"
    damage = disk.crash("drop", random.Random(0))
    assert content(disk) == b"synced "
    assert [(d.path, d.kept, d.lost) for d in damage] == [(PATH, 7, 4)]


def test_kill_keeps_everything_written() -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, b"synced ")
    disk.fdatasync(fd)
    disk.write(fd, b"in the page cache")
    assert disk.crash("kill", random.Random(0)) == []
    assert content(disk) == b"synced in the page cache"


@pytest.mark.parametrize("seed", range(20))
def test_torn_keeps_a_prefix_of_the_unsynced_tail(seed: int) -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, b"0123456789")
    disk.fdatasync(fd)
    disk.write(fd, b"abcdefghij")
    disk.write(fd, b"klmnopqrst")
    disk.crash("torn", random.Random(seed))
    after = content(disk)
    assert after.startswith(b"0123456789")
    assert b"0123456789abcdefghijklmnopqrst".startswith(after)
    assert len(after) < 30  # never the whole tail


def test_torn_cuts_at_different_bytes_for_different_seeds() -> None:
    lengths = set()
    for seed in range(30):
        disk = sim.SimDisk()
        fd = new_file(disk)
        disk.write(fd, bytes(range(1, 65)))
        disk.crash("torn", random.Random(seed))
        lengths.add(len(content(disk)))
    assert len(lengths) > 5


def test_same_seed_same_damage() -> None:
    results = []
    for _ in range(2):
        disk = sim.SimDisk()
        fd = new_file(disk)
        disk.write(fd, b"synced")
        disk.fdatasync(fd)
        disk.write(fd, bytes(range(1, 200)))
        damage = disk.crash("garbage", random.Random("fixed"))
        results.append((content(disk), damage))
    assert results[0] == results[1]


Op = tuple[str, bytes]
OPS = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=24).map(lambda data: ("write", data)),
        st.just(("fsync", b"")),
    ),
    max_size=16,
)


def _is_zeroed_suffix(rest: bytes, tail: bytes) -> bool:
    """``rest`` is a prefix of ``tail`` followed by zeros up to the tail's length."""
    return len(rest) == len(tail) and any(
        rest == tail[:k] + bytes(len(tail) - k) for k in range(len(tail) + 1)
    )


def _is_holed(rest: bytes, tail: bytes) -> bool:
    """``rest`` is ``tail`` with one contiguous region zeroed."""
    if len(rest) != len(tail):
        return False
    return rest == tail or any(
        rest == tail[:start] + bytes(end - start) + tail[end:]
        for start in range(len(tail))
        for end in range(start + 1, len(tail) + 1)
    )


@given(ops=OPS, how=st.sampled_from(sim.DISK_FAULTS), seed=st.integers(0, 2**32 - 1))
def test_a_crash_never_changes_synced_bytes(ops: list[Op], how: str, seed: int) -> None:
    """F8 for every fault kind, and each kind's own shape of damage to the unsynced tail."""
    disk = sim.SimDisk()
    fd = new_file(disk)
    written = durable_part = b""
    for op, data in ops:
        if op == "write":
            disk.write(fd, data)
            written += data
        else:
            disk.fdatasync(fd)
            durable_part = written
    assert content(disk) == written
    assert synced(disk) == durable_part

    disk.crash(how, random.Random(seed))
    after = content(disk)
    tail = written[len(durable_part) :]
    rest = after[len(durable_part) :]

    assert after[: len(durable_part)] == durable_part  # F8
    if how == "kill":
        assert after == written
    elif how == "drop":
        assert after == durable_part
    elif how == "torn":
        assert written.startswith(after)
        assert len(rest) < len(tail) or not tail
    elif how == "zeros":
        assert _is_zeroed_suffix(rest, tail)
    elif how == "garbage":
        assert len(rest) == len(tail)
    else:
        assert how == "hole"
        assert _is_holed(rest, tail)
    if how == "kill":
        # The OS survived: what the process wrote sits in the page cache, still unsynced.
        assert synced(disk) == durable_part
    else:
        # What survived a power loss is on disk now: a second power loss changes nothing.
        assert synced(disk) == after
        disk.crash("drop", random.Random(seed))
        assert content(disk) == after


@pytest.mark.parametrize("how", sim.DISK_FAULTS)
def test_nothing_unsynced_means_nothing_to_damage(how: str) -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, b"all of it synced")
    disk.fdatasync(fd)
    assert disk.crash(how, random.Random(1)) == []
    assert content(disk) == b"all of it synced"


def test_crash_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="disk fault"):
        sim.SimDisk().crash("flood", random.Random(0))


# --- directory entries (F6) and truncates (F7) --------------------------------------


@pytest.mark.parametrize("how", POWER_LOSSES)
def test_new_file_without_directory_fsync_vanishes_on_power_loss(how: str) -> None:
    disk = sim.SimDisk()
    fd = new_file(disk, durable_entry=False)
    disk.write(fd, b"fsynced content")
    disk.fdatasync(fd)  # the content is durable, the name is not
    damage = disk.crash(how, random.Random(0))
    assert PATH not in disk.files
    assert disk.listdir(DIR) == []
    assert [(d.path, d.how) for d in damage] == [(PATH, "file vanished (directory not fsynced)")]


def test_new_file_without_directory_fsync_survives_kill() -> None:
    disk = sim.SimDisk()
    fd = new_file(disk, durable_entry=False)
    disk.write(fd, b"written")
    disk.crash("kill", random.Random(0))
    assert content(disk) == b"written"


@pytest.mark.parametrize("how", POWER_LOSSES)
def test_new_file_with_directory_fsync_survives_power_loss(how: str) -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, b"synced")
    disk.fdatasync(fd)
    disk.crash(how, random.Random(0))
    assert disk.listdir(DIR) == ["f.journal"]
    assert content(disk) == b"synced"


def test_unlink_is_durable_only_after_directory_fsync() -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, b"synced")
    disk.fdatasync(fd)
    disk.close(fd)
    disk.unlink(PATH)
    assert disk.listdir(DIR) == []
    disk.crash("drop", random.Random(0))
    assert content(disk) == b"synced"  # the unlink was lost: the file is back
    disk.unlink(PATH)
    disk.fsync_dir(DIR)
    disk.crash("drop", random.Random(0))
    assert PATH not in disk.files


def test_unsynced_truncate_may_be_lost() -> None:
    outcomes = set()
    for seed in range(40):
        disk = sim.SimDisk()
        fd = new_file(disk)
        disk.write(fd, b"keep+stale-tail")
        disk.fdatasync(fd)
        disk.truncate(fd, 5)
        assert content(disk) == b"keep+"
        disk.crash("drop", random.Random(seed))
        outcomes.add(content(disk))
    assert outcomes == {b"keep+", b"keep+stale-tail"}


@pytest.mark.parametrize("how", sim.DISK_FAULTS)
def test_synced_truncate_stays(how: str) -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, b"keep+stale-tail")
    disk.fdatasync(fd)
    disk.truncate(fd, 5)
    disk.fdatasync(fd)
    disk.crash(how, random.Random(3))
    assert content(disk) == b"keep+"


def test_truncate_kept_by_kill() -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, b"keep+stale-tail")
    disk.fdatasync(fd)
    disk.truncate(fd, 5)
    disk.crash("kill", random.Random(0))
    assert content(disk) == b"keep+"


def test_bit_rot_flips_one_bit_of_synced_content() -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, bytes(16))
    disk.fdatasync(fd)
    disk.rot(PATH, 5, random.Random(0))
    after = content(disk)
    assert [i for i, byte in enumerate(after) if byte] == [5]
    assert bin(after[5]).count("1") == 1
    with pytest.raises(ValueError, match="past the durable content"):
        disk.rot(PATH, 16, random.Random(0))


# --- crash points -------------------------------------------------------------------


def test_crash_points_are_numbered_in_order() -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, b"x")
    disk.fdatasync(fd)
    disk.truncate(fd, 0)
    disk.unlink(PATH)
    kinds = [(p.number, p.kind, p.target) for p in disk.crasher.points]
    assert kinds == [
        (1, "create", "f.journal"),
        (2, "before fsync of directory", "data"),
        (3, "after fsync of directory", "data"),
        (4, "before write", "f.journal"),
        (5, "after write", "f.journal"),
        (6, "before fsync", "f.journal"),
        (7, "after fsync", "f.journal"),
        (8, "before truncate", "f.journal"),
        (9, "before unlink", "f.journal"),
    ]
    assert disk.crasher.crashed is None


def test_crash_at_the_chosen_point_calls_on_crash_once() -> None:
    calls = []
    crasher = Crasher(crash_at=5, on_crash=lambda: calls.append("crashed"))
    disk = sim.SimDisk(crasher)
    fd = new_file(disk)  # points 1-3
    with pytest.raises(sim.SimulatedCrash, match="after write"):
        disk.write(fd, b"first")  # points 4 ("before write") and 5 ("after write")
    assert crasher.crashed is not None
    assert (crasher.crashed.number, crasher.crashed.kind) == (5, "after write")
    assert crasher.crashed is crasher.points[-1]
    with pytest.raises(sim.SimulatedCrash):
        disk.fdatasync(fd)
    assert calls == ["crashed"]


def test_crash_raises_at_the_point_and_every_later_operation_raises_too() -> None:
    crasher = Crasher(crash_at=4)
    disk = sim.SimDisk(crasher)
    fd = new_file(disk)  # points 1-3
    with pytest.raises(sim.SimulatedCrash, match="before write"):
        disk.write(fd, b"never written")  # point 4: "before write"
    assert content(disk) == b""  # it crashed before the write
    assert [p.number for p in crasher.points] == [1, 2, 3, 4]

    later = [
        lambda: disk.write(fd, b"more"),
        lambda: disk.fdatasync(fd),
        lambda: disk.truncate(fd, 0),
        lambda: disk.create(DIR + "/other.journal"),
        lambda: disk.unlink(PATH),
        lambda: disk.fsync_dir(DIR),
        lambda: trio.run(disk.fdatasync_many, [fd]),
        lambda: crasher.hit("anything", "anywhere"),
    ]
    for operation in later:
        with pytest.raises(sim.SimulatedCrash):
            operation()
    assert content(disk) == b""
    assert [p.number for p in crasher.points] == [1, 2, 3, 4]  # no point after the crash


def test_crash_after_write_leaves_the_bytes_in_the_page_cache_only() -> None:
    for how, expected in [("kill", b"synced+unsynced"), ("drop", b"synced")]:
        crasher = Crasher()
        disk = sim.SimDisk(crasher)
        fd = new_file(disk)
        disk.write(fd, b"synced")
        disk.fdatasync(fd)
        crasher.crash_at = len(crasher.points) + 2  # the "after write" of the next write
        with pytest.raises(sim.SimulatedCrash, match="after write"):
            disk.write(fd, b"+unsynced")
        disk.crash(how, random.Random(0))
        assert content(disk) == expected


def test_simulated_crash_is_not_an_exception() -> None:
    """Nothing in durable may catch it with ``except Exception``."""
    assert issubclass(sim.SimulatedCrash, BaseException)
    assert not issubclass(sim.SimulatedCrash, Exception)


def test_write_labels_name_the_records() -> None:
    crasher = Crasher()
    disk = sim.SimDisk(crasher)
    fd = new_file(disk)
    started = RunStarted("r", "wf", dumps_value([[], {}]), 1.0)
    scheduled = ActivityScheduled(0, "act", dumps_value([[], {}]), 2.0)
    completed = ActivityCompleted(0, dumps_value("ok"), 1, 3.0)
    disk.write(fd, encode_header() + encode_record(started, 0, -1))
    disk.write(fd, encode_record(scheduled, 1, 0))
    disk.write(fd, encode_record(completed, 2, 0) + b"\xd5J torn")
    labels = [p.label for p in crasher.points if p.kind == "before write"]
    assert labels[0] == "before write of header + RunStarted to f.journal"
    assert labels[1] == "before write of ActivityScheduled(seq=0) to f.journal"
    assert labels[2].startswith("before write of ActivityCompleted(seq=0) + ")


def test_fsync_error_at_the_chosen_point() -> None:
    """The opt-in ``eio`` fault: the fsync fails, and a retried fsync is recorded (fsyncgate)."""
    crasher = Crasher(crash_at=6, fail_fsync=True)
    disk = sim.SimDisk(crasher)
    fd = new_file(disk)
    disk.write(fd, b"data")  # points 4, 5
    with pytest.raises(OSError) as raised:
        disk.fdatasync(fd)  # point 6
    assert raised.value.errno == errno.EIO
    assert synced(disk) == b""
    assert disk.fsync_retried == []
    disk.fdatasync(fd)
    assert disk.fsync_retried == [PATH]


# --- locks and file descriptors -----------------------------------------------------


def test_a_second_fd_cannot_lock_a_locked_file() -> None:
    disk = sim.SimDisk()
    first = new_file(disk)
    second = disk.open(PATH, write=True)
    assert disk.lock(first)
    assert disk.lock(first)  # the holder may ask again
    assert not disk.lock(second)
    disk.close(first)
    assert disk.lock(second)


def test_crash_releases_locks_and_closes_fds() -> None:
    disk = sim.SimDisk()
    fd = new_file(disk)
    disk.write(fd, b"x")
    disk.fdatasync(fd)
    assert disk.lock(fd)
    disk.crash("kill", random.Random(0))
    with pytest.raises(OSError) as raised:
        disk.write(fd, b"y")
    assert raised.value.errno == errno.EBADF
    again = disk.open(PATH, write=True)
    assert disk.lock(again)


def test_create_is_exclusive_and_needs_its_directory() -> None:
    disk = sim.SimDisk()
    new_file(disk)
    with pytest.raises(FileExistsError):
        disk.create(PATH)
    with pytest.raises(FileNotFoundError):
        disk.create("/missing/dir/f.journal")
    with pytest.raises(FileNotFoundError):
        disk.open("/data/missing.journal", write=False)


# --- the real FileStore on the simulated disk ---------------------------------------


async def _store_round_trip(store: durable.FileStore) -> dict[str, Any]:
    started = RunStarted("run-1", "wf", dumps_value([[1, "a"], {}]), 1.0)
    writer = await store.create(started)
    assert writer is not None
    writer.append(ActivityScheduled(0, "act", dumps_value([["x"], {}]), 2.0))
    writer.append(ActivityCompleted(0, dumps_value({"ok": [1, 2]}), 1, 3.0))
    await writer.sync()
    with pytest.raises(durable.RunLockedError):
        await store.open("run-1")  # the writer still holds the run
    writer.close()
    read = await store.read("run-1")
    opened = await store.open("run-1")
    assert opened is not None
    opened.writer.close()
    return {
        "read": read,
        "opened": opened.events,
        "next_index": opened.writer.next_index,
        "ids": await store.run_ids(),
        "exists": await store.create(started),
        "missing": (await store.read("nope"), await store.open("nope")),
    }


def test_filestore_on_simdisk_behaves_like_on_a_real_disk(tmp_path: Path) -> None:
    disk = sim.SimDisk()
    on_sim = trio.run(_store_round_trip, durable.FileStore("/sim", fs=disk))
    real = durable.FileStore(tmp_path / "store")
    on_real = trio.run(_store_round_trip, real)
    assert on_sim == on_real
    assert [type(e).__name__ for e in on_sim["read"]] == [
        "RunStarted",
        "ActivityScheduled",
        "ActivityCompleted",
    ]
    assert on_sim["ids"] == ["run-1"]
    assert on_sim["exists"] is None
    assert on_sim["missing"] == (None, None)
    # The same code wrote the same bytes.
    sim_path = durable.FileStore("/sim", fs=disk).journal_path("run-1")
    assert content(disk, sim_path) == Path(real.journal_path("run-1")).read_bytes()
    # And made them durable, directory entry included: a power loss keeps the whole run.
    disk.crash("drop", random.Random(0))
    assert trio.run(durable.FileStore("/sim", fs=disk).read, "run-1") == on_sim["read"]


CALLS: list[int] = []


@durable.activity(name="test_sim_disk.square")
def square(x: int) -> int:
    CALLS.append(x)
    return x * x


@durable.workflow(name="test_sim_disk.sum_of_squares")
def sum_of_squares(n: int):
    total = 0
    for i in range(n):
        total += yield square(i)
    return total


def test_durable_run_on_simdisk_round_trip(tmp_path: Path) -> None:
    results = []
    for store in (durable.FileStore("/sim", fs=sim.SimDisk()), durable.FileStore(tmp_path / "store")):
        CALLS.clear()
        first = durable.run(sum_of_squares, 4, id="squares", store=store)
        again = durable.run(sum_of_squares, 4, id="squares", store=store)  # attaches: runs nothing
        results.append((first, again, list(CALLS)))
    assert results[0] == results[1] == (14, 14, [0, 1, 2, 3])


# --- the private trio API the simulator relies on -----------------------------------


def test_trio_private_scheduling_api_exists() -> None:
    """sim seeds trio's scheduler through private names: a trio upgrade that drops them must fail here."""
    run_module: Any = trio._core._run
    assert isinstance(run_module._r, random.Random)
    assert hasattr(run_module, "_ALLOW_DETERMINISTIC_SCHEDULING")
    assert isinstance(run_module._ALLOW_DETERMINISTIC_SCHEDULING, bool)
