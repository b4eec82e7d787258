"""When each run started, so that listings page newest first without reading journals.

``<store>/starts.log`` gets a line ``<epoch seconds> <file name>`` each time a
run is created (the file name of its journal in ``runs/``): one append,
never fsynced, since it is a cache. Listing the runs newest first takes the
journals that ``runs/`` holds (one directory listing), each with its start from
the log; a run the log lacks (a crash lost its line, a store made before the
log, a journal copied in) has its first record read instead. So the cost of a
listing follows the runs in ``runs/`` plus those missing from the log, never
the size of their journals; a removed run drops out with its journal.

The exactness check. In the common case the log holds exactly one well-formed
line per journal in ``runs/`` (runs created, none lost, none removed): then its
lines are the listing. A listing that finds otherwise (a run removed, a line
lost or torn) rewrites the log with one line per journal it found, so that the
next one finds it exact again. ``<store>/starts.checked`` remembers that the
check passed, for ``runs/``'s stamp (:meth:`FileSystem.dir_stamp`, its
modification time) and the log's size at the time: while both are unchanged, a
listing neither lists ``runs/`` nor checks, and reads only the log (whose lines
sort as text in the order of start), so that its cost follows the runs listed,
not the store's history. That file is never the truth either: a stamp or size
that differs, or a file that does not parse, sends the listing to the check.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
import time
import urllib.parse
from operator import itemgetter, methodcaller

from .directory import Directory, read_whole
from .names import _MIN_JOURNAL, _SUFFIX, _file_name, _is_hashed, _names, _plain_run_id
from .reading import Reader

_LOG = "starts.log"
_CHECKED = "starts.checked"
#: A start as the log writes it: seconds, zero-padded to a fixed width, so that
#: lines compare as text in the order of time (until the year 2286), then of name.
_WIDTH = 17
_LINE = r"[0-9]{10}\.[0-9]{6} [^\s]+\.journal"
#: The log's well-formed lines, whole (a torn line or garbage is left out).
_LINES = re.compile(rf"^{_LINE}$", re.MULTILINE).findall
#: The file names of the log's well-formed lines (each ended by its newline).
_NAMES = re.compile(r"^[0-9]{10}\.[0-9]{6} ([^\s]+\.journal)\n", re.MULTILINE).findall
_IS_LINE = re.compile(_LINE).fullmatch
_CHECKED_FORMAT = "durable starts.log checked: runs/ stamp {} log size {}\n"
_CHECKED_LINE = re.compile(
    r"durable starts\.log checked: runs/ stamp (-?[0-9]{1,24}) log size ([0-9]{1,20})\n"
)
#: How long ago ``runs/`` must have last changed for its stamp to be trusted: a change
#: made within a clock tick of the check could leave the modification time as it was.
_SETTLED_NS = 2_000_000_000
_IS_JOURNAL = methodcaller("endswith", _SUFFIX)
_NAME = itemgetter(slice(_WIDTH + 1, None))


def start_line(journal_path: str, t: float) -> str:
    """The log's line (without its newline) for the journal at ``journal_path``, started at ``t``."""
    return f"{_when(t)} {os.path.basename(journal_path)}"


def _when(t: float) -> str:
    return f"{max(t, 0.0):0{_WIDTH}.6f}"


