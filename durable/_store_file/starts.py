"""When each run started, so that listings page newest first without reading journals.

``<store>/starts.log`` gets a line ``<epoch seconds> <stem>`` each time a run is
created (``stem`` is its journal's file name without ``.journal``): one append,
never fsynced, since it is a cache. Listing the runs newest first takes the
journals that ``runs/`` holds (one directory listing), each with its start from
the log; a run the log lacks (a crash lost its line, a store made before the
log, a journal copied in) has its first record read instead. So the cost of a
listing follows the runs in ``runs/`` plus those missing from the log, never
the size of their journals; a removed run drops out with its journal.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse

from .directory import Directory
from .names import _MIN_JOURNAL, _SUFFIX, _is_hashed, _names
from .reading import Reader

_LOG = "starts.log"


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
        stem = os.path.basename(journal_path)[: -len(_SUFFIX)]
        with contextlib.suppress(OSError):
            self.fs.append(self.path, f"{t:.6f} {stem}\n".encode())

    def newest_first(self) -> list[str]:
        """Every run id in ``runs/``, the newest start first (ties: by file name)."""
        try:
            names = self.fs.listdir(self.dir.runs)
        except FileNotFoundError:
            return []
        logged = self._read_log()
        starts: list[tuple[float, str, str]] = []
        for name in names:
            if not name.endswith(_SUFFIX):
                continue
            stem = name[: -len(_SUFFIX)]
            t = logged.get(stem)
            if t is not None and not _is_hashed(stem):
                starts.append((t, stem, urllib.parse.unquote(stem) if "%" in stem else stem))
                continue
            found = self._unlogged(name)
            if found is not None:
                starts.append((found[0] if t is None else t, stem, found[1]))
        starts.sort(reverse=True)
        return [run_id for _, _, run_id in starts]

    def _read_log(self) -> dict[str, float]:
        """The log's lines as stem -> start (a later line wins: a run made again)."""
        try:
            fd = self.fs.open(self.path, write=False)
        except (FileNotFoundError, OSError):
            return {}
        try:
            data = self.fs.read(fd)
        except OSError:
            return {}
        finally:
            self.fs.close(fd)
        logged = {}
        for line in data.decode(errors="replace").splitlines():
            t_text, _, stem = line.partition(" ")
            try:
                logged[stem] = float(t_text)
            except ValueError:
                continue  # a line torn by a crash: its run is read from its journal
        return logged

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
