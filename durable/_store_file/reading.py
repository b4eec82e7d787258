"""Reading journals as they are, without locking them, and listing the runs.

A journal is read never through a symbolic link and only from a regular file,
and it must name the run its file is named after: a journal copied or renamed
to another run's name is damage (:class:`~durable.JournalCorruptError`), not
that run. What is wrong with one run's entry is that run's error
(:func:`unreadable`); every other run goes on.
"""

from __future__ import annotations

import os
import urllib.parse

from .._core import events as ev
from .._core.codec import HEADER_SIZE, Scan, decode_record, scan
from .._core.errors import JournalCorruptError, JournalUnreadableError, StoreError
from .._fs import NotRegularFileError
from .directory import Directory
from .names import _MIN_JOURNAL, _SUFFIX, _is_hashed, _names


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


def scan_journal(data: bytes, path: str, run_id: str) -> Scan:
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


class Reader:
    """Reads the journals of one store's runs, and lists them."""

    def __init__(self, directory: Directory) -> None:
        self.dir = directory
        self.fs = directory.fs

    async def read(self, run_id: str) -> list[ev.Event] | None:
        data = self.journal_bytes(run_id)
        if data is None:
            return None
        found = scan_journal(data, self.dir.journal_path(run_id), run_id)
        return found.events if found.exists else None

    def journal_bytes(self, run_id: str) -> bytes | None:
        """The bytes of a run's journal as they are (None if there is none)."""
        path = self.dir.journal_path(run_id)
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
        runs = self.dir.runs
        try:
            names = self.fs.listdir(runs)
        except OSError as exc:
            raise StoreError(f"cannot list the runs in {self.dir.path!r}: {exc}", path=runs) from None
        # A file too small for a header and a first record is a creation that never
        # finished (a crash before its first fsync): not a run. Something other than a
        # file (a directory, a link...) named like a journal is listed: reading it then
        # says what is wrong with that run. A name durable never gives a journal (no
        # valid run id is stored under it) is left out: no run id leads to it.
        ids = []
        for name in names:
            path = os.path.join(runs, name)
            if not name.endswith(_SUFFIX) or 0 <= self.size(path) <= _MIN_JOURNAL:
                continue
            run_id = (
                self.first_run_id(path) if _is_hashed(name) else urllib.parse.unquote(name[: -len(_SUFFIX)])
            )
            if run_id is not None and _names(run_id, name):
                ids.append(run_id)
        return sorted(ids)

    def size(self, path: str) -> int:
        """The size of the file at ``path``; -1 if that cannot be told."""
        try:
            return self.fs.size(path)
        except OSError:
            return -1  # listed: reading it says what is wrong

    def first_run_id(self, path: str) -> str | None:
        """The run id a journal's first record names (for hashed file names).

        Only the first record is read, so damage further on does not hide the run
        from a listing (reading it then reports the damage). An entry that cannot be
        read at all is left out: nothing tells which run it belongs to.
        """
        first = self.first_record(path)
        return None if first is None else first.run_id

    def first_record(self, path: str) -> ev.RunStarted | None:
        """The first record of the journal at ``path``, if it is a RunStarted that names
        a run (else None: the entry cannot be read, or is no journal)."""
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
        return first
