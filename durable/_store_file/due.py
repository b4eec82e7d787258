"""The due index: which unfinished runs to take, and when, without reading every journal.

Layout: ``<path>/due/<chunk>/<second>/<stem>``, one empty file per entry, where
``stem`` is the run's journal file name without ``.journal`` (``names.py``),
``second`` the whole epoch second the run is due at, and ``chunk`` that second
divided by 4,096 (68 minutes): a worker lists the chunks, then the seconds of
the chunks that have begun, then the entries of the seconds that have passed.
What it reads grows with the runs that are due (and the seconds and chunks
they fall in), never with the runs that wait for later. A run that only a
message can wake has its entry in ``<path>/due/waiting/<stem>`` instead.

A run gets an entry when it is created (due at once: a run nobody has taken
yet), and its holder moves it when it lets the run go (to the second its timer
or backoff ends; to ``waiting/`` when only a message can wake it: the inbox
says when) and removes it when the run ends. A run held by a live process keeps
the entry it was taken through: other workers see it due, find its journal
locked, and skip it; if its holder dies the lock goes with it, and the run is
found like any other.

So every unfinished run has an entry, and the index also answers "which runs
have not ended" (:meth:`DueIndex.unfinished`, behind ``Runtime.recover()``)
by listing the entries, at a cost that grows with the unfinished runs, never
with the finished ones.

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
  at once), under a temporary name, then renames it into place; an index made
  before ``waiting/`` existed gets it the same way (an entry for each unfinished
  run it lacks), once.
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
from .names import _MIN_JOURNAL, _SUFFIX, _file_name, _is_hashed
from .reading import Reader

#: Seconds per chunk directory: 2**12, about 68 minutes.
_CHUNK_BITS = 12
#: The second of an entry that is due at once (a new run, one a message woke).
_NOW = 0
#: Where the entries of the runs that only a message can wake are (never due by time).
_WAITING = "waiting"


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

    def _waiting_dir(self) -> str:
        return os.path.join(self.root, _WAITING)

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
        if self.fs.size(self._waiting_dir()) != -1:  # an index made before waiting/ existed
            await self._build_waiting()
        # Entries only make a worker look at a run, but a planted one must not make it
        # look at what it likes: the index is private, as the journals are.
        self.dir.check_private(self.root)
        self._ready = True

    def add(self, run_id: str, due: float) -> str:
        """Make the run due at ``due`` (an entry, durable when this returns); for
        math.inf (only a message wakes it: the inbox says when), an entry in
        ``waiting/``. Returns the entry's path. After :meth:`prepare`."""
        if not self._ready:
            raise DurableInternalError(f"the due index of {self.dir.path!r} is used before it is prepared")
        where = self._waiting_dir() if due == math.inf else self._second_dir(_second(due))
        path = self._make(where, self._stem(run_id), run_id)
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
        try:
            self.fs.unlink(path)
        except FileNotFoundError:
            pass  # removed already (by another process that found it stale, or by rm)
        except OSError as exc:
            raise self._failed(f"removing {path}", exc) from exc
        second = os.path.dirname(path)
        if not os.path.basename(second).isdigit():
            return  # waiting/ stays, empty or not: it says the index has it
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

    async def unfinished(self) -> list[str]:
        """Every run with an entry, sorted: each run that has not ended has one, and a
        run that ended may still have one (removed by whoever finds it). Reads the
        index only: its cost grows with the unfinished runs."""
        await self.prepare()
        ids = set()
        for path, stem in [*self._entries_until(math.inf), *self._entries_in(self._waiting_dir())]:
            run_id = self._run_id(stem)
            if run_id is None:
                self._unlink(path)  # its journal is gone (a hashed name is read from it)
                continue
            self._known.setdefault(run_id, set()).add(path)
            ids.add(run_id)
        return sorted(ids)

    def _entries_in(self, directory: str) -> Iterator[tuple[str, str]]:
        for stem in sorted(self._list(directory)):
            yield os.path.join(directory, stem), stem

    def _entries_until(self, second: float) -> Iterator[tuple[str, str]]:
        """``(path, stem)`` of each entry due by ``second``, oldest second first."""
        for chunk in sorted(self._list(self.root)):
            if not chunk.isdigit() or int(chunk) << _CHUNK_BITS > second:
                continue
            chunk_dir = os.path.join(self.root, chunk)
            for name in sorted(self._list(chunk_dir)):
                if not name.isdigit() or int(name) > second:
                    continue
                yield from self._entries_in(os.path.join(chunk_dir, name))

    def free(self, run_id: str) -> bool:
        """Whether the run's journal is there and nobody holds it (see :meth:`state`)."""
        return self.state(run_id) == "free"

    def state(self, run_id: str) -> str:
        """``"free"`` (nobody holds the run's lock: a test, let go at once; whoever opens
        the run decides), ``"held"``, or ``"gone"`` (no journal, or one nobody holds
        that is too short for a first record: its creation failed, or the run was
        removed)."""
        try:
            fd = self.fs.open(self.dir.journal_path(run_id), write=False)
        except FileNotFoundError:
            return "gone"
        except OSError:
            return "free"  # opening it says what is wrong with it, for this run alone
        try:
            if not self.fs.lock(fd):
                return "held"
        except OSError:
            return "free"
        finally:
            self.fs.close(fd)
        # Free, and too short to hold a first record: a creation that died before it.
        return "gone" if 0 <= self.reader.size(self.dir.journal_path(run_id)) <= _MIN_JOURNAL else "free"

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
            self._makedirs(self._waiting_dir())  # a new store (or nothing to take)
            return
        staged = f"{self.root}.building-{uuid.uuid4().hex}"
        second = os.path.join(staged, *os.path.relpath(self._second_dir(_NOW), self.root).split(os.sep))
        self._makedirs(second)
        self._makedirs(os.path.join(staged, _WAITING))
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
            for directory in (os.path.join(staged, _WAITING), staged):
                with contextlib.suppress(OSError):
                    self.fs.rmdir(directory)

    async def _build_waiting(self) -> None:
        """Give an index made before ``waiting/`` existed an entry for each unfinished
        run it lacks (those an older durable let go until a message), reading every
        journal once; built aside and renamed into place, as :meth:`_build`."""
        listed = {stem for _, stem in self._entries_until(math.inf)}
        missing = [run_id for run_id in await self._unfinished() if self._stem(run_id) not in listed]
        staged = f"{self._waiting_dir()}.building-{uuid.uuid4().hex}"
        self._makedirs(staged)
        for run_id in missing:
            self._make(staged, self._stem(run_id), run_id)
        try:
            self.fs.rename(staged, self._waiting_dir())
            if self._sync:
                self.fs.fsync_dir(self.root)
        except OSError as exc:
            if self.fs.size(self._waiting_dir()) != -1:
                raise self._failed(f"putting {staged} in place", exc) from exc
            for stem in self._list(staged):  # another process put its own in place first
                with contextlib.suppress(OSError):
                    self.fs.unlink(os.path.join(staged, stem))
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