class Starts:
    """The starts log of one store directory; see the module docstring."""

    def __init__(self, directory: Directory, reader: Reader) -> None:
        self.dir = directory
        self.fs = directory.fs
        self.reader = reader
        self.path = os.path.join(directory.path, _LOG)
        self.checked_path = os.path.join(directory.path, _CHECKED)

    def add(self, journal_path: str, t: float) -> None:
        """Note that the run whose journal is at ``journal_path`` started at ``t``.

        Best effort: the log is a cache, so a failure to write it is not the run's
        (a listing then reads that journal's first record instead)."""
        with contextlib.suppress(OSError):
            self.fs.append(self.path, f"{start_line(journal_path, t)}\n".encode())

    def lines(self) -> list[str]:
        """A line ``<start> <file name>`` for each journal in ``runs/`` (as a listing
        finds them: from the log, checked against ``runs/`` unless ``starts.checked``
        says it matched)."""
        return self._starts()[0]

    def newest_first(self, limit: int | None = None, before: str | None = None) -> list[str]:
        """Run ids in ``runs/``, the newest start first (ties: by file name), at most
        ``limit``, and only those after the run ``before`` in that order.

        Whatever the number of runs, the work per run is done in C (splitting the log,
        a partial sort; when ``runs/`` changed, a directory listing, a regular
        expression and sets); Python code runs only for the runs returned, and for each
        run when the log and ``runs/`` disagree (then a journal's first record is read
        only for a run the log lacks)."""
        lines, logged, unchecked = self._starts()
        chosen = self._chosen(lines, logged, limit, before)
        if unchecked and not all(map(_IS_LINE, chosen)):
            # starts.checked was wrong (the log was rewritten at the same size): check.
            lines, logged = self._checked_starts(None, 0, self._read(self.path))
            chosen = self._chosen(lines, logged, limit, before)
        return self._run_ids(chosen)

    def started_before(self, t: float) -> list[str]:
        """Run ids in ``runs/`` that started before ``t`` (for ``durable prune``: a run that
        ended before ``t`` started before it), the oldest first."""
        cut = _when(t)  # a line "<start> <name>" sorts before it exactly if its start does
        lines, _, unchecked = self._starts()
        chosen = sorted(filter(cut.__gt__, lines))
        if unchecked and not all(map(_IS_LINE, chosen)):
            lines = self._checked_starts(None, 0, self._read(self.path))[0]
            chosen = sorted(filter(cut.__gt__, lines))
        return self._run_ids(chosen)

    def _chosen(
        self, lines: list[str], logged: list[str], limit: int | None, before: str | None
    ) -> list[str]:
        if before is not None:
            cut = self._line_of(before, lines, logged)
            if cut is None:
                return []
            lines = list(filter(cut.__gt__, lines))
        return sorted(lines, reverse=True) if limit is None else heapq.nlargest(limit, lines)

    def _run_ids(self, lines: list[str]) -> list[str]:
        return [run_id for name in map(_NAME, lines) if (run_id := self._run_id(name)) is not None]

    def _starts(self) -> tuple[list[str], list[str], bool]:
        """A line ``<start> <file name>`` for each journal in ``runs/`` (they sort as text
        by start, then name), the log's well-formed lines, and whether the first are the
        log's lines taken unchecked, as ``starts.checked`` allows."""
        now = time.time_ns()  # before the stamp is read: see _checked_starts
        try:
            stamp: int | None = self.fs.dir_stamp(self.dir.runs)
        except FileNotFoundError:
            return [], [], False
        except OSError:
            stamp = None
        data = self._read(self.path)
        if stamp is not None and data[-1:] in (b"", b"\n") and self._checked() == (stamp, len(data)):
            # The log is as it was when found exact for runs/ as it is: its lines, all
            # well-formed (or the check would not have been remembered), are the starts.
            lines = data.decode(errors="replace").split("\n")
            lines.pop()  # after the last newline
            return lines, lines, True
        return (*self._checked_starts(stamp, now, data), False)

    def _checked_starts(self, stamp: int | None, now: int, data: bytes) -> tuple[list[str], list[str]]:
        """The exactness check (see the module docstring), from ``runs/`` listed now
        and the log's content ``data``; remembered in ``starts.checked`` for ``stamp``
        (``runs/``'s, read at ``now`` or after, before the listing) when it passes."""
        names = self.fs.listdir(self.dir.runs)
        text = data.decode(errors="replace")
        logged_names = _NAMES(text)
        # Clean (every line well-formed, the last one ended) is the common case, in which
        # splitting the log gives its lines; else a line cut short or garbage is skipped.
        clean = len(logged_names) == text.count("\n") and text[-1:] in ("", "\n")
        if clean:
            logged = text.split("\n")
            logged.pop()  # after the last newline
        else:
            logged = _LINES(text)
            logged_names = list(map(_NAME, logged))
        unique = set(logged_names)
        exact = (
            len(unique) == len(logged)
            and unique.issubset(names)
            and (len(names) == len(unique) or sum(map(_IS_JOURNAL, names)) == len(unique))
        )
        if clean and exact:
            # Remembered only for a runs/ that last changed some seconds before the stamp
            # was read (as git does for its index): a change made since, even within the
            # same tick of a coarse clock, then gives runs/ another stamp. A runs/ changed
            # more recently is checked again at each listing until it settles.
            if stamp is not None and stamp < now - _SETTLED_NS:
                self._write(self.checked_path, _CHECKED_FORMAT.format(stamp, len(data)))
            return logged, logged
        lines, certain = self._reconciled(names, logged)
        if certain != logged:
            self._rewrite(certain)
        return lines, logged

    def _reconciled(self, names: list[str], logged: list[str]) -> tuple[list[str], list[str]]:
        """A line for each journal in ``names``: from the log (its last line for a name),
        else from the journal's first record; lines of runs no longer there go. Also
        those lines, sorted, without the starts guessed for entries that could not be
        read (what the log should say)."""
        present = set(filter(_IS_JOURNAL, names))
        latest = dict(zip(map(_NAME, logged), logged, strict=True))
        kept = latest.keys() & present
        lines = [latest[name] for name in kept]
        guessed: list[str] = []
        for name in present - kept:
            found = self._unlogged(name)
            if found is not None:
                (guessed if found[2] else lines).append(f"{_when(found[0])} {name}")
        lines.sort()
        return lines + guessed, lines

    def _rewrite(self, lines: list[str]) -> None:
        """Make the log exact again: ``lines``, one a journal (best effort).

        A run created meanwhile may append its line to the log being replaced, and so
        lose it: that costs only reading its journal's first record, as for a line a
        crash lost, until the next listing finds it missing and writes it back."""
        self._write(self.path, "".join(f"{line}\n" for line in lines))

    def _write(self, path: str, text: str) -> None:
        """Replace a cache's file at once (a new file renamed over it), never fsynced.

        Best effort: the store may be read-only to this user. Two processes writing
        it at once may rename each other's file, even half written: what it then
        holds is still lines of the log, or a starts.checked that does not parse."""
        temp = f"{path}.tmp"
        with contextlib.suppress(OSError):
            fd = self.fs.replace_file(temp)
            try:
                self.fs.write(fd, text.encode())
            finally:
                self.fs.close(fd)
            self.fs.rename(temp, path)

    def _checked(self) -> tuple[int, int] | None:
        """``(runs/ stamp, log size)`` as ``starts.checked`` says (None if it does not)."""
        found = _CHECKED_LINE.fullmatch(self._read(self.checked_path).decode(errors="replace"))
        return None if found is None else (int(found[1]), int(found[2]))

    def _line_of(self, run_id: str, lines: list[str], logged: list[str]) -> str | None:
        """The line of a run (None if there is no such run): in ``runs/``, else in the
        log (its last line), else from its journal's first record."""
        name = _file_name(run_id)
        ends = methodcaller("endswith", f" {name}")  # names hold no space: the whole name
        line = next(filter(ends, lines), None) or next(filter(ends, reversed(logged)), None)
        if line is None:
            found = self._unlogged(name)
            if found is None:
                return None
            line = f"{_when(found[0])} {name}"
        return line

    def _run_id(self, name: str) -> str | None:
        run_id = _plain_run_id(name)
        if run_id is None:  # a hashed name: the id is in the first record
            first = self.reader.first_record(os.path.join(self.dir.runs, name))
            return None if first is None else first.run_id
        return run_id

    def _read(self, path: str) -> bytes:
        """The content of a cache's file (b"" if it cannot be read). Lines of the log that
        a crash cut short (or garbage) do not have the shape of a line: they are left
        out, and their runs, if any, read from their journals."""
        return read_whole(self.fs, path)

    def _unlogged(self, name: str) -> tuple[float, str, bool] | None:
        """``(start, run id, guessed)`` of a journal the log lacks, as ``Reader.run_ids``
        lists it: an entry durable cannot read is listed (at the start of time, a guess
        the log is not given), so that reading it says what is wrong; an unfinished
        creation or a name no run id leads to is not."""
        path = os.path.join(self.dir.runs, name)
        size = self.reader.size(path)
        if 0 <= size <= _MIN_JOURNAL:
            return None
        first = self.reader.first_record(path)
        if first is not None:
            return (first.t, first.run_id, False) if _names(first.run_id, name) else None
        stem = name[: -len(_SUFFIX)]
        if _is_hashed(stem):
            return None  # no record says which run it is
        run_id = urllib.parse.unquote(stem)
        return (0.0, run_id, True) if _names(run_id, name) else None
