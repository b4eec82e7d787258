"""What the FileStore does with a hostile or odd file system (SPEC §4, guarantees 8 and 9).

One run has one executor, even when a process is paused between opening a
journal and locking it while ``continue_as_new`` replaces that journal. What is
wrong with one run's entry (a journal durable may not read, a directory, FIFO
or symbolic link where a journal should be, a journal naming another run) is
that run's error: every other run goes on. Store files are never written
through a symbolic link, and a store directory other users may write is
refused.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio

import durable
import sim
from durable._core import events as ev
from durable._core.errors import JournalUnreadableError, UnsafeStoreError
from durable._core.ids import check_run_id
from durable._fs import OsFileSystem
from durable.lowlevel import FileSystem

needs_non_root = pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads a file whatever its mode (the FileSystem wrapper test covers it)"
)


def started(run_id: str, incarnation: int = 0) -> ev.RunStarted:
    return ev.RunStarted(run_id, "wf", cbor2.dumps([[run_id], {}]), 1.0, incarnation)


def step(seq: int) -> ev.ActivityScheduled:
    return ev.ActivityScheduled(seq, "act", cbor2.dumps([[seq], {}]), float(seq))


async def make_run(store: durable.FileStore, run_id: str, *events: ev.Event) -> None:
    writer = await store.create(started(run_id))
    assert writer is not None
    for event in events:
        writer.append(event)
    await writer.sync()
    writer.close()


def finish(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a store coroutine that never waits (FileStore.restart with sync="always") to its end."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine waited; this helper only runs ones that do not")


class Wrapped:
    """A FileSystem that forwards every call to ``inner``; subclasses change a few."""

    def __init__(self, inner: FileSystem) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PauseBeforeLock(Wrapped):
    """Runs ``pause`` once, at the first lock: what another process does while this one
    was preempted between opening a journal and locking it."""

    def __init__(self, inner: FileSystem, pause: Callable[[], None]) -> None:
        super().__init__(inner)
        self.pause: Callable[[], None] | None = pause

    def lock(self, fd: int) -> bool:
        if self.pause is not None:
            pause, self.pause = self.pause, None
            pause()
        return bool(self.inner.lock(fd))


class Unreadable(Wrapped):
    """Opening the files whose name holds ``marker`` fails with permission denied."""

    def __init__(self, inner: FileSystem, marker: str) -> None:
        super().__init__(inner)
        self.marker = marker

    def open(self, path: str, *, write: bool) -> int:
        if self.marker in os.path.basename(path):
            raise PermissionError(13, "Permission denied", path)
        return int(self.inner.open(path, write=write))


def disk(kind: str, tmp_path: Path) -> tuple[FileSystem, str]:
    if kind == "os":
        return OsFileSystem(), str(tmp_path / "store")
    return sim.SimDisk(), "/sim/store"


# -- one run, one executor: a lock on a journal that continue_as_new replaced -------------


@pytest.mark.parametrize("kind", ["os", "simdisk"])
@pytest.mark.parametrize("holder_goes_on", [True, False], ids=["holder-keeps-it", "holder-exits"])
async def test_an_opener_paused_before_its_lock_never_holds_the_journal_continue_as_new_replaced(
    tmp_path: Path, kind: str, holder_goes_on: bool
) -> None:
    fs, root = disk(kind, tmp_path)
    holder_store = durable.FileStore(root, fs=fs)
    await make_run(holder_store, "r")
    opened = await holder_store.open("r")
    assert opened is not None
    opened.writer.append(step(0))
    opened.writer.append(ev.RunContinuedAsNew(cbor2.dumps([[1], {}]), 2.0))
    fresh: list[durable.lowlevel.JournalWriter] = []

    def continue_as_new() -> None:  # the holder, while the other process is preempted
        fresh.append(finish(holder_store.restart(started("r", 1), opened.writer)))
        if not holder_goes_on:
            fresh[0].close()

    other = durable.FileStore(root, fs=PauseBeforeLock(fs, continue_as_new))  # type: ignore[arg-type]
    if holder_goes_on:
        with pytest.raises(durable.RunLockedError):
            await other.open("r")
    else:
        taken = await other.open("r")
        assert taken is not None
        assert taken.events == [started("r", 1)], "the second opener holds the replaced journal"
        taken.writer.close()
    assert fresh, "the pause never ran"
    fresh[0].close()


async def test_a_creator_whose_new_file_was_removed_before_its_lock_does_not_write_to_it(
    tmp_path: Path,
) -> None:
    fs = OsFileSystem()
    store = durable.FileStore(tmp_path / "store", fs=fs)
    await make_run(store, "other")  # makes the directories
    path = store.journal_path("r")

    def removed_as_unfinished() -> None:  # another creator finds the empty file and removes it
        os.unlink(path)

    creator = durable.FileStore(tmp_path / "store", fs=PauseBeforeLock(fs, removed_as_unfinished))  # type: ignore[arg-type]
    writer = await creator.create(started("r"))
    assert writer is not None
    writer.close()
    assert await store.read("r") == [started("r")], "the run was journaled in a file no path leads to"


def test_simdisk_descriptors_keep_the_file_they_opened() -> None:
    disk_ = sim.SimDisk()
    disk_.makedirs("/d")
    old = disk_.create("/d/j")
    disk_.write(old, b"old")
    staged = disk_.create("/d/j.next")
    disk_.write(staged, b"new")
    assert disk_.lock(staged)
    disk_.rename("/d/j.next", "/d/j")
    assert not disk_.same_file(old, "/d/j")
    assert disk_.same_file(staged, "/d/j")
    assert disk_.read(old) == b"old", "a descriptor follows the path instead of its file"
    assert disk_.lock(old), "the replaced file's lock is the new file's"
    reopened = disk_.open("/d/j", write=True)
    assert not disk_.lock(reopened), "the lock did not move with the renamed file"
    disk_.write(old, b"lost")
    assert disk_.stale_writes == ["/d/j"]


# -- one unreadable entry stays that run's ------------------------------------------------


async def test_a_journal_durable_may_not_read_is_that_runs_error_alone(tmp_path: Path) -> None:
    setup = durable.FileStore(tmp_path / "store")
    for run_id in ("a", "b-locked-out", "c"):
        await make_run(setup, run_id, step(0))
    store = durable.FileStore(tmp_path / "store", fs=Unreadable(OsFileSystem(), "locked-out"))  # type: ignore[arg-type]
    assert await store.run_ids() == ["a", "b-locked-out", "c"]
    assert await store.unfinished() == ["a", "b-locked-out", "c"]
    with pytest.raises(durable.JournalCorruptError, match=r"permission denied.*chmod 600") as info:
        await store.read("b-locked-out")
    assert isinstance(info.value, JournalUnreadableError)
    assert info.value.run_id == "b-locked-out"
    assert "\n" not in str(info.value)
    results = await store.open_many(["a", "b-locked-out", "c"])
    assert isinstance(results[1], durable.JournalCorruptError)
    assert all(isinstance(r, durable.lowlevel.Opened) for r in (results[0], results[2]))
    for result in results:
        if isinstance(result, durable.lowlevel.Opened):
            result.writer.close()


@needs_non_root
async def test_a_journal_with_mode_000_is_that_runs_error_alone(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    for run_id in ("a", "b", "c"):
        await make_run(store, run_id, step(0))
    Path(store.journal_path("b")).chmod(0)
    assert await store.unfinished() == ["a", "b", "c"]
    with pytest.raises(durable.JournalCorruptError, match="permission denied"):
        await store.open("b")


ODD_ENTRIES = {
    "directory": lambda path: path.mkdir(),
    "fifo": lambda path: os.mkfifo(path),
    "symlink-to-dev-zero": lambda path: path.symlink_to("/dev/zero"),
    "symlink-to-a-journal": lambda path: path.symlink_to(path.with_name("a.journal")),
    "dangling-symlink": lambda path: path.symlink_to(path.with_name("nowhere")),
}


@pytest.mark.parametrize("make", ODD_ENTRIES.values(), ids=ODD_ENTRIES.keys())
async def test_an_entry_that_is_no_journal_file_is_that_runs_error_alone(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    store = durable.FileStore(tmp_path / "store")
    for run_id in ("a", "c"):
        await make_run(store, run_id, step(0))
    make(Path(store.journal_path("b")))
    with trio.fail_after(10):  # a FIFO must not make a reader wait for a writer
        listed = await store.run_ids()
        unfinished = await store.unfinished()
        results = await store.open_many(["a", "b", "c"])
        with pytest.raises(durable.JournalCorruptError, match="not a journal file") as info:
            await trio.to_thread.run_sync(lambda: trio.run(store.read, "b"), abandon_on_cancel=True)
    assert "a" in listed and "c" in listed
    assert set(unfinished) >= {"a", "c"}
    assert isinstance(results[1], durable.JournalCorruptError)
    assert "b" in str(results[1]) and "\n" not in str(results[1])
    assert isinstance(info.value, JournalUnreadableError)
    for result in (results[0], results[2]):
        assert isinstance(result, durable.lowlevel.Opened)
        result.writer.close()


def test_recover_runs_the_other_runs_beside_a_directory_named_like_a_journal(tmp_path: Path) -> None:
    @durable.workflow(name="tests.hardening.echo")
    def echo(x: int) -> Any:
        return x
        yield

    async def main() -> None:
        store = durable.FileStore(tmp_path / "store")
        async with durable.Runtime(store) as runtime:
            for run_id in ("a", "c"):
                handle = await runtime.start(echo, 1, id=run_id)
                await handle.result()
        call = durable.lowlevel.dumps_value([[1], {}])
        for run_id in ("a", "b", "c"):  # three unfinished runs, as a crash leaves them
            Path(store.journal_path(run_id)).unlink(missing_ok=True)
            writer = await store.create(ev.RunStarted(run_id, "tests.hardening.echo", call, 1.0))
            assert writer is not None
            writer.close()
        # b's journal is replaced by a directory (recovery looks at the runs the store's
        # index lists: a run it created, whatever is in its place now).
        Path(store.journal_path("b")).unlink()
        Path(store.journal_path("b")).mkdir()
        async with durable.Runtime(store) as runtime:
            handles = {h.run_id: h for h in await runtime.recover()}
            assert sorted(handles) == ["a", "b", "c"]
            assert await handles["a"].result() == 1
            assert await handles["c"].result() == 1
            with pytest.raises(durable.JournalCorruptError, match="a directory, not a journal file"):
                await handles["b"].result()

    trio.run(main)


# -- a journal is the journal of the run it is named for ----------------------------------


async def test_a_journal_naming_another_run_is_refused(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    await make_run(store, "other", step(0))
    await make_run(store, "victim")
    Path(store.journal_path("victim")).write_bytes(Path(store.journal_path("other")).read_bytes())
    with pytest.raises(durable.JournalCorruptError, match=r"starts run 'other'.*named for run 'victim'"):
        await store.read("victim")
    with pytest.raises(durable.JournalCorruptError, match="starts run 'other'"):
        await store.open("victim")
    assert await store.read("other") == [started("other"), step(0)]


# -- symbolic links and permissions -------------------------------------------------------


async def test_continue_as_new_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    await make_run(store, "r")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    Path(store.journal_path("r") + ".next").symlink_to(victim)
    opened = await store.open("r")
    assert opened is not None
    opened.writer.append(ev.RunContinuedAsNew(cbor2.dumps([[1], {}]), 2.0))
    fresh = await store.restart(started("r", 1), opened.writer)
    fresh.close()
    assert victim.read_text() == "precious"
    assert not Path(store.journal_path("r")).is_symlink()
    assert await store.read("r") == [started("r", 1)]


async def test_a_message_is_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    await make_run(store, "r")
    (tmp_path / "store" / "inbox").mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "store" / "inbox" / ".staged-m1").symlink_to(victim)
    await store.post("r", ev.SignalReceived("go", cbor2.dumps(1), 2.0, "m1"))
    assert victim.read_text() == "precious"
    assert [m.message_id for m in await store.messages("r")] == ["m1"]


@pytest.mark.parametrize("where", ["store", "runs", "inbox"])
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
async def test_a_store_directory_others_may_write_is_refused(tmp_path: Path, where: str, mode: int) -> None:
    root = tmp_path / "store"
    for directory in (root, root / "runs", root / "inbox"):
        directory.mkdir(mode=0o700)
    target = root if where == "store" else root / where
    target.chmod(mode)
    store = durable.FileStore(root)
    with pytest.raises(durable.StoreError, match=re.escape(f"chmod 700 {target}")) as info:
        if where == "inbox":
            await make_run(store, "r")
            await store.post("r", ev.SignalReceived("go", cbor2.dumps(1), 2.0, "m1"))
        else:
            await store.create(started("r"))
    assert isinstance(info.value, UnsafeStoreError)
    assert info.value.path == str(target) and info.value.mode == mode
    assert f"{mode:04o}" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
async def test_a_store_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(UnsafeStoreError, match=r"owned by another user.*chown 0") as info:
        await durable.FileStore(root).create(started("r"))
    assert info.value.owner == 65534


async def test_new_store_directories_pass_the_check(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "a" / "b" / "store")
    await make_run(store, "r")
    await store.post("r", ev.SignalReceived("go", cbor2.dumps(1), 2.0, "m1"))
    assert (tmp_path / "a" / "b" / "store" / "inbox").stat().st_mode & 0o777 == 0o700


# -- a dangling symlink where a journal should be -----------------------------------------


async def test_creating_a_run_over_a_dangling_symlink_is_one_clear_error(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    await make_run(store, "other")
    Path(store.journal_path("r")).symlink_to(tmp_path / "nowhere")
    with pytest.raises(durable.StoreError, match="is a symbolic link, not a journal file"):
        await store.create(started("r"))
    assert not (tmp_path / "nowhere").exists()


def test_durable_run_over_a_dangling_symlink_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "echo_wf.py").write_text(
        textwrap.dedent(
            """
            import durable

            @durable.workflow
            def echo(x):
                return x
                yield
            """
        )
    )
    store = durable.FileStore(tmp_path / "store")
    trio.run(make_run, store, "other")
    Path(store.journal_path("r")).symlink_to(tmp_path / "nowhere")
    durable_script = Path(sys.executable).parent / "durable"
    done = subprocess.run(
        [str(durable_script), "run", "--id", "r", f"{tmp_path / 'echo_wf.py'}:echo", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, DURABLE_STORE=str(tmp_path / "store")),
    )
    assert done.returncode == 2, done.stderr
    assert "symbolic link" in done.stderr
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr


# -- processes using a fresh store at once ------------------------------------------------


def test_a_directory_made_meanwhile_by_another_process_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkdir = os.mkdir

    def racing_mkdir(path: Any, mode: int = 0o777) -> None:
        real_mkdir(path, mode)  # another process was first
        real_mkdir(path, mode)

    monkeypatch.setattr(os, "mkdir", racing_mkdir)
    OsFileSystem().makedirs(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        OsFileSystem().makedirs(str(tmp_path / "file"))


RACER = textwrap.dedent(
    """
    import sys, time, trio, durable
    from durable.lowlevel import RunStarted

    async def main():
        store = durable.FileStore(sys.argv[1])
        while time.time() < float(sys.argv[3]):
            pass
        writer = await store.create(RunStarted(sys.argv[2], "wf", b"\\x82\\x80\\xa0", 1.0))
        writer.close()

    trio.run(main)
    """
)


def test_six_processes_using_a_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    for round_ in range(3):
        root = tmp_path / f"round{round_}" / "deep" / "er" / "store"
        start = time.time() + 1.5  # after every interpreter has started
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, str(root), f"run-{i}", str(start)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(6)
        ]
        errors = [racer.communicate(timeout=120)[1] for racer in racers]
        assert all(racer.returncode == 0 for racer in racers), "\n".join(errors)
        assert len(os.listdir(root / "runs")) == 6


# -- run ids ------------------------------------------------------------------------------


def test_a_run_id_with_a_lone_surrogate_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="lone surrogate") as info:
        check_run_id("order-\udc80")
    assert not isinstance(info.value, UnicodeError)


async def test_a_store_refuses_a_run_id_with_a_lone_surrogate(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    with pytest.raises(ValueError, match="lone surrogate"):
        await store.create(ev.RunStarted("order-\udc80", "wf", cbor2.dumps([[], {}]), 1.0))


# -- every file-system failure is a StoreError, in its run's place ------------------------


class FailingOn(Wrapped):
    """``method`` fails with ``error`` for the paths (or descriptors of files) whose name holds ``marker``."""

    def __init__(self, inner: FileSystem, method: str, marker: str, error: OSError) -> None:
        super().__init__(inner)
        self.method, self.marker, self.error = method, marker, error
        self.names: dict[int, str] = {}

    def open(self, path: str, *, write: bool) -> int:
        fd = int(self.inner.open(path, write=write))
        self.names[fd] = path
        return fd

    def _fails(self, target: int | str) -> bool:
        name = self.names.get(target, "") if isinstance(target, int) else target
        return self.marker in os.path.basename(name)

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.inner, name)
        if name != self.method:
            return call

        def failing(target: Any, *args: Any, **kwargs: Any) -> Any:
            if self._fails(target):
                raise self.error
            return call(target, *args, **kwargs)

        return failing


@pytest.mark.parametrize("method", ["read", "lock"])
async def test_a_file_system_error_on_one_journal_is_that_runs_store_error(
    tmp_path: Path, method: str
) -> None:
    setup = durable.FileStore(tmp_path / "store")
    for run_id in ("a", "b-bad", "c"):
        await make_run(setup, run_id, step(0))
    error = OSError(5 if method == "read" else 37, "Input/output error" if method == "read" else "No locks")
    store = durable.FileStore(tmp_path / "store", fs=FailingOn(OsFileSystem(), method, "b-bad", error))  # type: ignore[arg-type]
    if method == "read":
        assert await store.unfinished() == ["a", "b-bad", "c"]
    results = await store.open_many(["a", "b-bad", "c"])
    assert isinstance(results[1], durable.StoreError) and "b-bad" in str(results[1])
    for result in (results[0], results[2]):
        assert isinstance(result, durable.lowlevel.Opened)
        result.writer.close()


async def test_an_inbox_that_cannot_be_listed_is_a_store_error(tmp_path: Path) -> None:
    setup = durable.FileStore(tmp_path / "store")
    await make_run(setup, "r")
    error = PermissionError(13, "Permission denied")
    store = durable.FileStore(tmp_path / "store", fs=FailingOn(OsFileSystem(), "listdir", "inbox", error))  # type: ignore[arg-type]
    with pytest.raises(durable.StoreError, match="inbox"):
        await store.runs_with_messages()
    with pytest.raises(durable.StoreError, match="inbox"):
        await store.messages("r")


async def test_an_inbox_entry_that_is_no_message_file_is_skipped(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    await make_run(store, "r")
    await store.post("r", ev.SignalReceived("go", cbor2.dumps(1), 2.0, "m2"))
    inbox = tmp_path / "store" / "inbox"
    (inbox / f"r.{0:020d}-m0.message").mkdir()
    os.mkfifo(inbox / f"r.{1:020d}-m1.message")
    with trio.fail_after(10):
        assert [m.message_id for m in await store.messages("r")] == ["m2"]


async def test_a_message_file_holding_garbage_is_skipped_and_the_run_gets_its_other_messages(
    tmp_path: Path,
) -> None:
    # A message is written whole, then renamed into place: garbage under a message's
    # name is no message durable wrote, and must not keep the run from its real ones.
    store = durable.FileStore(tmp_path / "store")
    await make_run(store, "r")
    await store.post("r", ev.SignalReceived("go", cbor2.dumps(1), 2.0, "m2"))
    inbox = tmp_path / "store" / "inbox"
    (inbox / f"r.{0:020d}-m0.message").write_bytes(b"not a message file at all")
    (inbox / f"r.{1:020d}-m1.message").write_bytes(b"")
    assert [m.message_id for m in await store.messages("r")] == ["m2"]


async def test_an_inbox_others_may_write_is_refused_when_reading_too(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    await make_run(store, "r")
    await store.post("r", ev.SignalReceived("go", cbor2.dumps(1), 2.0, "m2"))
    inbox = tmp_path / "store" / "inbox"
    inbox.chmod(0o777)  # then someone plants a cancel request in it
    reader = durable.FileStore(tmp_path / "store")  # a worker that never posted
    with pytest.raises(durable.StoreError, match="writable by its group and others"):
        await reader.messages("r")
    with pytest.raises(durable.StoreError, match="writable by its group and others"):
        await reader.runs_with_messages()


# -- a worker beside a strange entry ------------------------------------------------------

WORKER_WORKFLOWS = textwrap.dedent(
    """
    import durable

    @durable.workflow(name="tests.hardening.add")
    def add(a, b):
        return a + b
        yield
    """
)


def test_a_worker_reports_a_directory_named_like_a_journal_once_and_runs_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hardening_wf.py").write_text(WORKER_WORKFLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    workflows: Any = importlib.import_module("hardening_wf")
    store_path = tmp_path / "store"
    store = durable.FileStore(store_path)
    trio.run(make_run, store, "other")  # makes the directories
    # A run durable made (so the due index lists it), whose journal was then replaced
    # by a directory.
    trio.run(make_run, store, "odd")
    Path(store.journal_path("odd")).unlink()
    Path(store.journal_path("odd")).mkdir()
    command = [str(Path(sys.executable).parent / "durable"), "worker", str(tmp_path / "hardening_wf.py")]
    worker = subprocess.Popen(
        [*command, "--store", str(store_path), "--poll", "20ms"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        async def run_one() -> int:
            handle = await durable.Client(store_path).start(workflows.add, 2, 3, id="fine")
            with trio.fail_after(60):  # a hang guard, not a timing assertion
                return int(await handle.result())

        assert trio.run(run_one) == 5
        time.sleep(0.5)  # some more polls
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    lines = [line for line in err.splitlines() if "'odd'" in line]
    assert len(lines) == 2, err  # "cannot run it", then "gave up ...": once each
    assert "a directory, not a journal file" in lines[1]


@pytest.mark.parametrize(
    "name", ["%00.journal", "a" * 240 + ".journal", "%41.journal", "%ED%B2%80.journal"], ids=repr
)
async def test_a_file_name_no_run_id_leads_to_is_not_listed(tmp_path: Path, name: str) -> None:
    store = durable.FileStore(tmp_path / "store")
    await make_run(store, "A", step(0))
    (tmp_path / "store" / "runs" / name).write_bytes(Path(store.journal_path("A")).read_bytes())
    assert await store.run_ids() == ["A"]
    assert await store.unfinished() == ["A"]
