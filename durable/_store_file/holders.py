"""Who holds each run, so that a run whose process died is told from one nobody took.

A run's lock (``flock`` on its journal) says whether a live process holds it,
but not who, and it vanishes with a process that dies: a run whose holder was
SIGKILLed then looks like one nobody ever took. So each process that takes a
run appends a line to ``<store>/holders/<stem>`` (``stem``: the journal's file
name without ``.journal``, as in ``due/``)::

    take <epoch seconds> <pid> <host>
    free <epoch seconds>

``take`` when it creates or opens the journal, ``free`` when it lets the run
go (its writer closes: the run ended, waits, or its runtime stopped). The last
line tells the story: ``take`` with the lock held is the live holder; ``take``
with the lock free is a holder that died without letting go (the run is
*stalled*, and whoever takes it next *takes it over*); ``free`` or no file is a
run nobody holds. A run that ended has no file: its journal's last record says
all there is to say, and a store of 100,000 finished runs keeps no 100,000 files
for them. A file that has grown past a few KB (a run let go and taken back many
times) starts over at its next ``take``.

Like the starts log, this is a cache written with ``FileSystem.append`` and
never fsynced (no crash point in the simulator): a crash of the machine may
lose a last line, and then a stalled run shows as queued, never the reverse of
a fact the journal or the lock holds. A file grows by two short lines per
take; it goes when the run ends, or with the run (``durable rm``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.parse

from .._store import Holder
from .directory import Directory
from .names import _SUFFIX, _file_name

_DIR = "holders"
#: At most this much of a file's end is read: its last line is all that counts.
_TAIL = 512
#: A file past this size starts over at the next take (only its last line counts).
_COMPACT_AT = 4096


class Holders:
    """The holder records of one store directory; see the module docstring."""

    def __init__(self, directory: Directory) -> None:
        self.dir = directory
        self.fs = directory.fs
        self.root = os.path.join(directory.path, _DIR)
        self._host = urllib.parse.quote(socket.gethostname(), safe="") or "?"
        #: The runs this process holds, and those of them that ended while held
        #: (their ``free`` must not write the file that their end removed).
        self._held: set[str] = set()
        self._ended: set[str] = set()

    def _path(self, run_id: str) -> str:
        return os.path.join(self.root, _file_name(run_id)[: -len(_SUFFIX)])

    def take(self, run_id: str) -> Holder | None:
        """Note that this process holds the run now (it has its lock). Returns the
        holder that held it before without letting it go (it died), if any."""
        previous = self.last(run_id, locked=False)
        if self._size(run_id) > _COMPACT_AT:
            self.remove(run_id)  # the lock is ours: nobody else writes it meanwhile
        self._append(run_id, f"take {time.time():.6f} {os.getpid()} {self._host}\n")
        self._held.add(run_id)
        return previous

    def free(self, run_id: str) -> None:
        """Note that this process lets the run go (before its lock goes)."""
        self._held.discard(run_id)
        if run_id in self._ended:
            self._ended.discard(run_id)
            return
        self._append(run_id, f"free {time.time():.6f}\n")

    def ended(self, run_id: str) -> None:
        """The run ended: forget its records (and write none when this process lets it go)."""
        self.remove(run_id)
        if run_id in self._held:
            self._ended.add(run_id)

    def last(self, run_id: str, *, locked: bool) -> Holder | None:
        """The run's holder: the last ``take`` line if no ``free`` came after it (live when
        the run is ``locked``), else None."""
        line = self._last_line(run_id)
        parts = line.split(" ") if line else []
        if len(parts) != 4 or parts[0] != "take":
            return None
        try:
            since, pid = float(parts[1]), int(parts[2])
        except ValueError:
            return None  # a line cut short by a crash, or not ours: nothing known
        return Holder(pid, urllib.parse.unquote(parts[3]), since, live=locked)

    def remove(self, run_id: str) -> None:
        """Forget the run's records (the run is removed)."""
        with contextlib.suppress(OSError):  # best effort, as for its appends
            self.fs.discard(self._path(run_id))

    def _size(self, run_id: str) -> int:
        try:
            return self.fs.size(self._path(run_id))
        except OSError:
            return -1

    def _last_line(self, run_id: str) -> str | None:
        try:
            fd = self.fs.open(self._path(run_id), write=False)
        except OSError:
            return None
        try:
            data = self.fs.read(fd)[-_TAIL:]
        except OSError:
            return None
        finally:
            self.fs.close(fd)
        lines = data.decode("utf-8", "replace").split("\n")
        # The last complete line: a line without its newline was cut short by a crash.
        return lines[-2] if len(lines) >= 2 else None

    def _append(self, run_id: str, line: str) -> None:
        """Best effort: a record that cannot be written costs a less precise state in
        ``durable ls``, never the run."""
        path = self._path(run_id)
        try:
            self.fs.append(path, line.encode())
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                self.fs.makedirs(self.root)
                self.fs.append(path, line.encode())
        except OSError:
            pass
