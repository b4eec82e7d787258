"""One contract suite run against every store, then what only the FileStore promises.

The contract (``durable._store``): ``create`` makes a run once, ``open`` hands
out the only writer of a run, appended events read back in order, records are
stamped with the highest index known durable, and a writer whose write or sync
failed refuses everything after. Every store runs the same tests through the
``store`` fixture; a new store joins by adding itself to ``STORES``.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import cbor2
import pgutil
import pytest
import trio
import trio.testing
from psycopg import sql

import durable
import sim
from durable._core import codec as _codec
from durable._core import events as ev
from durable._store import JournalWriter, Opened, Store
from durable._store_file.commit import _FileWriter

# "file-on-simdisk" is the FileStore the crash simulator runs: the same code on
# sim's simulated disk, which must behave like a real one when nothing crashes.
STORES = ["memory", "file-always", "file-batch", "file-none", "file-on-simdisk", "postgres"]


def _make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return durable.MemoryStore()
    if kind == "postgres":
        return pgutil.fresh_store()
    if kind == "file-on-simdisk":
        return durable.FileStore("/sim/store", sync="batch", fs=sim.SimDisk())
    return durable.FileStore(tmp_path / "store", sync=kind.removeprefix("file-"))


@pytest.fixture(params=STORES)
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


def started(run_id: str = "run-1", workflow: str = "wf") -> ev.RunStarted:
    return ev.RunStarted(run_id, workflow, cbor2.dumps([[run_id], {}]), 1.0)


def step(seq: int) -> ev.ActivityScheduled:
    return ev.ActivityScheduled(seq, "act", cbor2.dumps([[seq], {}]), float(seq))


def journal_bytes(store: Store, run_id: str) -> bytes:
    if isinstance(store, durable.MemoryStore):
        return bytes(store.journals[run_id])
    if isinstance(store, durable.PostgresStore):
        return pgutil.journal_bytes(store, run_id)
    assert isinstance(store, durable.FileStore)
    fd = store.fs.open(store.journal_path(run_id), write=False)
    try:
        return store.fs.read(fd)
    finally:
        store.fs.close(fd)


def stamps(data: bytes) -> list[tuple[int, int]]:
    """``(index, durable_upto)`` of every record, read straight from the journal's bytes."""
    assert data[: len(_codec.MAGIC)] == _codec.MAGIC
    out = []
    pos = _codec.HEADER_SIZE
    while pos < len(data):
        fields, pos = _codec._read_frame(data, pos)
        out.append((fields[1], fields[2]))
    return out


async def create(store: Store, run_id: str = "run-1") -> JournalWriter:
    writer = await store.create(started(run_id))
    assert writer is not None, f"create({run_id!r}) of a new run must return a writer"
    return writer


# -- the contract, for every store ------------------------------------------------


async def test_create_returns_a_writer_then_none_for_an_existing_run(store: Store) -> None:
    writer = await create(store)
    assert writer.next_index == 1
    assert await store.read("run-1") == [started()]
    # While the first writer is open, and after it closed: create never makes a second run.
    assert await store.create(started()) is None
    assert await store.create(started("run-1", workflow="other")) is None
    writer.close()
    assert await store.create(started()) is None
    assert await store.read("run-1") == [started()]


async def test_open_returns_the_events_and_a_writer_positioned_after_them(store: Store) -> None:
    writer = await create(store)
    writer.append(step(1))
    writer.append(step(2))
    await writer.sync()
    writer.close()

    opened = await store.open("run-1")
    assert opened is not None
    assert opened.events == [started(), step(1), step(2)]
    assert opened.writer.next_index == 3
    opened.writer.append(step(3))
    await opened.writer.sync()
    opened.writer.close()
    assert await store.read("run-1") == [started(), step(1), step(2), step(3)]
    assert [index for index, _ in stamps(journal_bytes(store, "run-1"))] == [0, 1, 2, 3]


