"""When each run started, so that listings page newest first without reading journals.

``<store>/starts.log`` gets a line ``<epoch seconds> <file name>`` each time a
run is created (the file name of its journal in ``runs/``): one append,
never fsynced, since it is a cache. Listing the runs newest first takes the
journals that ``runs/`` holds (one directory listing), each with its start from
the log; a run the log lacks (a crash lost its line, a store made before the
log, a journal copied in) has its first record read instead. So the cost of a
listing follows the runs in ``runs/`` plus those missing from the log, never
the size of their journals; a removed run drops out with its journal.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
import urllib.parse
from operator import itemgetter, methodcaller

from .directory import Directory
from .names import _MIN_JOURNAL, _SUFFIX, _file_name, _is_hashed, _names
from .reading import Reader

_LOG = "starts.log"
#: A start as the log writes it: seconds, zero-padded to a fixed width, so that
#: lines compare as text in the order of time (until the year 2286).
_WIDTH = 17
_LINES = re.compile(r"^(\d{10}\.\d{6}) ([^\s]+\.journal)$", re.MULTILINE).findall
_IS_JOURNAL = methodcaller("endswith", _SUFFIX)


def _when(t: float) -> str:
    return f"{max(t, 0.0):0{_WIDTH}.6f}"


class Starts:
    """The starts log of one store directory; see the module docstring."""

    def __init__(self, directory: Directory, reader: Reader) -> None:
        self.dir = directory
        self.fs = directory.fs
        self.reader = reader
        self.path = os.path.join(directory.path, _LOG)

    def add(self, journal_path: str, t: float) -> None:
        """Note that the run whose journal is at ``journal_path`` started at ``t``.

        Best effort: the log is a cache, so a failure to write it is not the run's
        (a listing then reads that journal's first record instead)."""
        with contextlib.suppress(OSError):
            self.fs.append(self.path, f"{_when(t)} {os.path.basename(journal_path)}\n".encode())

    def newest_first(self, limit: int | None = None, before: str | None = None) -> list[str]:
        """Run ids in ``runs/``, the newest start first (ties: by file name), at most
        ``limit``, and only those after the run ``before`` in that order.

        Whatever the number of runs, the work per run is done in C (a directory
        listing, a regular expression, a set, a partial sort); Python code runs only
        for the runs returned, and for each run when the log and ``runs/`` disagree
        (then a journal's first record is read only for a run the log lacks)."""
        starts, pairs = self._starts()
        if before is not None:
            cut = self._start_of(before, {name: when for when, name in pairs})
            if cut is None:
                return []
            starts = [start for start in starts if start < cut]
        chosen = sorted(starts, reverse=True) if limit is None else heapq.nlargest(limit, starts)
        return [run_id for _, name in chosen if (run_id := self._run_id(name)) is not None]

    def started_before(self, t: float) -> list[str]:
        """Run ids in ``runs/`` that started before ``t`` (for ``durable prune``: a run that
        ended before ``t`` started before it), the oldest first."""
        cut = _when(t)
        starts = sorted(start for start in self._starts()[0] if start[0] < cut)
        return [run_id for _, name in starts if (run_id := self._run_id(name)) is not None]

    def _starts(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """``(start, file name)`` of each journal in ``runs/``, and the log's lines."""
        try:
            names = self.fs.listdir(self.dir.runs)
        except FileNotFoundError:
            return [], []
        pairs = self._read_log()
        # The common case, checked with set operations: the journals in runs/ are
        # exactly the names in the log, one line each (runs created, none lost).
        logged = set(map(itemgetter(1), pairs))
        journals = sum(map(_IS_JOURNAL, names))
        exact = len(logged) == len(pairs) == journals and logged <= set(names)
        return (pairs if exact else self._reconciled(names, pairs)), pairs

    def _reconciled(self, names: list[str], pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``(start, name)`` of each journal in ``names``: from the log (its last line for a
        name), else from the journal's first record; lines of runs no longer there go."""
        present = set(filter(_IS_JOURNAL, names))
        latest = {name: when for when, name in pairs}
        logged = latest.keys() & present
        starts = [(latest[name], name) for name in logged]
        for name in present - logged:
            found = self._unlogged(name)
            if found is not None:
                starts.append((_when(found[0]), name))
        return starts

    def _start_of(self, run_id: str, latest: dict[str, str]) -> tuple[str, str] | None:
        """The sort key of a run (None if there is no such run)."""
        name = _file_name(run_id)
        when = latest.get(name)
        if when is None:
            found = self._unlogged(name)
            if found is None:
                return None
            when = _when(found[0])
        return when, name

    def _run_id(self, name: str) -> str | None:
        stem = name[: -len(_SUFFIX)]
        if _is_hashed(stem):
            first = self.reader.first_record(os.path.join(self.dir.runs, name))
            return None if first is None else first.run_id
        return urllib.parse.unquote(stem) if "%" in stem else stem

    def _read_log(self) -> list[tuple[str, str]]:
        """The log's lines as ``(start, stem)``, the start as written (fixed width, so that
        text compares as the time does). A line a crash cut short (or garbage) does not
        have the shape and is left out: its run, if any, is read from its journal."""
        try:
            fd = self.fs.open(self.path, write=False)
        except OSError:
            return []
        try:
            data = self.fs.read(fd)
        except OSError:
            return []
        finally:
            self.fs.close(fd)
        pairs: list[tuple[str, str]] = _LINES(data.decode(errors="replace"))
        return pairs

    def _unlogged(self, name: str) -> tuple[float, str] | None:
        """``(start, run id)`` of a journal the log lacks, as ``Reader.run_ids`` lists it:
        an entry durable cannot read is listed (at the start of time), so that reading
        it says what is wrong; an unfinished creation or a name no run id leads to is not."""
        path = os.path.join(self.dir.runs, name)
        size = self.reader.size(path)
        if 0 <= size <= _MIN_JOURNAL:
            return None
        first = self.reader.first_record(path)
        if first is not None:
            return (first.t, first.run_id) if _names(first.run_id, name) else None
        stem = name[: -len(_SUFFIX)]
        if _is_hashed(stem):
            return None  # no record says which run it is
        run_id = urllib.parse.unquote(stem)
        return (0.0, run_id) if _names(run_id, name) else None
