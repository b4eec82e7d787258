"""The embedded default store: one journal file per run in a directory.

Layout: ``<path>/runs/<run id>.journal``, run ids percent-encoded to stay safe
file names. Durability follows the recovery rules of journal contract v1:

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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import urllib.parse
from pathlib import Path

import trio

from . import _events as ev
from ._codec import encode_header, scan
from ._errors import RunLockedError, StoreError
from ._store import JournalWriter, Opened, Store, check_sync_mode

_SAFE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_SUFFIX = ".journal"
MAX_RUN_ID = 200


def check_run_id(run_id: object) -> str:
    """Validate a run id: a non-empty str of at most 200 characters, no NUL."""
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"a run id must be a non-empty str (got {run_id!r})")
    if len(run_id) > MAX_RUN_ID or "\x00" in run_id:
        raise ValueError(f"run id {run_id[:40]!r}... must be at most {MAX_RUN_ID} characters, no NUL")
    return run_id


def _file_name(run_id: str) -> str:
    if _SAFE.fullmatch(run_id):
        return run_id + _SUFFIX
    return urllib.parse.quote(run_id, safe="").replace(".", "%2E") + _SUFFIX


def _run_id(file_name: str) -> str:
    return urllib.parse.unquote(file_name[: -len(_SUFFIX)])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


class _FileWriter(JournalWriter):
    def __init__(self, store: FileStore, path: Path, fd: int, next_index: int) -> None:
        super().__init__(str(path), next_index)
        self.fd = fd
        self._store = store

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    async def _sync(self) -> None:
        if self._store.sync == "always":
            os.fdatasync(self.fd)
        elif self._store.sync == "batch":
            await self._store._group.sync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # also releases the flock
            self.fd = -1


class _GroupCommit:
    """Group commit: one round of fdatasyncs covers every journal queued meanwhile.

    The first caller becomes the leader and flushes rounds until nobody is
    waiting; callers that arrive during a round queue for the next one.
    """

    def __init__(self, threads: int) -> None:
        self._queued: set[int] = set()
        self._round_done = trio.Event()
        self._leading = False
        self._error: OSError | None = None
        self._limiter = trio.CapacityLimiter(threads)

    async def sync(self, fd: int) -> None:
        self._queued.add(fd)
        done = self._round_done
        if self._leading:
            await done.wait()
            if self._error is not None:
                raise self._error
            return
        self._leading = True
        try:
            while self._queued:
                await self._flush_round()
        finally:
            self._leading = False
        if self._error is not None:
            raise self._error

    async def _flush_round(self) -> None:
        fds, self._queued = self._queued, set()
        done, self._round_done = self._round_done, trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                for fd in fds:
                    nursery.start_soon(self._fdatasync, fd)
        finally:
            done.set()

    async def _fdatasync(self, fd: int) -> None:
        try:
            await trio.to_thread.run_sync(os.fdatasync, fd, limiter=self._limiter)
        except OSError as exc:
            self._error = exc  # fatal for the store (rule R6): every later sync fails too
            raise


class FileStore(Store):
    """Journals as files in a directory; the embedded default store.

    Args:
        path: the store's directory (created if missing, mode 0700).
        sync: ``"always"`` (fsync each completion; default), ``"batch"`` (group commit
            across concurrent runs; callers still wait for their fsync) or ``"none"``
            (no fsync: for tests and benchmarks; a power loss can lose steps).
        sync_threads: how many fdatasyncs a ``"batch"`` round issues at once.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: str = "always", sync_threads: int = 16) -> None:
        self.path = Path(path)
        self.sync = check_sync_mode(sync)
        self._runs = self.path / "runs"
        self._group = _GroupCommit(sync_threads)
        self._ready = False

    def __repr__(self) -> str:
        return f"FileStore({str(self.path)!r}, sync={self.sync!r})"

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            for directory in (self.path, self._runs):
                if not directory.is_dir():
                    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                    _fsync_dir(directory.parent)
        except OSError as exc:
            raise StoreError(f"cannot use {str(self.path)!r} as a durable store: {exc}") from None
        self._ready = True

    def journal_path(self, run_id: str) -> Path:
        """Where the journal of ``run_id`` lives."""
        return self._runs / _file_name(check_run_id(run_id))

    async def create(self, started: ev.RunStarted) -> JournalWriter | None:
        self._prepare()
        path = self.journal_path(started.run_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except FileExistsError:
            if not self._remove_unfinished_creation(path, started.run_id):
                return None
            return await self.create(started)
        try:
            self._lock(fd, path, started.run_id)
            writer = _FileWriter(self, path, fd, 0)
            os.write(fd, encode_header())
            writer.append(started)
            os.fdatasync(fd)
            _fsync_dir(self._runs)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return writer

    def _remove_unfinished_creation(self, path: Path, run_id: str) -> bool:
        """Remove a file left by a crash in the middle of creating it (less than a header).

        A file whose creator still holds its lock is being created right now: it
        is left alone, and the run counts as existing.
        """
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            try:
                self._lock(fd, path, run_id)
            except RunLockedError:
                return False
            if scan(_read_all(fd), str(path)).exists:
                return False
            path.unlink()
            return True
        finally:
            os.close(fd)

    def _lock(self, fd: int, path: Path, run_id: str) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise RunLockedError(
                f"run {run_id!r} is open for writing by another process or runtime (lock on "
                f"{path}); durable never lets two writers append to one run"
            ) from None

    async def open(self, run_id: str) -> Opened | None:
        self._prepare()
        path = self.journal_path(run_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            return None
        try:
            self._lock(fd, path, run_id)
            found = scan(_read_all(fd), str(path))
            if not found.exists:
                os.close(fd)
                return None
            if found.torn:
                os.ftruncate(fd, found.end)
            # Make what a killed process left in the page cache durable before
            # building on it, and make any truncation durable before appending.
            os.fdatasync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return Opened(found.events, _FileWriter(self, path, fd, len(found.events)))

    async def read(self, run_id: str) -> list[ev.Event] | None:
        path = self.journal_path(run_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        found = scan(data, str(path))
        return found.events if found.exists else None

    async def run_ids(self) -> list[str]:
        if not self._runs.is_dir():
            return []
        return sorted(_run_id(p.name) for p in self._runs.iterdir() if p.name.endswith(_SUFFIX))
