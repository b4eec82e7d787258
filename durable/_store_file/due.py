"""The due index: which unfinished runs to take, and when, without reading every journal.

Layout: ``<path>/due/<chunk>/<second>/<stem>``, one empty file per entry, where
``stem`` is the run's journal file name without ``.journal`` (``names.py``),
``second`` the whole epoch second the run is due at, and ``chunk`` that second
divided by 4,096 (68 minutes): a worker lists the chunks, then the seconds of
the chunks that have begun, then the entries of the seconds that have passed.
What it reads grows with the runs that are due (and the seconds and chunks
they fall in), never with the runs that wait for later.

A run gets an entry when it is created (due at once: a run nobody has taken
yet), and its holder moves it when it lets the run go (to the second its timer
or backoff ends; nowhere, when only a message can wake it: the inbox is that
index) and removes it when the run ends. A run held by a live process keeps
the entry it was taken through: other workers see it due, find its journal
locked, and skip it; if its holder dies the lock goes with it, and the run is
found like any other.

The journal is the truth and this is a cache of it:

* an entry is made durable before what it announces (before the journal a
  creation makes is, before the lock a release gives up is), so no run that
  needs taking is ever missing from it;
* an entry too early only costs a replay: whoever takes the run finds that it
  still waits, and lets it go again (removing the early entry);
* an entry for a run that ended or never came to exist is removed by whoever
  finds it;
* a store made by a durable without the index has no ``due/``: the first
  process that needs it builds it from the journals (every unfinished run due
  at once), under a temporary name, then renames it into place.
"""

from __future__ import annotations

import contextlib
import math
import os
import urllib.parse
import uuid
from collections.abc import Collection, Iterator

from .._core import events as ev
from .._core.errors import DurableInternalError, StoreError
from .directory import Directory
from .names import _SUFFIX, _file_name, _is_hashed
from .reading import Reader

#: Seconds per chunk directory: 2**12, about 68 minutes.
_CHUNK_BITS = 12
#: The second of an entry that is due at once (a new run, one a message woke).
_NOW = 0


def _second(due: float) -> int:
    """The whole second an entry due at ``due`` goes in (due at once: the first)."""
    return _NOW if due < 1 else math.floor(due)


