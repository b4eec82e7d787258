"""The embedded default store: one journal file per run in a directory.

Layout: ``<path>/runs/<run id>.journal``, run ids percent-encoded to stay safe
file names; messages for runs held by another process (signals, cancel
requests) wait in ``<path>/inbox/<run id>.<time>-<message id>.message``, each
a small file in the journal format holding the one event.

Durability follows the recovery rules of journal contract v1:

* a journal is created with ``O_EXCL`` and mode 0600, its header and first
  record fsynced, then the directory fsynced, so a run that ``start`` reported
  can never vanish (a new file is not durable until its directory is);
* a run is appended to by one process at a time, enforced with ``flock``;
* opening a run truncates a torn tail and fsyncs the truncation before the
  first new append, so stale bytes can never come back behind new records;
* an fsync error is fatal for the journal, never retried.

``sync`` picks what :meth:`JournalWriter.sync` costs: ``"always"`` calls
fdatasync on the journal right away, ``"batch"`` joins a group commit that
fsyncs every journal with queued records in one round (issued in parallel from
worker threads, which the filesystem groups), ``"none"`` only writes.

All file-system calls go through a :class:`~durable._fs.FileSystem`, so the
crash simulator can run this very code on a simulated disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Collection, Sequence

import trio

from . import _events as ev
from ._codec import FRAME_SIZE, HEADER_SIZE, decode_record, encode_header, encode_record, scan
from ._errors import DurableError, JournalCorruptError, RunLockedError, StoreError, UnknownRunError
from ._fs import FileSystem, OsFileSystem
from ._store import JournalWriter, Opened, Store, check_sync_mode, open_each

_SAFE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_SUFFIX = ".journal"
_MESSAGE = ".message"
_STAGED = ".staged-"
MAX_RUN_ID = 200
_MAX_FILE_NAME = 255
_MIN_JOURNAL = HEADER_SIZE + FRAME_SIZE


def check_run_id(run_id: object) -> str:
    """Validate a run id: a non-empty str of at most 200 characters, no NUL."""
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"a run id must be a non-empty str (got {run_id!r})")
    if len(run_id) > MAX_RUN_ID or "\x00" in run_id:
        raise ValueError(f"run id {run_id[:40]!r}... is too long or holds NUL (max {MAX_RUN_ID} chars)")
    return run_id


def _file_name(run_id: str) -> str:
    """A safe file name for a run id; ids too long to encode get a hashed name (marked ``~``)."""
    if _SAFE.fullmatch(run_id):
        return run_id + _SUFFIX
    encoded = urllib.parse.quote(run_id, safe="").replace(".", "%2E").replace("~", "%7E")
    if len(encoded) + len(_SUFFIX) > _MAX_FILE_NAME:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:32]
        encoded = f"{encoded[:160].rpartition('%')[0]}~{digest}"
    return encoded + _SUFFIX


def _fd(opened: Opened) -> int:
    writer = opened.writer
    assert isinstance(writer, _FileWriter)
    return writer.fd


def _is_hashed(file_name: str) -> bool:
    return "~" in file_name


class _FileWriter(JournalWriter):
    def __init__(self, store: FileStore, path: str, fd: int, next_index: int) -> None:
        super().__init__(path, next_index)
        self.fd = fd
        self._store = store
        self.syncs = store.sync != "none"

    def _write(self, data: bytes) -> None:
        self._store.fs.write(self.fd, data)

    async def _sync(self) -> None:
        if self._store.sync == "always":
            self._store.fs.fdatasync(self.fd)
        elif self._store.sync == "batch":
            await self._store._group.sync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self._store._group.release(fd, self._store.fs.close)


class _Round:
    """The journals one group-commit round fsyncs, and whether it finished."""

    def __init__(self) -> None:
        self.fds: set[int] = set()
        self.done = trio.Event()
        self.synced = False


class _GroupCommit:
    """Group commit: one round of fdatasyncs covers every journal queued meanwhile.

    Callers queue their journal in the open round. If no round is being
    flushed, the caller becomes the leader and flushes rounds until none is
    queued; callers arriving meanwhile queue in the next round. A caller
    returns only once a round that holds its journal has completed its
    fsyncs: if a leader is cancelled mid-round, its round does not count and
    its callers queue again. An fsync error fails every later sync (rule R6).
    """

    def __init__(self, fs: FileSystem) -> None:
        self._fs = fs
        self._open = _Round()
        self._flushing: set[int] = set()
        self._closing: dict[int, Callable[[int], None]] = {}
        self._leading = False
        self._error: OSError | None = None

    def release(self, fd: int, close: Callable[[int], None]) -> None:
        """Close ``fd`` once no round still holds it (its number must not be reused mid-fsync)."""
        self._open.fds.discard(fd)
        if fd in self._flushing:
            self._closing[fd] = close
        else:
            close(fd)

    async def sync(self, fd: int) -> None:
        while True:
            self._check()
            round_ = self._open
            round_.fds.add(fd)
            if self._leading:
                await round_.done.wait()
            else:
                await self._lead()
            if round_.synced:
                return

    def _check(self) -> None:
        if self._error is not None:
            raise OSError(self._error.errno, f"an earlier group fsync failed: {self._error}")

    async def _lead(self) -> None:
        self._leading = True
        try:
            # Let the other runs that are ready right now queue in this round first.
            await trio.lowlevel.cancel_shielded_checkpoint()
            while self._open.fds and self._error is None:
                round_, self._open = self._open, _Round()
                self._flushing = round_.fds
                try:
                    await self._fs.fdatasync_many(round_.fds)
                    round_.synced = True
                except OSError as exc:
                    self._error = exc
                except BaseExceptionGroup as group:
                    errors = group.subgroup(OSError)
                    if errors is None:
                        raise
                    first = errors.exceptions[0]
                    self._error = first if isinstance(first, OSError) else OSError(str(first))
                finally:
                    self._flushing = set()
                    for fd, close in self._closing.items():
                        close(fd)
                    self._closing.clear()
                    round_.done.set()
        finally:
            self._leading = False
            # Whoever waits in the open round now needs a leader (or to see the error):
            # wake them; they queue again and one of them leads.
            waiting, self._open = self._open, _Round()
            waiting.done.set()


class FileStore(Store):
    """Journals as files in a directory; the embedded default store.

    Args:
        path: the store's directory (created if missing, mode 0700).
        sync: ``"always"`` (fsync each completion; default), ``"batch"`` (group commit
            across concurrent runs; callers still wait for their fsync) or ``"none"``
            (no fsync: for tests and benchmarks; a power loss can lose steps).
        fs: the file system to use (the simulator passes a simulated disk).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, sync: str = "always", fs: FileSystem | None = None
    ) -> None:
        self.path = os.fspath(path)
        self.sync = check_sync_mode(sync)
        self.fs: FileSystem = fs if fs is not None else OsFileSystem()
        self._runs = os.path.join(self.path, "runs")
        self._inbox = os.path.join(self.path, "inbox")
        self._group = _GroupCommit(self.fs)
        self._ready = False

    def __repr__(self) -> str:
        return f"FileStore({self.path!r}, sync={self.sync!r})"

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            self.fs.makedirs(self._runs)
        except FileExistsError:
            raise StoreError(
                f"cannot use {self.path!r} as a durable store: it (or a part of the path) is a "
                "file, not a directory"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot use {self.path!r} as a durable store: {exc}") from None
        self._ready = True

    def journal_path(self, run_id: str) -> str:
        """Where the journal of ``run_id`` lives."""
        return os.path.join(self._runs, _file_name(check_run_id(run_id)))

    async def create(self, started: ev.RunStarted) -> JournalWriter | None:
        self._prepare()
        fs = self.fs
        path = self.journal_path(started.run_id)
        try:
            fd = fs.create(path)
        except FileExistsError:
            if not self._remove_unfinished_creation(path, started.run_id):
                return None
            return await self.create(started)
        try:
            self._lock(fd, path, started.run_id)
            fs.write(fd, encode_header())
            writer = _FileWriter(self, path, fd, 0)
            writer.append(started)
            fs.fdatasync(fd)
            fs.fsync_dir(self._runs)
            writer.synced_through(0)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                fs.close(fd)
                fs.unlink(path)
            if isinstance(exc, OSError):
                raise StoreError(
                    f"creating the journal of run {started.run_id!r} at {path} failed: {exc}"
                ) from exc
            raise
        return writer

    async def restart(self, started: ev.RunStarted, writer: JournalWriter) -> JournalWriter:
        fs = self.fs
        path = self.journal_path(started.run_id)
        staged = path + ".next"
        fd = fs.replace_file(staged)
        try:
            self._lock(fd, staged, started.run_id)
            fs.write(fd, encode_header())
            fresh = _FileWriter(self, path, fd, 0)
            fresh.append(started)
            fs.fdatasync(fd)
            fs.rename(staged, path)  # the old journal (ending RunContinuedAsNew) until this
            fs.fsync_dir(self._runs)
            fresh.synced_through(0)
        except OSError as exc:
            with contextlib.suppress(OSError):
                fs.close(fd)
            raise StoreError(
                f"starting run {started.run_id!r} over in a fresh journal failed: {exc}"
            ) from exc
        writer.close()
        return fresh

    def _remove_unfinished_creation(self, path: str, run_id: str) -> bool:
        """Remove a file left by a crash in the middle of creating it (less than a header).

        A file whose creator still holds its lock is being created right now: it
        is left alone, and the run counts as existing.
        """
        try:
            fd = self.fs.open(path, write=False)
        except FileNotFoundError:
            return True
        try:
            if not self.fs.lock(fd) or scan(self.fs.read(fd), path).exists:
                return False
            self.fs.unlink(path)
            return True
        finally:
            self.fs.close(fd)

    def _lock(self, fd: int, path: str, run_id: str) -> None:
        if not self.fs.lock(fd):
            raise RunLockedError(
                f"run {run_id!r} is open for writing by another process or runtime (lock on "
                f"{path}); durable never lets two writers append to one run"
            )

    async def open(self, run_id: str) -> Opened | None:
        opened = self._open_unsynced(run_id)
        if opened is not None:
            try:
                self.fs.fdatasync(_fd(opened))
                self.fs.fsync_dir(self._runs)
            except OSError as exc:
                opened.writer.close()
                raise StoreError(f"recovering run {run_id!r} failed: {exc}") from exc
        return opened

    async def open_many(
        self, run_ids: Sequence[str], *, limit: int | None = None
    ) -> list[Opened | DurableError | None]:
        """Open runs for recovery, then make them durable in one parallel round of
        fdatasyncs and one directory fsync (instead of two fsyncs per run)."""

        async def unsynced(run_id: str) -> Opened | None:
            return self._open_unsynced(run_id)

        results = await open_each(run_ids, limit, unsynced)
        opened = [r for r in results if isinstance(r, Opened)]
        if not opened:
            return results
        try:
            await self.fs.fdatasync_many(_fd(r) for r in opened)
            self.fs.fsync_dir(self._runs)
        except OSError as exc:
            for r in opened:
                r.writer.close()
            failed = StoreError(f"recovering {len(opened)} runs from {self.path!r} failed: {exc}")
            return [failed if isinstance(r, Opened) else r for r in results]
        return results

    def _open_unsynced(self, run_id: str) -> Opened | None:
        """Lock and scan a journal, truncating a torn tail; the caller fsyncs it.

        Before building on a journal, what a killed process left in the page cache
        must be made durable, and a truncation too, before the first new append.
        The creator may also have died before fsyncing the directory: until it is,
        a power loss can make the whole journal vanish (found by sim).
        """
        self._prepare()
        fs = self.fs
        path = self.journal_path(run_id)
        try:
            fd = fs.open(path, write=True)
        except FileNotFoundError:
            return None
        try:
            self._lock(fd, path, run_id)
            found = scan(fs.read(fd), path)
            if not found.exists:
                fs.close(fd)
                return None
            if found.torn:
                fs.truncate(fd, found.end)
        except OSError as exc:
            with contextlib.suppress(OSError):
                fs.close(fd)
            raise StoreError(f"recovering run {run_id!r} from {path} failed: {exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                fs.close(fd)
            raise
        return Opened(found.events, _FileWriter(self, path, fd, len(found.events)))

    async def read(self, run_id: str) -> list[ev.Event] | None:
        path = self.journal_path(run_id)
        try:
            fd = self.fs.open(path, write=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read run {run_id!r} from {self.path!r}: {exc}") from None
        try:
            found = scan(self.fs.read(fd), path)
        finally:
            self.fs.close(fd)
        return found.events if found.exists else None

    async def run_ids(self) -> list[str]:
        try:
            names = self.fs.listdir(self._runs)
        except OSError as exc:
            raise StoreError(f"cannot list the runs in {self.path!r}: {exc}") from None
        # A file too small for a header and a first record is a creation that never
        # finished (a crash before its first fsync): not a run.
        ids = []
        for name in names:
            path = os.path.join(self._runs, name)
            if not name.endswith(_SUFFIX) or self.fs.size(path) <= _MIN_JOURNAL:
                continue
            run_id = (
                self._first_run_id(path) if _is_hashed(name) else urllib.parse.unquote(name[: -len(_SUFFIX)])
            )
            if run_id is not None:
                ids.append(run_id)
        return sorted(ids)

    def _first_run_id(self, path: str) -> str | None:
        """The run id a journal's first record names (for hashed file names).

        Only the first record is read, so damage further on does not hide the run
        from a listing (reading it then reports the damage).
        """
        fd = self.fs.open(path, write=False)
        try:
            data = self.fs.read(fd)
        finally:
            self.fs.close(fd)
        try:
            first, _, _, _ = decode_record(data, HEADER_SIZE)
        except ValueError:
            return None
        return first.run_id if isinstance(first, ev.RunStarted) else None

    # --- the inbox -----------------------------------------------------------------

    async def post(self, run_id: str, message: ev.Message) -> None:
        self._prepare()
        fs = self.fs
        if fs.size(self.journal_path(run_id)) <= _MIN_JOURNAL:
            raise UnknownRunError(run_id, self)
        if any(message.message_id == found for found, _ in self._message_files(run_id)):
            return
        fs.makedirs(self._inbox)
        stem = _file_name(run_id)[: -len(_SUFFIX)]
        name = f"{stem}.{time.time_ns():020d}-{message.message_id}{_MESSAGE}"
        staged = os.path.join(self._inbox, _STAGED + message.message_id)
        try:
            fd = fs.replace_file(staged)
            try:
                fs.write(fd, encode_header() + encode_record(message, 0, -1))
                fs.fdatasync(fd)
            finally:
                fs.close(fd)
            fs.rename(staged, os.path.join(self._inbox, name))
            fs.fsync_dir(self._inbox)
        except OSError as exc:
            raise StoreError(f"leaving a message for run {run_id!r} in {self._inbox} failed: {exc}") from exc

    async def messages(self, run_id: str) -> list[ev.Message]:
        found = []
        for _, name in self._message_files(run_id):
            path = os.path.join(self._inbox, name)
            try:
                fd = self.fs.open(path, write=False)
            except FileNotFoundError:
                continue  # taken meanwhile
            try:
                events = scan(self.fs.read(fd), path).events
            finally:
                self.fs.close(fd)
            if len(events) != 1 or not isinstance(events[0], ev.Message):
                raise JournalCorruptError(path, 0, "a message file must hold one signal or cancel request")
            found.append(events[0])
        return found

    async def remove_messages(self, run_id: str, message_ids: Collection[str]) -> None:
        # No directory fsync: a removal that a crash undoes makes the message be
        # found again, and skipped, since its id is in the journal.
        gone = set(message_ids)
        for message_id, name in self._message_files(run_id):
            if message_id in gone:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.unlink(os.path.join(self._inbox, name))

    async def runs_with_messages(self) -> set[str]:
        stems = {name.rpartition(".")[0] for name in self._message_names()}
        ids = set()
        for stem in stems:
            if _is_hashed(stem):
                run_id = self._first_run_id(os.path.join(self._runs, stem + _SUFFIX))
            else:
                run_id = urllib.parse.unquote(stem)
            if run_id is not None:
                ids.add(run_id)
        return ids

    async def wait_for_change(self, timeout: float, *, since: int | None = None) -> None:
        """Wait ``timeout`` seconds of real time: other processes change the files
        behind trio's back, so a test's virtual clock says nothing about them."""
        if isinstance(self.fs, OsFileSystem):
            await trio.to_thread.run_sync(time.sleep, timeout, abandon_on_cancel=True)
        else:
            await trio.sleep(timeout)

    def _message_names(self) -> list[str]:
        """The inbox's message files, oldest first (without the suffix)."""
        names = self.fs.listdir(self._inbox)
        return sorted(n[: -len(_MESSAGE)] for n in names if n.endswith(_MESSAGE))

    def _message_files(self, run_id: str) -> list[tuple[str, str]]:
        """``(message id, file name)`` of each message waiting for the run, oldest first."""
        stem = _file_name(check_run_id(run_id))[: -len(_SUFFIX)]
        found = []
        for name in self._message_names():
            owner, _, stamp = name.rpartition(".")
            if owner == stem:
                found.append((stamp.partition("-")[2], name + _MESSAGE))
        return found