async def test_appended_events_read_back_in_order(store: Store) -> None:
    writer = await create(store)
    events: list[ev.Event] = [started()]
    for seq in range(1, 30):
        event = step(seq) if seq % 3 else ev.RunResumed(float(seq), seq)
        writer.append(event)
        events.append(event)
        if seq % 7 == 0:
            await writer.sync()
    await writer.sync()
    assert writer.next_index == 30
    assert await store.read("run-1") == events  # readable while the writer is still open
    writer.close()
    assert await store.read("run-1") == events


async def test_reading_or_opening_a_missing_run_gives_none(store: Store) -> None:
    assert await store.read("nope") is None
    assert await store.open("nope") is None
    (await create(store, "other")).close()
    assert await store.read("nope") is None
    assert await store.open("nope") is None


async def test_run_ids_are_sorted(store: Store) -> None:
    assert await store.run_ids() == []
    ids = ["b", "a", "c-2", "c-10", "A", "0"]
    for run_id in ids:
        (await create(store, run_id)).close()
    assert await store.run_ids() == sorted(ids)


async def test_unfinished_lists_the_runs_that_have_not_ended(store: Store) -> None:
    for run_id in ["b", "a", "done"]:
        (await create(store, run_id)).close()
    opened = await store.open("done")
    assert opened is not None
    opened.writer.append(ev.RunCompleted(cbor2.dumps(1), 2.0))
    await opened.writer.sync()
    opened.writer.close()
    assert await store.unfinished() == ["a", "b"]


def signal(message_id: str, payload: str = "x") -> ev.SignalReceived:
    return ev.SignalReceived("decision", cbor2.dumps(payload), 1.0, message_id)


async def test_messages_wait_in_the_inbox_in_posting_order_until_removed(store: Store) -> None:
    writer = await create(store)  # held open: messages go to the inbox, not the journal
    (await create(store, "other run")).close()
    assert await store.messages("run-1") == []
    assert await store.runs_with_messages() == set()
    posted: list[ev.Message] = [signal("m-1", "a"), ev.CancelRequested("stop", 2.0, "m-2"), signal("m-3")]
    for message in posted:
        await store.post("run-1", message)
    await store.post("run-1", posted[0])  # the same message again: no duplicate
    await store.post("other run", signal("m-4"))
    assert await store.messages("run-1") == posted
    assert await store.runs_with_messages() == {"run-1", "other run"}
    await store.remove_messages("run-1", ["m-1", "m-3", "unknown"])
    assert await store.messages("run-1") == [posted[1]]
    await store.remove_messages("run-1", ["m-2"])
    assert await store.messages("run-1") == []
    assert await store.runs_with_messages() == {"other run"}
    assert await store.read("run-1") == [started()]  # the journal never saw them
    writer.close()


async def test_a_message_for_a_missing_run_is_refused(store: Store) -> None:
    with pytest.raises(durable.UnknownRunError, match="nope"):
        await store.post("nope", signal("m-1"))


async def test_wait_for_change_wakes_up_for_a_posted_message(store: Store) -> None:
    # A FileStore cannot be told of changes made by other processes: it polls.
    timeout = 0.05 if isinstance(store, durable.FileStore) else 3600
    (await create(store)).close()
    woke = trio.Event()
    if isinstance(store, durable.PostgresStore):
        with trio.fail_after(60):  # its first LISTEN counts as a change: it listens by then
            await store.wait_for_change(timeout, since=store.change_token())
    # Taken before the wait starts: a post that lands before the waiter is registered
    # (a loaded machine) still wakes it, as it does a worker's loop.
    token = store.change_token()

    async def wait() -> None:
        await store.wait_for_change(timeout, since=token)
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.01)
        await store.post("run-1", signal("m-1"))
        with trio.fail_after(60):  # a hang guard, not a timing assertion
            await woke.wait()