class DueIndex:
    """The due index of one store directory; see the module docstring."""

    def __init__(self, directory: Directory, reader: Reader, *, sync: bool) -> None:
        self.dir = directory
        self.fs = directory.fs
        self.reader = reader
        self.root = os.path.join(directory.path, "due")
        self._sync = sync
        self._ready = False
        #: The entries this process made or found, by run id: what it removes when it
        #: lets a run go or the run ends (an entry it does not know stays, found later).
        self._known: dict[str, set[str]] = {}

    # --- paths ---------------------------------------------------------------------

    def _second_dir(self, second: int) -> str:
        return os.path.join(self.root, f"{second >> _CHUNK_BITS:09d}", f"{second:012d}")

    def _stem(self, run_id: str) -> str:
        return _file_name(run_id)[: -len(_SUFFIX)]

    def _run_id(self, stem: str) -> str | None:
        if _is_hashed(stem):
            return self.reader.first_run_id(os.path.join(self.dir.runs, stem + _SUFFIX))
        return urllib.parse.unquote(stem)

    # --- making and removing entries -------------------------------------------------

    async def prepare(self) -> None:
        """Make ``due/``, building it from the journals if the store predates it."""
        if self._ready:
            return
        self.dir.prepare()
        if self.fs.size(self.root) != -1:  # not there: a new store, or one made before the index
            await self._build()
        # Entries only make a worker look at a run, but a planted one must not make it
        # look at what it likes: the index is private, as the journals are.
        self.dir.check_private(self.root)
        self._ready = True

    def add(self, run_id: str, due: float) -> str | None:
        """Make the run due at ``due`` (an entry, durable when this returns); None for
        math.inf (only a message wakes it: the inbox says so). After :meth:`prepare`."""
        if not self._ready:
            raise DurableInternalError(f"the due index of {self.dir.path!r} is used before it is prepared")
        if due == math.inf:
            return None
        path = self._make(self._second_dir(_second(due)), self._stem(run_id), run_id)
        self._known.setdefault(run_id, set()).add(path)
        return path

    def _make(self, directory: str, stem: str, run_id: str) -> str:
        """Make the entry ``stem`` in ``directory``, durably (with ``sync``)."""
        path = os.path.join(directory, stem)
        for _ in range(3):  # a remover may take an empty directory away under us
            try:
                self.fs.makedirs(directory)  # new directories are fsynced into their parent
                self.fs.close(self.fs.create(path))
            except FileExistsError:
                pass
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._failed(f"announcing run {run_id!r} in {directory}", exc) from exc
            break
        if self._sync:
            try:
                self.fs.fsync_dir(directory)
            except OSError as exc:
                raise self._failed(f"announcing run {run_id!r} in {directory}", exc) from exc
        return path

    def remove(self, run_id: str, *, keep: str | None = None) -> None:
        """Remove the entries of the run that this process knows, but ``keep``.

        Not fsynced: a removal a crash undoes leaves an entry too early, which costs
        a replay, never a step.
        """
        for path in self._known.pop(run_id, set()) - {keep}:
            self._unlink(path)
        if keep is not None:
            self._known[run_id] = {keep}

    def _unlink(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            try:
                self.fs.unlink(path)
            except OSError as exc:
                raise self._failed(f"removing {path}", exc) from exc
        second = os.path.dirname(path)
        # An empty directory goes (another process may fill it again meanwhile: rmdir
        # refuses then, and add() makes it again if it went first).
        for directory in (second, os.path.dirname(second)):
            try:
                self.fs.rmdir(directory)
            except OSError:
                break

    # --- reading ---------------------------------------------------------------------

    async def due(self, now: float, limit: int, among: Collection[str] | None) -> list[str]:
        """Up to ``limit`` runs due at ``now`` that no live process holds, oldest first."""
        await self.prepare()
        found: list[str] = []
        for path, stem in self._entries_until(math.floor(now)):
            run_id = self._run_id(stem)
            if run_id is None:
                self._unlink(path)  # its journal is gone (a hashed name is read from it)
                continue
            if (among is not None and run_id not in among) or run_id in found:
                continue
            self._known.setdefault(run_id, set()).add(path)
            state = self.state(run_id)
            if state == "gone":  # its creation failed, or it was removed: nothing to take
                self.remove(run_id)
            elif state == "free":
                found.append(run_id)
                if len(found) >= limit:
                    break
        return found

    async def next_due(self, now: float) -> float | None:
        """The first whole second after ``now`` that has entries."""
        await self.prepare()
        after = math.floor(now)
        for chunk in sorted(self._list(self.root)):
            if not chunk.isdigit() or (int(chunk) + 1) << _CHUNK_BITS <= after:
                continue
            for second in sorted(self._list(os.path.join(self.root, chunk))):
                if second.isdigit() and int(second) > after:
                    return float(int(second))
        return None

    def _entries_until(self, second: int) -> Iterator[tuple[str, str]]:
        """``(path, stem)`` of each entry due by ``second``, oldest second first."""
        for chunk in sorted(self._list(self.root)):
            if not chunk.isdigit() or int(chunk) << _CHUNK_BITS > second:
                continue
            chunk_dir = os.path.join(self.root, chunk)
            for name in sorted(self._list(chunk_dir)):
                if not name.isdigit() or int(name) > second:
                    continue
                second_dir = os.path.join(chunk_dir, name)
                for stem in sorted(self._list(second_dir)):
                    yield os.path.join(second_dir, stem), stem

    def free(self, run_id: str) -> bool:
        """Whether the run's journal is there and nobody holds it (see :meth:`state`)."""
        return self.state(run_id) == "free"

    def state(self, run_id: str) -> str:
        """``"free"`` (nobody holds the run's lock: a test, let go at once; whoever opens
        the run decides), ``"held"``, or ``"gone"`` (no journal: an entry is only made
        once its journal exists, so its creation failed or the run was removed)."""
        try:
            fd = self.fs.open(self.dir.journal_path(run_id), write=False)
        except FileNotFoundError:
            return "gone"
        except OSError:
            return "free"  # opening it says what is wrong with it, for this run alone
        try:
            return "free" if self.fs.lock(fd) else "held"
        except OSError:
            return "free"
        finally:
            self.fs.close(fd)

    def _list(self, directory: str) -> list[str]:
        try:
            return self.fs.listdir(directory)
        except OSError as exc:
            raise self._failed(f"listing {directory}", exc) from exc

    # --- building it from the journals -------------------------------------------------

    async def _build(self) -> None:
        """Build ``due/`` for a store that has none: every unfinished run due at once.

        Built under a temporary name and renamed into place, so that a crash or a
        process building it at the same time never leaves a partial index behind
        the real name.
        """
        unfinished = await self._unfinished()
        if not unfinished:
            self._makedirs(self.root)  # a new store (or nothing to take)
            return
        staged = f"{self.root}.building-{uuid.uuid4().hex}"
        second = os.path.join(staged, *os.path.relpath(self._second_dir(_NOW), self.root).split(os.sep))
        self._makedirs(second)
        for run_id in unfinished:
            self._make(second, self._stem(run_id), run_id)
        try:
            if self._sync:
                for directory in (os.path.dirname(second), staged):
                    self.fs.fsync_dir(directory)
            self.fs.rename(staged, self.root)
            if self._sync:
                self.fs.fsync_dir(self.dir.path)
        except OSError as exc:
            if self.fs.size(self.root) != -1:
                raise self._failed(f"putting {staged} in place", exc) from exc
            # Another process built it first: ours goes.
            for stem in self._list(second):
                self._unlink(os.path.join(second, stem))
            with contextlib.suppress(OSError):
                self.fs.rmdir(staged)

    async def _unfinished(self) -> list[str]:
        ids = []
        for run_id in await self.reader.run_ids():
            try:
                events = await self.reader.read(run_id)
            except StoreError:
                ids.append(run_id)  # taking it says what is wrong with it
                continue
            if events and not isinstance(events[-1], ev.TERMINAL):
                ids.append(run_id)
        return ids

    def _makedirs(self, directory: str) -> None:
        try:
            self.fs.makedirs(directory)
        except OSError as exc:
            raise self._failed(f"making {directory}", exc) from exc

    def _failed(self, what: str, exc: OSError) -> StoreError:
        return StoreError(
            f"{what} (the due index of the store {self.dir.path!r}) failed: {exc}", path=self.root
        )
