"""The embedded default store: one journal file per run in a directory.

Layout: ``<path>/runs/<run id>.journal``, run ids percent-encoded to stay safe
file names; messages for runs held by another process (signals, cancel
requests) wait in ``<path>/inbox/<run id>.<time>-<message id>.message``, each
a small file in the journal format holding the one event.

Durability follows the recovery rules of journal contract v1:

* a journal is created with ``O_EXCL`` and mode 0600, its header and first
  record fsynced, then the directory fsynced, so a run that ``start`` reported
  can never vanish (a new file is not durable until its directory is);
* a run is appended to by one process at a time, enforced with ``flock``. A
  lock is taken on a descriptor, so after taking it durable checks that the
  descriptor is still the file at the journal's path (``continue_as_new``
  renames a fresh journal over it), and opens again if not. Whoever renames or
  unlinks a journal holds the lock of the file at that path;
* opening a run truncates a torn tail and fsyncs the truncation before the
  first new append, so stale bytes can never come back behind new records;
* an fsync error is fatal for the journal, never retried.

``sync`` picks what :meth:`JournalWriter.sync` costs: ``"always"`` calls
fdatasync on the journal right away, ``"batch"`` joins a group commit that
fsyncs every journal with queued records in one round (issued in parallel from
worker threads, which the filesystem groups), ``"none"`` only writes.

Nothing in the store is trusted blindly: files are opened without following
symbolic links and must be regular files, a journal must name the run its file
is named after, and the store's directories must be private to the user running
durable (a directory other users may write is refused). What is wrong with one
run's entry is that run's error (:class:`JournalUnreadableError`, a
:class:`~durable.JournalCorruptError`); every other run goes on.

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

from ._core import events as ev
from ._core.codec import FRAME_SIZE, HEADER_SIZE, Scan, decode_record, encode_header, encode_record, scan
from ._core.errors import (
    DurableError,
    JournalCorruptError,
    JournalUnreadableError,
    RunLockedError,
    StoreError,
    UnknownRunError,
    UnsafeStoreError,
)
from ._core.ids import check_run_id
from ._fs import FileSystem, NotRegularFileError, OsFileSystem
from ._store import JournalWriter, Opened, Store, check_sync_mode, open_each

_SAFE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_SUFFIX = ".journal"
_MESSAGE = ".message"
_STAGED = ".staged-"
_MAX_FILE_NAME = 255
_MIN_JOURNAL = HEADER_SIZE + FRAME_SIZE
#: How many times opening or creating a journal starts again when the file at its
#: path changed under it (replaced by ``continue_as_new``, removed as unfinished).
_TRIES = 8


def unreadable(exc: OSError, path: str, run_id: str) -> StoreError:
    """The error of one run whose journal ``path`` could not be opened or read."""
    if isinstance(exc, NotRegularFileError):
        return JournalUnreadableError(
            path,
            run_id,
            f"it is {exc.kind}, not a journal file",
            "durable never follows or reads such an entry in a store; move it away (or put the "
            "run's journal back in its place)",
        )
    if isinstance(exc, PermissionError):
        return JournalUnreadableError(
            path,
            run_id,
            f"permission denied ({exc.strerror})",
            f"give the user running durable (uid {os.geteuid()}) read and write access to it: "
            f"`chown {os.geteuid()} {path}` and `chmod 600 {path}`",
        )
    return StoreError(f"cannot read run {run_id!r} from {path}: {exc}", run_id=run_id, path=path)


def _file_name(run_id: str) -> str:
    """A safe file name for a run id; ids too long to encode get a hashed name (marked ``~``)."""
    if _SAFE.fullmatch(run_id):
        return run_id + _SUFFIX
    encoded = urllib.parse.quote(run_id, safe="").replace(".", "%2E").replace("~", "%7E")
    if len(encoded) + len(_SUFFIX) > _MAX_FILE_NAME:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:32]
        encoded = f"{encoded[:160].rpartition('%')[0]}~{digest}"
    return encoded + _SUFFIX


def _names(run_id: str, file_name: str) -> bool:
    """Whether ``file_name`` is where the journal of ``run_id`` lives (and the id is valid)."""
    try:
        return _file_name(check_run_id(run_id)) == file_name
    except (TypeError, ValueError):
        return False


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
    its callers queue again. An fsync error fails every later sync (rule R6 of the
    journal contract, section 15).
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
        self._inbox_ready = False

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
                "file, not a directory",
                path=self.path,
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot use {self.path!r} as a durable store: {exc}", path=self.path) from None
        self._check_private(self.path)
        self._check_private(self._runs)
        self._ready = True

    def _check_private(self, directory: str) -> None:
        """Refuse a store directory that another user owns or that group or others may write."""
        try:
            owner, mode = self.fs.owner_and_mode(directory)
        except OSError as exc:
            raise StoreError(f"cannot use {self.path!r} as a durable store: {exc}", path=self.path) from None
        me = os.geteuid()
        if owner != me:
            raise UnsafeStoreError(
                directory,
                self.path,
                owner,
                mode,
                f"is owned by another user than the one running durable (uid {me})",
                f"Give it to this user (`chown {me} {directory}`), or use a directory of its own.",
            )
        if mode & 0o022:
            who = "group and others" if mode & 0o022 == 0o022 else "group" if mode & 0o020 else "others"
            raise UnsafeStoreError(
                directory,
                self.path,
                owner,
                mode,
                f"is writable by its {who}",
                f"Make it private: `chmod 700 {directory}`.",
            )

    def journal_path(self, run_id: str) -> str:
        """Where the journal of ``run_id`` lives."""
        return os.path.join(self._runs, _file_name(check_run_id(run_id)))

    async def create(self, started: ev.RunStarted) -> JournalWriter | None:
        self._prepare()
        path = self.journal_path(started.run_id)
        for _ in range(_TRIES):
            try:
                fd = self.fs.create(path)
            except FileExistsError:
                if not self._remove_unfinished_creation(path, started.run_id):
                    return None
                continue
            except OSError as exc:
                raise StoreError(
                    f"creating the journal of run {started.run_id!r} at {path} failed: {exc}",
                    run_id=started.run_id,
                    path=path,
                ) from exc
            # Someone who found the file before its header (an opener, or a creator
            # removing an unfinished creation) may hold it, or have removed it.
            if self._locked_at(fd, path):
                return self._start_journal(fd, path, started)
            self.fs.close(fd)
        raise self._kept_changing(path, started.run_id)

    def _start_journal(self, fd: int, path: str, started: ev.RunStarted) -> JournalWriter:
        """Write the header and first record of a journal just created and locked, durably."""
        fs = self.fs
        try:
            fs.write(fd, encode_header())
            writer = _FileWriter(self, path, fd, 0)
            writer.append(started)
            fs.fdatasync(fd)
            fs.fsync_dir(self._runs)
            writer.synced_through(0)
        except BaseException as exc:
            try:
                with contextlib.suppress(OSError):
                    if fs.same_file(fd, path):  # still holding its lock: nobody else's file
                        fs.unlink(path)
            finally:
                with contextlib.suppress(OSError):
                    fs.close(fd)
            if isinstance(exc, OSError):
                raise StoreError(
                    f"creating the journal of run {started.run_id!r} at {path} failed: {exc}",
                    run_id=started.run_id,
                    path=path,
                ) from exc
            raise
        return writer

    def _locked_at(self, fd: int, path: str) -> bool:
        """Lock ``fd`` and check that it is the file at ``path``: False if someone else
        holds it, or if it was renamed over or removed since it was opened (a lock on
        such a file holds nothing). ``fd`` is closed if this raises."""
        try:
            locked = self.fs.lock(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.fs.close(fd)
            raise StoreError(f"cannot lock the journal at {path}: {exc}") from exc
        return locked and self._same_file(fd, path)

    def _kept_changing(self, path: str, run_id: str) -> StoreError:
        return StoreError(
            f"the journal of run {run_id!r} at {path} was replaced or removed {_TRIES} times while "
            "durable took its lock; other processes keep changing it: try again",
            run_id=run_id,
            path=path,
        )

    async def restart(self, started: ev.RunStarted, writer: JournalWriter) -> JournalWriter:
        fs = self.fs
        path = self.journal_path(started.run_id)
        staged = path + ".next"  # only the holder of the run writes it
        try:
            fd = fs.replace_file(staged)
        except OSError as exc:
            raise StoreError(
                f"starting run {started.run_id!r} over in a fresh journal failed: {exc}",
                run_id=started.run_id,
            ) from exc
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
                f"starting run {started.run_id!r} over in a fresh journal failed: {exc}",
                run_id=started.run_id,
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
        except OSError as exc:
            raise unreadable(exc, path, run_id) from None
        try:
            if not self.fs.lock(fd):
                return False
            if not self.fs.same_file(fd, path):
                return True  # replaced or removed meanwhile: look again
            unfinished = not scan(self.fs.read(fd), path).exists
            if unfinished:
                self.fs.unlink(path)  # holding the lock of the file at the path: it is this one
        except OSError as exc:
            raise unreadable(exc, path, run_id) from None
        finally:
            self.fs.close(fd)
        return unfinished

    async def open(self, run_id: str) -> Opened | None:
        opened = self._open_unsynced(run_id)
        if opened is not None:
            try:
                self.fs.fdatasync(_fd(opened))
                self.fs.fsync_dir(self._runs)
            except OSError as exc:
                opened.writer.close()
                raise StoreError(f"recovering run {run_id!r} failed: {exc}", run_id=run_id) from exc
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
        path = self.journal_path(run_id)
        for _ in range(_TRIES):
            try:
                fd = self.fs.open(path, write=True)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise unreadable(exc, path, run_id) from None
            self._lock(fd, path, run_id)
            if self._same_file(fd, path):
                return self._recover(fd, path, run_id)
            self.fs.close(fd)  # continue_as_new put a fresh journal there meanwhile
        raise self._kept_changing(path, run_id)

    def _same_file(self, fd: int, path: str) -> bool:
        try:
            return self.fs.same_file(fd, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.fs.close(fd)
            raise StoreError(f"cannot check what file is at {path}: {exc}", path=path) from exc

    def _lock(self, fd: int, path: str, run_id: str) -> None:
        try:
            locked = self.fs.lock(fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                self.fs.close(fd)
            if isinstance(exc, OSError):
                raise StoreError(
                    f"cannot lock run {run_id!r} at {path}: {exc}", run_id=run_id, path=path
                ) from exc
            raise
        if not locked:
            self.fs.close(fd)
            raise RunLockedError(
                f"run {run_id!r} is open for writing by another process or runtime (lock on "
                f"{path}); durable never lets two writers append to one run",
                run_id=run_id,
                path=path,
            )

    def _recover(self, fd: int, path: str, run_id: str) -> Opened | None:
        """Scan a journal locked for writing and truncate a torn tail."""
        fs = self.fs
        try:
            found = self._scan(fs.read(fd), path, run_id)
            if not found.exists:
                fs.close(fd)
                return None
            if found.torn:
                fs.truncate(fd, found.end)
        except OSError as exc:
            with contextlib.suppress(OSError):
                fs.close(fd)
            raise StoreError(
                f"recovering run {run_id!r} from {path} failed: {exc}", run_id=run_id, path=path
            ) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                fs.close(fd)
            raise
        return Opened(found.events, _FileWriter(self, path, fd, len(found.events)))

    @staticmethod
    def _scan(data: bytes, path: str, run_id: str) -> Scan:
        """Scan a journal and check that it is the journal of ``run_id``."""
        found = scan(data, path)
        first = found.events[0] if found.events else None
        if found.exists and not (isinstance(first, ev.RunStarted) and first.run_id == run_id):
            what = (
                f"starts run {first.run_id!r}"
                if isinstance(first, ev.RunStarted)
                else f"starts with {type(first).__name__}, not RunStarted"
            )
            raise JournalCorruptError(
                path, HEADER_SIZE, f"its first record {what}, but the file is named for run {run_id!r}", 0
            )
        return found

    async def read(self, run_id: str) -> list[ev.Event] | None:
        data = self.journal_bytes(run_id)
        if data is None:
            return None
        found = self._scan(data, self.journal_path(run_id), run_id)
        return found.events if found.exists else None

    def journal_bytes(self, run_id: str) -> bytes | None:
        """The bytes of a run's journal as they are (None if there is none), for tools that
        salvage what a damaged one holds. Read as :meth:`read` reads them: never through
        a symbolic link, and only from a regular file.

        Raises:
            JournalCorruptError: something other than a journal file is there, or durable
                may not read it.
        """
        path = self.journal_path(run_id)
        try:
            fd = self.fs.open(path, write=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise unreadable(exc, path, run_id) from None
        try:
            return self.fs.read(fd)
        except OSError as exc:
            raise unreadable(exc, path, run_id) from None
        finally:
            self.fs.close(fd)

    async def run_ids(self) -> list[str]:
        try:
            names = self.fs.listdir(self._runs)
        except OSError as exc:
            raise StoreError(f"cannot list the runs in {self.path!r}: {exc}", path=self._runs) from None
        # A file too small for a header and a first record is a creation that never
        # finished (a crash before its first fsync): not a run. Something other than a
        # file (a directory, a link...) named like a journal is listed: reading it then
        # says what is wrong with that run. A name durable never gives a journal (no
        # valid run id is stored under it) is left out: no run id leads to it.
        ids = []
        for name in names:
            path = os.path.join(self._runs, name)
            if not name.endswith(_SUFFIX) or 0 <= self._size(path) <= _MIN_JOURNAL:
                continue
            run_id = (
                self._first_run_id(path) if _is_hashed(name) else urllib.parse.unquote(name[: -len(_SUFFIX)])
            )
            if run_id is not None and _names(run_id, name):
                ids.append(run_id)
        return sorted(ids)

    def _size(self, path: str) -> int:
        try:
            return self.fs.size(path)
        except OSError:
            return -1  # listed: reading it says what is wrong

    def _first_run_id(self, path: str) -> str | None:
        """The run id a journal's first record names (for hashed file names).

        Only the first record is read, so damage further on does not hide the run
        from a listing (reading it then reports the damage). An entry that cannot be
        read at all is left out: nothing tells which run it belongs to.
        """
        try:
            fd = self.fs.open(path, write=False)
        except OSError:
            return None
        try:
            data = self.fs.read(fd)
        except OSError:
            return None
        finally:
            self.fs.close(fd)
        try:
            first, _, _, _ = decode_record(data, HEADER_SIZE)
        except ValueError:
            return None
        if not isinstance(first, ev.RunStarted) or not isinstance(first.run_id, str):
            return None
        return first.run_id

    # --- the inbox -----------------------------------------------------------------

    async def post(self, run_id: str, message: ev.Message) -> None:
        self._prepare()
        fs = self.fs
        if self._size(self.journal_path(run_id)) <= _MIN_JOURNAL:
            raise UnknownRunError(run_id, self)
        if any(message.message_id == found for found, _ in self._message_files(run_id)):
            return
        self._prepare_inbox()
        stem = _file_name(run_id)[: -len(_SUFFIX)]
        name = f"{stem}.{time.time_ns():020d}-{message.message_id}{_MESSAGE}"
        staged = os.path.join(self._inbox, _STAGED + message.message_id)
        try:
            fd = fs.replace_file(staged)  # unique to this message; O_EXCL, no link followed
            try:
                fs.write(fd, encode_header() + encode_record(message, 0, -1))
                fs.fdatasync(fd)
            finally:
                fs.close(fd)
            fs.rename(staged, os.path.join(self._inbox, name))
            fs.fsync_dir(self._inbox)
        except OSError as exc:
            raise StoreError(
                f"leaving a message for run {run_id!r} in {self._inbox} failed: {exc}",
                run_id=run_id,
                path=self._inbox,
            ) from exc

    def _prepare_inbox(self) -> None:
        if self._inbox_ready:
            return
        try:
            self.fs.makedirs(self._inbox)
        except OSError as exc:
            raise StoreError(f"cannot make the inbox of the durable store {self.path!r}: {exc}") from None
        self._check_private(self._inbox)
        self._inbox_ready = True

    async def messages(self, run_id: str) -> list[ev.Message]:
        found = []
        for _, name in self._message_files(run_id):
            path = os.path.join(self._inbox, name)
            try:
                fd = self.fs.open(path, write=False)
            except (FileNotFoundError, NotRegularFileError):
                continue  # taken meanwhile; or no message durable wrote (never followed)
            except OSError as exc:
                raise unreadable(exc, path, run_id) from None
            try:
                events = scan(self.fs.read(fd), path).events
            except OSError as exc:
                raise unreadable(exc, path, run_id) from None
            except JournalCorruptError:
                continue  # garbage in a message's name: not a message (see below)
            finally:
                self.fs.close(fd)
            if len(events) != 1 or not isinstance(events[0], ev.Message):
                # Not a message durable wrote (it writes each one whole, then renames it
                # into place): skipped, so that it does not keep the run from its others.
                continue
            found.append(events[0])
        return found

    async def remove_messages(self, run_id: str, message_ids: Collection[str]) -> None:
        # No directory fsync: a removal that a crash undoes makes the message be
        # found again, and skipped, since its id is in the journal.
        gone = set(message_ids)
        for message_id, name in self._message_files(run_id):
            if message_id in gone:
                path = os.path.join(self._inbox, name)
                try:
                    self.fs.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise StoreError(
                        f"cannot remove the message {path} for run {run_id!r}: {exc}",
                        run_id=run_id,
                        path=path,
                    ) from exc

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
        try:
            names = self.fs.listdir(self._inbox)
        except OSError as exc:
            raise StoreError(f"cannot list the messages in {self._inbox}: {exc}", path=self._inbox) from None
        messages = sorted(n[: -len(_MESSAGE)] for n in names if n.endswith(_MESSAGE))
        if messages and not self._inbox_ready:
            # Messages are read, and journaled, from here: an inbox others may write
            # is refused when reading as when posting (a planted cancel request).
            # Checked once, as a store that posts checks it once.
            self._check_private(self._inbox)
            self._inbox_ready = True
        return messages

    def _message_files(self, run_id: str) -> list[tuple[str, str]]:
        """``(message id, file name)`` of each message waiting for the run, oldest first."""
        stem = _file_name(check_run_id(run_id))[: -len(_SUFFIX)]
        found = []
        for name in self._message_names():
            owner, _, stamp = name.rpartition(".")
            if owner == stem:
                found.append((stamp.partition("-")[2], name + _MESSAGE))
        return found