async def test_open_many_opens_runs_for_recovery_and_reports_each(store: Store) -> None:
    for run_id in ("a", "b", "c", "d"):
        (await create(store, run_id)).close()
    held = await store.open("b")
    assert held is not None
    results = await store.open_many(["a", "b", "c", "missing"])
    assert isinstance(results[1], durable.RunLockedError)
    assert results[3] is None
    for index, run_id in ((0, "a"), (2, "c")):
        opened = results[index]
        assert isinstance(opened, Opened) and opened.events == [started(run_id)]
        opened.writer.append(step(1))
        await opened.writer.sync()
        opened.writer.close()
    held.writer.close()
    assert await store.read("c") == [started("c"), step(1)]
    limited = await store.open_many(["a", "b", "c", "d"], limit=2)
    assert sum(isinstance(r, Opened) for r in limited) == 2
    assert sum(r is None for r in limited) == 2
    for result in limited:
        if isinstance(result, Opened):
            result.writer.close()


async def test_a_run_has_one_writer_at_a_time(store: Store) -> None:
    writer = await create(store)
    with pytest.raises(durable.RunLockedError, match="run-1") as locked:
        await store.open("run-1")
    assert locked.value.run_id == "run-1"  # the facts as attributes, in every store
    writer.close()
    writer.close()  # idempotent

    opened = await store.open("run-1")
    assert opened is not None
    with pytest.raises(durable.RunLockedError):
        await store.open("run-1")
    opened.writer.close()

    again = await store.open("run-1")
    assert again is not None
    assert again.events == [started()]
    again.writer.close()


async def test_a_failed_write_is_final(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = await create(store)
    attempts = []

    def broken(data: bytes) -> None:
        attempts.append(data)
        raise OSError(errno.EIO, "injected write error")

    monkeypatch.setattr(writer, "_write", broken)
    with pytest.raises(durable.StoreError, match="injected write error"):
        writer.append(step(1))
    assert writer.next_index == 1
    monkeypatch.undo()  # even with a working disk again, the writer stays refused
    with pytest.raises(durable.StoreError):
        writer.append(step(1))
    with pytest.raises(durable.StoreError):
        await writer.sync()
    assert len(attempts) == 1
    writer.close()


async def test_a_failed_sync_is_final_and_never_retried(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await create(store)
    writer.append(step(1))
    attempts = []

    async def broken() -> None:
        attempts.append(1)
        raise OSError(errno.EIO, "injected fsync error")

    monkeypatch.setattr(writer, "_sync", broken)
    with pytest.raises(durable.StoreError, match="injected fsync error"):
        await writer.sync()
    for _ in range(2):
        with pytest.raises(durable.StoreError):
            await writer.sync()
        with pytest.raises(durable.StoreError):
            writer.append(step(2))
    assert attempts == [1]
    writer.close()


async def test_records_are_stamped_with_the_highest_durable_index(store: Store) -> None:
    writer = await create(store)
    writer.append(step(1))
    await writer.sync()  # 0..1 durable
    writer.append(step(2))
    writer.append(step(3))
    await writer.sync()  # 0..3 durable
    await writer.sync()  # nothing new: still fine
    writer.append(step(4))
    writer.close()

    found = dict(stamps(journal_bytes(store, "run-1")))
    assert sorted(found) == [0, 1, 2, 3, 4]
    assert found[0] == -1
    assert found[2] >= 1
    assert found[3] >= 1
    assert found[4] == 3
    for index, upto in found.items():
        assert upto < index, f"record {index} claims itself durable (durable_upto={upto})"
    uptos = [found[i] for i in sorted(found)]
    assert uptos == sorted(uptos), "durable_upto must never go back"

    # A reopened journal was made durable by open(): the next record says so.
    opened = await store.open("run-1")
    assert opened is not None
    opened.writer.append(step(5))
    opened.writer.close()
    assert dict(stamps(journal_bytes(store, "run-1")))[5] == 4


async def test_the_record_after_create_knows_the_first_record_is_durable(store: Store) -> None:
    # create() returns only once RunStarted is durable (record 0), so the writer
    # knows it: stamping the next record durable_upto=-1 would let damage to
    # record 0 pass for a torn tail and silently drop the whole run.
    writer = await create(store)
    writer.append(step(1))
    writer.close()
    assert dict(stamps(journal_bytes(store, "run-1")))[1] >= 0


# -- FileStore ------------------------------------------------------------------


@pytest.fixture(params=["always", "batch", "none"])
def sync_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_unknown_sync_mode_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sync must be one of .*'always'.*'sometimes'"):
        durable.FileStore(tmp_path, sync="sometimes")


async def test_journals_are_0600_and_the_store_directories_0700(tmp_path: Path, sync_mode: str) -> None:
    store = durable.FileStore(tmp_path / "store", sync=sync_mode)
    (await create(store)).close()
    path = Path(store.journal_path("run-1"))
    assert path.parent == tmp_path / "store" / "runs"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "store" / "runs").stat().st_mode) == 0o700


