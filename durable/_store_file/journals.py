"""Creating, opening and restarting journals, each under its lock.

A run is appended to by one process at a time, enforced with ``flock``. A lock
is taken on a descriptor, not a path: a lock on a file that another was renamed
over (``continue_as_new``) or that was removed (an unfinished creation) since it
was opened holds nothing. So :meth:`Journals._lock_at`, which every lock goes
through, checks after taking the lock that the descriptor is still the file at
the journal's path, and the caller opens again if not. Whoever renames or
unlinks a journal holds the lock of the file at that path, so what the check
finds stays true while the lock is held.

* :meth:`Journals.create` makes a journal with ``O_EXCL`` and mode 0600, fsyncs
  its header and first record, then the directory, so that a run ``start``
  reported can never vanish (a new file is not durable until its directory is).
  A file left by a crash before its header is removed first.
* :meth:`Journals.open` truncates a torn tail and fsyncs the journal and the
  directory before the first new append, so that stale bytes never come back
  behind new records, and what a killed process left in the page cache (or a
  creation whose directory it never fsynced) is durable before anything builds
  on it.
* :meth:`Journals.restart` (``continue_as_new``) writes the fresh journal under
  a staged name, fsyncs it, renames it over the old one and fsyncs the directory.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Sequence
from typing import NoReturn

from .._core import events as ev
from .._core.codec import encode_header, scan
from .._core.errors import DurableError, RunLockedError, StoreError
from .._store import JournalWriter, Opened, open_each
from .commit import _FileWriter, _GroupCommit
from .directory import Directory
from .reading import scan_journal, unreadable

#: How many times opening or creating a journal starts again when the file at its
#: path changed under it (replaced by ``continue_as_new``, removed as unfinished).
_TRIES = 8


class Lock(enum.Enum):
    """What :meth:`Journals._lock_at` found."""

    HELD = "held"  # locked, and the file at its path: the caller holds the journal
    TAKEN = "taken"  # someone else holds its lock
    MOVED = "moved"  # locked, but another file was renamed over it, or it was removed


#: Raises the caller's error for an OSError in a step of :meth:`Journals._lock_at`:
#: ``"lock"`` (taking the lock) or ``"check"`` (telling which file is at the path).
Failed = Callable[[str, OSError], NoReturn]


def _cannot_check(path: str, exc: OSError) -> StoreError:
    return StoreError(f"cannot check what file is at {path}: {exc}", path=path)


def _creating(path: str) -> Failed:
    """The errors of locking a journal just created."""

    def failed(step: str, exc: OSError) -> NoReturn:
        if step == "lock":
            raise StoreError(f"cannot lock the journal at {path}: {exc}") from exc
        raise _cannot_check(path, exc) from exc

    return failed


def _opening(path: str, run_id: str) -> Failed:
    """The errors of locking a run's journal to write to it."""

    def failed(step: str, exc: OSError) -> NoReturn:
        if step == "lock":
            raise StoreError(
                f"cannot lock run {run_id!r} at {path}: {exc}", run_id=run_id, path=path
            ) from exc
        raise _cannot_check(path, exc) from exc

    return failed


def _reading(path: str, run_id: str) -> Failed:
    """The errors of locking a journal to read it: the run's, as any failed read."""

    def failed(step: str, exc: OSError) -> NoReturn:
        raise unreadable(exc, path, run_id) from None

    return failed


def _locked(path: str, run_id: str) -> RunLockedError:
    return RunLockedError(
        f"run {run_id!r} is open for writing by another process or runtime (lock on "
        f"{path}); durable never lets two writers append to one run",
        run_id=run_id,
        path=path,
    )


def _kept_changing(path: str, run_id: str) -> StoreError:
    return StoreError(
        f"the journal of run {run_id!r} at {path} was replaced or removed {_TRIES} times while "
        "durable took its lock; other processes keep changing it: try again",
        run_id=run_id,
        path=path,
    )


