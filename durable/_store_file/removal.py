"""Removing a run from a file store: its journal, then what points to it.

A run is removed under its journal's lock, as it is written: whoever removes
it holds the lock of the file at the journal's path (so no process is appending
to it, and one that opens it afterwards finds the file gone: ``journals.py``
checks, after taking a lock, that the file is still at its path). The journal
goes first, durably (the directory fsynced): once it is gone, the run is gone,
whatever a crash leaves of the rest. Then its messages, its holder records and
any continuation staged beside it; a due entry left behind is removed by the
first process that finds it (the due index drops entries of runs that do not
exist), and its line in the starts log stops counting with the journal.
"""

from __future__ import annotations

import contextlib

from .._core import events as ev
from .._core.errors import StoreError
from .._store import Removal
from .journals import Journals, Lock, _locked, _reading
from .reading import scan_journal, unreadable

#: How many times the removal starts again when the journal at the path changed
#: under it (replaced by ``continue_as_new`` while it took the lock).
_TRIES = 8


def remove_journal(journals: Journals, run_id: str, *, unfinished: bool) -> Removal:
    """Remove the run's journal, durably, if it has ended (or ``unfinished``).

    Returns ``"missing"`` (no such run), ``"unfinished"`` (it has not ended and
    ``unfinished`` is False: nothing was removed) or ``"removed"``.

    Raises:
        RunLockedError: a live process holds the run.
        StoreError: the journal cannot be read or removed.
    """
    fs = journals.fs
    path = journals.dir.journal_path(run_id)
    for _ in range(_TRIES):
        try:
            fd = fs.open(path, write=False)
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            raise unreadable(exc, path, run_id) from None
        found = journals._lock_at(fd, path, _reading(path, run_id))
        if found is Lock.TAKEN:
            raise _locked(path, run_id)
        if found is Lock.MOVED:
            continue  # replaced or removed meanwhile: look again
        try:
            return _remove_locked(journals, fd, path, run_id, unfinished=unfinished)
        finally:
            with contextlib.suppress(OSError):
                fs.close(fd)
    raise StoreError(f"the journal of run {run_id!r} at {path} kept changing while durable removed it")


def _remove_locked(journals: Journals, fd: int, path: str, run_id: str, *, unfinished: bool) -> Removal:
    fs = journals.fs
    try:
        data = fs.read(fd)
    except OSError as exc:
        raise unreadable(exc, path, run_id) from None
    if not unfinished and not _ended(data, path, run_id):
        return "unfinished"
    try:
        fs.unlink(path)
        fs.fsync_dir(journals.dir.runs)
    except OSError as exc:
        raise StoreError(
            f"cannot remove the journal of run {run_id!r} at {path}: {exc}", run_id=run_id
        ) from exc
    staged = path + ".next"  # a continuation staged by a process that died
    with contextlib.suppress(OSError):
        if fs.size(staged) > 0:
            fs.unlink(staged)
    return "removed"


def _ended(data: bytes, path: str, run_id: str) -> bool:
    """Whether the journal ends with the run's end; a damaged journal has not ended (its
    end cannot be told): it goes only with ``--force``."""
    try:
        found = scan_journal(data, path, run_id)
    except StoreError:
        return False
    events = found.events
    return bool(events) and isinstance(events[-1], ev.TERMINAL)