ODD_IDS = ["a/b", "..", ".", "é", "x y", ".hidden", "a%2Fb", "a\\b", "-", "run.journal", "../../etc/passwd"]


async def test_odd_run_ids_map_to_safe_file_names(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store", sync="none")
    runs = tmp_path / "store" / "runs"
    for run_id in ODD_IDS:
        path = Path(store.journal_path(run_id))
        assert path.parent == runs, run_id
        assert not path.name.startswith("."), run_id
        assert "/" not in path.name, run_id
        (await create(store, run_id)).close()
        assert await store.read(run_id) == [started(run_id)]
    names = sorted(p.name for p in runs.iterdir())
    assert len(names) == len(ODD_IDS), "two run ids mapped to one file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"], "a journal escaped the store"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["due", "holders", "runs", "starts.log"]
    # The due index names its entries after the journals: nothing escaped there either.
    entries = [p for p in (tmp_path / "store" / "due").rglob("*") if p.is_file()]
    assert sorted(p.name + ".journal" for p in entries) == names
    assert await store.run_ids() == sorted(ODD_IDS)


@pytest.mark.parametrize("char", ["a", "é", "/", "%", "日"])
async def test_the_longest_valid_run_id_works_whatever_its_characters(tmp_path: Path, char: str) -> None:
    store = durable.FileStore(tmp_path / "store", sync="none")
    run_id = char * 200
    (await create(store, run_id)).close()
    assert await store.read(run_id) == [started(run_id)]
    assert await store.run_ids() == [run_id]


@pytest.mark.parametrize("bad", ["", None, 42, b"run", "x" * 201, "a\x00b"])
async def test_invalid_run_ids_are_a_clear_error(tmp_path: Path, bad: Any) -> None:
    store = durable.FileStore(tmp_path / "store", sync="none")
    for call in (
        lambda: store.create(ev.RunStarted(bad, "wf", b"", 1.0)),
        lambda: store.open(bad),
        lambda: store.read(bad),
    ):
        with pytest.raises((TypeError, ValueError), match="run id") as info:
            await call()
        assert "\n" not in str(info.value)
    runs = tmp_path / "store" / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []


UNFINISHED_CREATIONS = {
    "empty": b"",
    "part-of-magic": _codec.MAGIC[:3],
    "magic": _codec.MAGIC,
    "part-of-header": _codec.encode_header()[:15],
    "header-only": _codec.encode_header(),
    "torn-first-record": _codec.encode_header() + _codec.encode_record(started(), 0, -1)[:-3],
}


@pytest.mark.parametrize("content", UNFINISHED_CREATIONS.values(), ids=UNFINISHED_CREATIONS.keys())
async def test_a_creation_interrupted_by_a_crash_is_no_run_and_create_replaces_it(
    tmp_path: Path, content: bytes
) -> None:
    store = durable.FileStore(tmp_path / "store", sync="none")
    (await create(store, "other")).close()  # makes the directories
    path = Path(store.journal_path("run-1"))
    path.write_bytes(content)
    assert await store.read("run-1") is None
    assert await store.open("run-1") is None
    writer = await create(store)
    writer.append(step(1))
    await writer.sync()
    writer.close()
    assert await store.read("run-1") == [started(), step(1)]