class Journals:
    """Creates, opens and restarts the journals of one store's runs."""

    def __init__(self, directory: Directory, sync: str, group: _GroupCommit) -> None:
        self.dir = directory
        self.fs = directory.fs
        self.sync = sync
        self.group = group

    def _writer(self, path: str, fd: int, next_index: int, run_id: str) -> _FileWriter:
        return _FileWriter(self.fs, self.sync, self.group, path, fd, next_index, run_id)

    def _lock_at(self, fd: int, path: str, failed: Failed, *, check: bool = True) -> Lock:
        """Lock ``fd`` without waiting, then check that it is still the file at ``path``
        (a lock on a file renamed over or removed since it was opened holds nothing).

        HELD is the only answer that leaves ``fd`` open: the caller then holds the
        journal. ``check=False`` skips the check for a file only its creator can reach
        yet (a staged journal), so the answer is HELD or TAKEN. An exception closes
        ``fd``; an OSError then goes to ``failed`` with the step that raised it
        (``"lock"`` or ``"check"``), and ``failed`` raises the caller's error.
        """
        step = "lock"
        try:
            if not self.fs.lock(fd):
                found = Lock.TAKEN
            else:
                step = "check"
                found = Lock.HELD if not check or self.fs.same_file(fd, path) else Lock.MOVED
        except BaseException as exc:
            with contextlib.suppress(OSError):
                self.fs.close(fd)
            if isinstance(exc, OSError):
                failed(step, exc)
            raise
        if found is not Lock.HELD:
            self.fs.close(fd)
        return found

    async def create(
        self, started: ev.RunStarted, announce: Callable[[], object] | None = None
    ) -> JournalWriter | None:
        """Create the journal of a new run, durably; None if the run exists.

        ``announce`` is called once the journal is on disk and before its name is
        durable in ``runs/``: what it makes durable (the run's due entry) can then
        never be missing for a run that exists.
        """
        self.dir.prepare()
        path = self.dir.journal_path(started.run_id)
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
            if self._lock_at(fd, path, _creating(path)) is Lock.HELD:
                return self._start_journal(fd, path, started, announce)
        raise _kept_changing(path, started.run_id)

    def _start_journal(
        self, fd: int, path: str, started: ev.RunStarted, announce: Callable[[], object] | None
    ) -> JournalWriter:
        """Write the header and first record of a journal just created and locked, durably."""
        fs = self.fs
        try:
            # The announcement (the run's due entry) is durable before the journal has a
            # record: whatever a crash leaves of the journal, even a process killed right
            # after its write, the index lists the run (an entry for a creation that never
            # finished is removed by whoever finds it).
            if announce is not None:
                announce()
            fs.write(fd, encode_header())
            writer = self._writer(path, fd, 0, started.run_id)
            writer.append(started)
            fs.fdatasync(fd)
            fs.fsync_dir(self.dir.runs)
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

    def _remove_unfinished_creation(self, path: str, run_id: str) -> bool:
        """Remove a file left by a crash in the middle of creating it (less than a header);
        True if the caller may create the journal now.

        A file whose creator still holds its lock is being created right now: it
        is left alone, and the run counts as existing.
        """
        try:
            fd = self.fs.open(path, write=False)
        except FileNotFoundError:
            return True
        except OSError as exc:
            raise unreadable(exc, path, run_id) from None
        found = self._lock_at(fd, path, _reading(path, run_id))
        if found is not Lock.HELD:
            return found is Lock.MOVED  # replaced or removed meanwhile: look again
        try:
            unfinished = not scan(self.fs.read(fd), path).exists
            if unfinished:
                self.fs.unlink(path)  # holding the lock of the file at the path: it is this one
        except OSError as exc:
            raise unreadable(exc, path, run_id) from None
        finally:
            self.fs.close(fd)
        return unfinished

    async def restart(self, started: ev.RunStarted, writer: JournalWriter) -> JournalWriter:
        fs = self.fs
        path = self.dir.journal_path(started.run_id)
        staged = path + ".next"  # only the holder of the run writes it
        try:
            fd = fs.replace_file(staged)
        except OSError as exc:
            raise StoreError(
                f"starting run {started.run_id!r} over in a fresh journal failed: {exc}",
                run_id=started.run_id,
            ) from exc
        try:
            if self._lock_at(fd, staged, _opening(staged, started.run_id), check=False) is Lock.TAKEN:
                raise _locked(staged, started.run_id)
            fs.write(fd, encode_header())
            fresh = self._writer(path, fd, 0, started.run_id)
            fresh.append(started)
            fs.fdatasync(fd)
            fs.rename(staged, path)  # the old journal (ending RunContinuedAsNew) until this
            fs.fsync_dir(self.dir.runs)
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

    async def open(self, run_id: str) -> Opened | None:
        opened = self._open_unsynced(run_id)
        if opened is not None:
            try:
                self.fs.fdatasync(_fd(opened))
                self.fs.fsync_dir(self.dir.runs)
            except OSError as exc:
                opened.writer.close()
                raise StoreError(f"recovering run {run_id!r} failed: {exc}", run_id=run_id) from exc
        return opened

    async def open_many(
        self, run_ids: Sequence[str], *, limit: int | None = None
    ) -> list[Opened | DurableError | None]:
        """Open runs, then make them durable in one round of fdatasyncs and one directory fsync."""

        async def unsynced(run_id: str) -> Opened | None:
            return self._open_unsynced(run_id)

        results = await open_each(run_ids, limit, unsynced)
        opened = [r for r in results if isinstance(r, Opened)]
        if not opened:
            return results
        try:
            await self.fs.fdatasync_many(_fd(r) for r in opened)
            self.fs.fsync_dir(self.dir.runs)
        except OSError as exc:
            for r in opened:
                r.writer.close()
            failed = StoreError(f"recovering {len(opened)} runs from {self.dir.path!r} failed: {exc}")
            return [failed if isinstance(r, Opened) else r for r in results]
        return results

    def _open_unsynced(self, run_id: str) -> Opened | None:
        """Lock and scan a journal, truncating a torn tail; the caller fsyncs it.

        Before building on a journal, what a killed process left in the page cache
        must be made durable, and a truncation too, before the first new append.
        The creator may also have died before fsyncing the directory: until it is,
        a power loss can make the whole journal vanish (found by sim).
        """
        self.dir.prepare()
        path = self.dir.journal_path(run_id)
        for _ in range(_TRIES):
            try:
                fd = self.fs.open(path, write=True)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise unreadable(exc, path, run_id) from None
            found = self._lock_at(fd, path, _opening(path, run_id))
            if found is Lock.TAKEN:
                raise _locked(path, run_id)
            if found is Lock.HELD:
                return self._recover(fd, path, run_id)
            # Moved: continue_as_new put a fresh journal there meanwhile.
        raise _kept_changing(path, run_id)

    def _recover(self, fd: int, path: str, run_id: str) -> Opened | None:
        """Scan a journal locked for writing and truncate a torn tail."""
        fs = self.fs
        try:
            found = scan_journal(fs.read(fd), path, run_id)
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
        return Opened(found.events, self._writer(path, fd, len(found.events), run_id))


def _fd(opened: Opened) -> int:
    writer = opened.writer
    assert isinstance(writer, _FileWriter)
    return writer.fd