async def test_an_interrupted_creation_is_not_listed(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store", sync="none")
    (await create(store, "other")).close()
    Path(store.journal_path("run-1")).write_bytes(UNFINISHED_CREATIONS["part-of-magic"])
    Path(store.journal_path("run-2")).write_bytes(UNFINISHED_CREATIONS["header-only"])
    assert await store.read("run-1") is None
    assert await store.read("run-2") is None
    assert await store.run_ids() == ["other"], "run_ids() lists runs that read() says do not exist"


async def test_a_second_store_instance_cannot_open_a_run_the_first_holds(tmp_path: Path) -> None:
    first = durable.FileStore(tmp_path / "store")
    second = durable.FileStore(tmp_path / "store")
    writer = await create(first)
    with pytest.raises(durable.RunLockedError, match="run-1"):
        await second.open("run-1")
    assert await second.create(started()) is None
    assert await second.read("run-1") == [started()]  # reading needs no lock
    writer.close()
    opened = await second.open("run-1")
    assert opened is not None
    with pytest.raises(durable.RunLockedError):
        await first.open("run-1")
    opened.writer.close()


HOLDER = textwrap.dedent(
    """
    import sys, trio, durable

    async def main():
        opened = await durable.FileStore(sys.argv[1]).open(sys.argv[2])
        print("holding" if opened else "missing", flush=True)
        sys.stdin.read()

    trio.run(main)
    """
)


async def test_a_run_held_open_by_another_process_is_locked(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    (await create(store)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "store"), "run-1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(durable.RunLockedError, match="another process"):
            await store.open("run-1")
        assert await store.create(started()) is None
    finally:
        holder.kill()  # a crashed holder releases its lock with its file descriptors
        holder.communicate()
    opened = await store.open("run-1")
    assert opened is not None
    assert opened.events == [started()]
    opened.writer.close()


class CountingFdatasync:
    """Stands in for ``os.fdatasync``: counts calls (from any thread), optionally fails."""

    def __init__(self, error: OSError | None = None) -> None:
        self.real = os.fdatasync
        self.error = error
        self.calls: list[int] = []

    def __call__(self, fd: int) -> None:
        self.calls.append(fd)
        if self.error is not None:
            raise self.error
        self.real(fd)


@pytest.mark.parametrize("mode", ["always", "batch"])
async def test_an_fsync_error_is_fatal_and_never_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    store = durable.FileStore(tmp_path / "store", sync=mode)
    writer = await create(store)
    writer.append(step(1))
    fdatasync = CountingFdatasync(OSError(errno.EIO, "Input/output error"))
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with pytest.raises(durable.StoreError, match="Input/output error"):
        await writer.sync()
    with pytest.raises(durable.StoreError):
        writer.append(step(2))
    with pytest.raises(durable.StoreError):
        await writer.sync()
    assert len(fdatasync.calls) == 1
    writer.close()


async def test_a_write_to_a_dead_file_descriptor_is_final(tmp_path: Path, sync_mode: str) -> None:
    store = durable.FileStore(tmp_path / "store", sync=sync_mode)
    writer = await create(store)
    assert isinstance(writer, durable._store_file.commit._FileWriter)
    original = writer.fd
    writer.fd = os.open(os.devnull, os.O_RDONLY)  # writes now fail with EBADF
    os.close(original)
    with pytest.raises(durable.StoreError, match="Bad file descriptor"):
        writer.append(step(1))
    with pytest.raises(durable.StoreError):
        writer.append(step(1))
    with pytest.raises(durable.StoreError):
        await writer.sync()
    writer.close()
    assert await store.read("run-1") == [started()]


async def test_group_commit_serves_many_concurrent_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = durable.FileStore(tmp_path / "store", sync="batch")
    writers = [await create(store, f"run-{i:02}") for i in range(50)]
    fdatasync = CountingFdatasync()
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    sync_calls = 0

    async def steps(writer: JournalWriter, task: int) -> None:
        # Two tasks share each writer, as concurrent activities of one run do.
        nonlocal sync_calls
        for i in range(3):
            writer.append(step(100 * task + i))
            sync_calls += 1
            await writer.sync()

    async with trio.open_nursery() as nursery:
        for writer in writers:
            for task in (1, 2):
                nursery.start_soon(steps, writer, task)

    assert sync_calls == 300
    assert 0 < len(fdatasync.calls) < sync_calls
    for i, writer in enumerate(writers):
        assert writer.next_index == 7
        writer.append(ev.RunResumed(9.0, 9))  # its stamp says what the writer knows is durable
        writer.close()
        found = stamps(journal_bytes(store, f"run-{i:02}"))
        assert [index for index, _ in found] == list(range(8))
        assert found[-1] == (7, 6), f"run-{i:02}: not every synced record is stamped durable"
        uptos = [upto for _, upto in found]
        assert uptos == sorted(uptos)
        assert len(await store.read(f"run-{i:02}") or []) == 8


async def _sync_outcome(writer: JournalWriter, outcomes: dict[str, str], name: str) -> None:
    try:
        await writer.sync()
    except durable.StoreError:
        outcomes[name] = "StoreError"
    except Exception as exc:
        outcomes[name] = f"unexpected {exc!r}"
    else:
        outcomes[name] = "ok"


class BlockingFdatasync:
    """Stands in for ``os.fdatasync``: the first call on ``blocked_fd`` waits for ``release``.

    ``done`` lists every descriptor whose fdatasync really completed.
    """

    def __init__(self, blocked_fd: int, error: OSError | None = None) -> None:
        self.real = os.fdatasync
        self.blocked_fd = blocked_fd
        self.error = error
        self.entered = threading.Event()
        self.release = threading.Event()
        self.done: list[int] = []

    def __call__(self, fd: int) -> None:
        if fd == self.blocked_fd and not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)
            if self.error is not None:
                raise self.error
        self.real(fd)
        self.done.append(fd)


async def test_batch_fsync_error_reaches_writers_queued_for_the_next_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = durable.FileStore(tmp_path / "store", sync="batch")
    first, second = await create(store, "a"), await create(store, "b")
    first.append(step(1))
    second.append(step(1))
    fake = BlockingFdatasync(first.fd, OSError(errno.EIO, "Input/output error"))  # type: ignore[attr-defined]
    monkeypatch.setattr(os, "fdatasync", fake)
    outcomes: dict[str, str] = {}
    with trio.fail_after(10):  # a hang guard, not a timing assertion
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sync_outcome, first, outcomes, "a")
            assert await trio.to_thread.run_sync(
                fake.entered.wait, 30, abandon_on_cancel=True
            )  # "a" leads a round, blocked in fdatasync
            nursery.start_soon(_sync_outcome, second, outcomes, "b")  # queues for the next round
            await trio.testing.wait_all_tasks_blocked()
            fake.release.set()
    assert outcomes["a"] == "StoreError"
    assert outcomes["b"] in ("StoreError", "ok")
    first.close()
    second.close()


async def test_a_cancelled_batch_leader_does_not_skip_the_next_rounds_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = durable.FileStore(tmp_path / "store", sync="batch")
    first, second = await create(store, "a"), await create(store, "b")
    first.append(step(1))
    second.append(step(1))
    fake = BlockingFdatasync(first.fd)  # type: ignore[attr-defined]
    monkeypatch.setattr(os, "fdatasync", fake)
    second_fd = second.fd  # type: ignore[attr-defined]
    outcomes: dict[str, str] = {}
    with trio.fail_after(10):  # a hang guard, not a timing assertion
        async with trio.open_nursery() as nursery:
            leader_scope = trio.CancelScope()

            async def leader() -> None:
                with leader_scope:
                    await _sync_outcome(first, outcomes, "a")

            nursery.start_soon(leader)
            assert await trio.to_thread.run_sync(fake.entered.wait, 30, abandon_on_cancel=True)
            nursery.start_soon(_sync_outcome, second, outcomes, "b")
            await trio.testing.wait_all_tasks_blocked()
            leader_scope.cancel()  # e.g. the leading run was cancelled
            fake.release.set()
    # Cancelling one run must neither fail another run's sync nor let it
    # return before that run's journal was really fdatasynced.
    assert outcomes.get("b") == "ok"
    assert second_fd in fake.done, "sync() returned but the journal was never fdatasynced"
    second.append(step(2))
    second.close()
    assert dict(stamps(journal_bytes(store, "b")))[2] == 1
    first.close()


@pytest.mark.parametrize("under_file", [False, True], ids=["path-is-a-file", "path-under-a-file"])
@pytest.mark.parametrize("operation", ["create", "open", "read", "run_ids"])
async def test_an_unusable_store_path_is_a_store_error(
    tmp_path: Path, under_file: bool, operation: str
) -> None:
    regular = tmp_path / "not-a-directory"
    regular.write_text("hello")
    store = durable.FileStore(regular / "store" if under_file else regular)
    calls = {
        "create": lambda: store.create(started()),
        "open": lambda: store.open("run-1"),
        "read": lambda: store.read("run-1"),
        "run_ids": lambda: store.run_ids(),
    }
    with pytest.raises(durable.StoreError) as info:
        await calls[operation]()
    message = str(info.value)
    assert "\n" not in message
    assert "not-a-directory" in message
    if operation in ("create", "open") and not under_file:
        assert "is a file, not a directory" in message
    assert regular.read_text() == "hello"


async def test_newest_first_lists_every_run_by_its_start(store: Store) -> None:
    for run_id, t in (("middle", 2.0), ("oldest", 1.0), ("newest", 3.0), ("tie-a", 2.0)):
        event = ev.RunStarted(run_id, "wf", b"\x82\x80\xa0", t)
        writer = await store.create(event)
        assert writer is not None
        writer.close()
    listed = await store.newest_first()
    if isinstance(store, durable.PostgresStore):  # by the server's clock at creation: insertion order
        assert listed == ["tie-a", "newest", "oldest", "middle"]
    else:
        assert listed == ["newest", "tie-a", "middle", "oldest"]


# --- holders and removal (durable ls states, durable rm / prune) ----------------------


async def finish(store: Store, run_id: str, t: float = 2.0) -> None:
    opened = await store.open(run_id)
    assert opened is not None
    opened.writer.append(ev.RunCompleted(cbor2.dumps(1), t))
    await opened.writer.sync()
    opened.writer.close()


async def test_holders_name_the_live_holder_and_nobody_once_let_go(store: Store) -> None:
    writer = await create(store)
    (await create(store, "free")).close()
    found = await store.holders(["run-1", "free", "no such run"])
    assert set(found) == {"run-1"} and found["run-1"].live
    if not isinstance(store, durable.PostgresStore):  # PostgreSQL: the pid of its owner string
        assert found["run-1"].pid == os.getpid()
    writer.close()
    assert await store.holders(["run-1", "free"]) == {}


# Not the MemoryStore: only this process can hold its runs, and only while it lives.
@pytest.mark.parametrize("store_kind", [kind for kind in STORES if kind != "memory"], indirect=True)
async def test_a_holder_that_died_without_letting_go_is_named_and_not_live(store: Store) -> None:
    writer = await create(store)
    if isinstance(store, durable.PostgresStore):
        pgutil.execute(
            sql.SQL("UPDATE {} SET lease_expires = now() - interval '1 second'").format(
                sql.Identifier(store.schema, "durable_runs")
            )
        )
    else:
        assert isinstance(writer, _FileWriter)
        writer.on_close = None  # as a process killed: its lock goes, its record stays
        writer.close()
    found = await store.holders(["run-1"])
    assert not found["run-1"].live
    if isinstance(store, durable.PostgresStore):
        assert found["run-1"].lease_expires is not None
    # Taken over (on PostgreSQL by another owner, as another worker): the open names whom from.
    taker = pgutil.store_on(store.schema) if isinstance(store, durable.PostgresStore) else store
    try:
        opened = await taker.open("run-1")
        assert opened is not None and opened.previous is not None and not opened.previous.live
        assert (await store.holders(["run-1"]))["run-1"].live
        opened.writer.close()
    finally:
        if taker is not store:
            await taker.aclose()
    writer.close()


async def test_remove_takes_a_finished_run_and_everything_kept_for_it(store: Store) -> None:
    (await create(store, "done")).close()
    (await create(store, "other")).close()
    await store.post("done", signal("m-1"))
    await finish(store, "done")
    assert await store.remove("done") == "removed"
    assert await store.read("done") is None
    assert await store.run_ids() == ["other"]
    assert await store.messages("done") == []
    assert "done" not in await store.newest_first()
    assert await store.remove("done") == "missing"
    (await create(store, "done")).close()  # the id can be used again
    assert await store.read("done") == [started("done")]


async def test_remove_keeps_an_unfinished_run_unless_asked_and_never_a_held_one(store: Store) -> None:
    (await create(store, "idle")).close()
    assert await store.remove("idle") == "unfinished"
    assert await store.read("idle") == [started("idle")]
    assert await store.remove("idle", unfinished=True) == "removed"
    writer = await create(store, "held")
    with pytest.raises(durable.RunLockedError):
        await store.remove("held", unfinished=True)
    assert await store.read("held") == [started("held")]
    writer.close()


async def test_finished_before_lists_the_runs_that_ended_before_a_time(store: Store) -> None:
    for run_id in ("first", "second", "open"):
        (await create(store, run_id)).close()
    now = time.time()
    await finish(store, "first", now - 2)
    await finish(store, "second", now - 1)
    assert await store.finished_before(now + 60) == ["first", "second"]
    assert await store.finished_before(1.5) == []
    assert set(await store.started_before(now + 60)) == {"first", "second", "open"}
    if not isinstance(store, durable.PostgresStore):  # PostgreSQL goes by the server's clock
        assert await store.finished_before(now - 1.5) == ["first"]


@durable.activity
async def _one() -> int:
    return 1


@durable.workflow(name="tests.stores.one_step")
def _one_step():  # type: ignore[no-untyped-def]
    return (yield _one())


async def test_a_file_store_keeps_no_holder_file_for_a_run_that_ended(tmp_path: Path) -> None:
    # A store of 100,000 finished runs kept 100,000 holder files (about 400 MB of blocks).
    store = durable.FileStore(tmp_path / "store")
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(_one_step, id="done")
        assert await handle.result() == 1
    holders = tmp_path / "store" / "holders"
    assert not holders.exists() or list(holders.iterdir()) == []
    assert await store.holders(["done"]) == {}


async def test_a_file_stores_holder_file_starts_over_once_it_grew(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    (await create(store, "often")).close()
    for _ in range(150):  # let go and taken back many times: two lines each
        opened = await store.open("often")
        assert opened is not None
        opened.writer.close()
    record = tmp_path / "store" / "holders" / "often"
    assert 0 < record.stat().st_size <= 4096 + 200
    opened = await store.open("often")
    assert opened is not None
    found = await store.holders(["often"])
    assert found["often"].pid == os.getpid() and found["often"].live
    opened.writer.close()
    assert await store.holders(["often"]) == {}
