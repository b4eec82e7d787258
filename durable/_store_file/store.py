"""The file store: one facade over the parts of this package.

A :class:`FileStore` is made of

- a :class:`~.directory.Directory`: the store's directories, made on first use
  and checked private, and where each journal lives (``names.py``);
- :class:`~.journals.Journals`: creating, opening and restarting journals under
  their locks, with writers (``commit.py``) that share one group commit;
- a :class:`~.reading.Reader`: reading journals without locking them, listing runs;
- an :class:`~.inbox.Inbox`: messages for runs held by another process;
- a :class:`~.due.DueIndex`: which unfinished runs to take, and when;
- :class:`~.starts.Starts`: when each run started, for listings newest first;
- :class:`~.ends.Ends`: how each run ended, for listings by state.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Collection, Sequence

from .._core import events as ev
from .._core.errors import DurableError, DurableInternalError, RunLockedError, StoreError
from .._core.ids import check_run_id
from .._core.outcomes import STATUS
from .._core.payloads import payloads_from
from .._fs import FileSystem, OsFileSystem
from .._store import (
    CodecOption,
    Holder,
    JournalWriter,
    Opened,
    Removal,
    StateIndex,
    Store,
    check_sync_mode,
)
from .commit import _FileWriter, _GroupCommit
from .directory import Directory
from .due import DueIndex
from .ends import Ends
from .holders import Holders
from .inbox import Inbox
from .journals import Journals
from .reading import Reader
from .removal import remove_journal
from .starts import Starts, start_line


class FileStore(Store):
    """Journals as files in a directory; the embedded default store.

    Args:
        path: the store's directory (created if missing, mode 0700).
        sync: ``"always"`` (fsync each completion; default), ``"batch"`` (group commit
            across concurrent runs; callers still wait for their fsync) or ``"none"``
            (no fsync: for tests and benchmarks; a power loss can lose steps).
        fs: the file system to use (the simulator passes a simulated disk).
        codec: payload codecs (see :mod:`durable.codecs`): one, or a list applied in order.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: str = "always",
        fs: FileSystem | None = None,
        codec: CodecOption = None,
    ) -> None:
        self.path = os.fspath(path)
        self.payloads = payloads_from(codec)
        self.sync = check_sync_mode(sync)
        self.fs: FileSystem = fs if fs is not None else OsFileSystem()
        self._dir = Directory(self.path, self.fs)
        self._journals = Journals(self._dir, self.sync, _GroupCommit(self.fs))
        self._reader = Reader(self._dir)
        self._inbox = Inbox(self._dir, self._reader, self)
        self._due = DueIndex(self._dir, self._reader, sync=self.sync != "none")
        self._starts = Starts(self._dir, self._reader)
        self._ends = Ends(self._dir)
        #: When each run this process holds started, for its line in the ends log.
        self._started: dict[str, float] = {}
        self._holders = Holders(self._dir)

    def __repr__(self) -> str:
        codec = "" if self.payloads is None else f", codec={self.payloads.name!r}"
        return f"FileStore({self.path!r}, sync={self.sync!r}{codec})"

    def journal_path(self, run_id: str) -> str:
        """Where the journal of ``run_id`` lives."""
        return self._dir.journal_path(run_id)

    async def create(self, started: ev.RunStarted) -> JournalWriter | None:
        await self._due.prepare()
        # A new run is due at once: whoever holds it keeps the entry until it lets the
        # run go, so that a crash of the holder leaves the run found (see due.py).
        writer = await self._journals.create(
            self._sealed(started), lambda: self._due.add(started.run_id, started.t)
        )
        if writer is None:
            return None
        self._starts.add(self._dir.journal_path(started.run_id), started.t)
        self._started[started.run_id] = started.t
        self._held_here(writer)
        return self._attach(writer)

    async def restart(self, started: ev.RunStarted, writer: JournalWriter) -> JournalWriter:
        new = await self._journals.restart(self._sealed(started), writer)
        self._held_here(new)
        return self._attach(new)

    async def open(self, run_id: str) -> Opened | None:
        return self._attach_opened(self._taken(await self._journals.open(run_id)), run_id)

    async def open_many(
        self, run_ids: Sequence[str], *, limit: int | None = None
    ) -> list[Opened | DurableError | None]:
        """Open runs for recovery, then make them durable in one parallel round of
        fdatasyncs and one directory fsync (instead of two fsyncs per run)."""
        opened = await self._journals.open_many(run_ids, limit=limit)
        return self._attach_each(run_ids, [self._taken(o) if isinstance(o, Opened) else o for o in opened])

    def _held_here(self, writer: JournalWriter) -> Holder | None:
        """Note that this process holds the journal ``writer`` writes, until it closes;
        the holder that held it before without letting it go, if any."""
        if not isinstance(writer, _FileWriter):
            raise DurableInternalError(f"{writer.name} is not a journal of this store")
        run_id = writer.run_id
        writer.on_close = lambda: self._holders.free(run_id)
        return self._holders.take(run_id)

    def _taken(self, opened: Opened | None) -> Opened | None:
        if opened is None:
            return None
        first = opened.events[0] if opened.events else None
        if isinstance(first, ev.RunStarted):
            self._started[first.run_id] = first.t
        return Opened(opened.events, opened.writer, self._held_here(opened.writer))

    async def read(self, run_id: str) -> list[ev.Event] | None:
        events = await self._reader.read(run_id)
        return None if events is None else self._unsealed(events, run_id)

    def journal_bytes(self, run_id: str) -> bytes | None:
        """The bytes of a run's journal as they are (None if there is none), for tools that
        salvage what a damaged one holds. Read as :meth:`read` reads them: never through
        a symbolic link, and only from a regular file.

        Raises:
            JournalCorruptError: something other than a journal file is there, or durable
                may not read it.
        """
        return self._reader.journal_bytes(run_id)

    async def run_ids(self) -> list[str]:
        return await self._reader.run_ids()

    async def newest_first(self, limit: int | None = None, before: str | None = None) -> list[str]:
        """From the starts log (see starts.py): one listing of ``runs/`` (none while it
        is unchanged since the log last matched it), and a journal read only for a run
        the log lacks (and for a returned run whose file name does not say its id)."""
        return self._starts.newest_first(limit, before)

    async def unfinished(self) -> list[str]:
        """Ids of the runs that have not ended, sorted, found through the due index (every
        unfinished run has an entry) and checked against their journals: the cost grows
        with the unfinished runs, never with the finished ones. An entry left by a run
        that ended is removed here."""
        ids = []
        for run_id in await self._due.unfinished():
            try:
                events = await self._reader.read(run_id)
            except StoreError:
                ids.append(run_id)  # recovery reports it, and goes on with the others
                continue
            if events is None or (events and isinstance(events[-1], ev.TERMINAL)):
                if events:  # its end was not logged
                    self._ends.add(self._start_line(run_id, events[0].t), STATUS[type(events[-1])])
                self._due.remove(run_id)  # ended, or gone: the entry was stale
            elif events:
                ids.append(run_id)
        return ids

    async def post(self, run_id: str, message: ev.Message) -> None:
        await self._inbox.post(run_id, self._sealed(message))

    async def messages(self, run_id: str) -> list[ev.Message]:
        return self._unsealed(await self._inbox.messages(run_id), run_id)

    async def remove_messages(self, run_id: str, message_ids: Collection[str]) -> None:
        await self._inbox.remove_messages(run_id, message_ids)

    async def runs_with_messages(self) -> set[str]:
        return await self._inbox.runs_with_messages()

    async def due_runs(self, now: float, limit: int, *, among: Collection[str] | None = None) -> list[str]:
        ids = await self._due.due(now, limit, among)
        if len(ids) < limit:
            # Messages make a run due too: the inbox is that part of the index.
            for run_id in sorted(await self.runs_with_messages()):
                if run_id not in ids and (among is None or run_id in among) and self._due.free(run_id):
                    ids.append(run_id)
        return ids[:limit]

    async def next_due(self, now: float) -> float | None:
        return await self._due.next_due(now)

    async def release(self, writer: JournalWriter, due: float) -> None:
        if not isinstance(writer, _FileWriter):
            raise DurableInternalError(f"{writer.name} is not a journal of this store")
        await self._due.prepare()
        # The new entry is durable before the old one goes and before the lock does: a
        # crash in between leaves the run due twice (a replay), never not at all.
        kept = self._due.add(writer.run_id, due)
        self._due.remove(writer.run_id, keep=kept)
        self._started.pop(writer.run_id, None)
        writer.close()

    async def held(self, run_ids: Collection[str]) -> set[str]:
        return {run_id for run_id in run_ids if self._due.state(run_id) == "held"}

    async def remove(self, run_id: str, *, unfinished: bool = False) -> Removal:
        """Under the journal's lock, the journal first (durably), then its messages and
        holder records (see removal.py)."""
        check_run_id(run_id)
        try:
            removal = remove_journal(self._journals, run_id, unfinished=unfinished)
        except RunLockedError as exc:
            holder = self._holders.last(run_id, locked=True)
            if holder is None:
                raise
            raise RunLockedError(
                f"run {run_id!r} is held by {holder.describe()}: durable does not remove a run a "
                "process is running; stop that process (or cancel the run) first",
                run_id=run_id,
            ) from exc
        if removal == "removed":
            self._due.remove(run_id)
            messages = await self._inbox.messages(run_id)
            await self._inbox.remove_messages(run_id, [m.message_id for m in messages])
            self._holders.remove(run_id)
        return removal

    async def finished_before(self, t: float) -> list[str]:
        """From the starts log: only the journals of runs that started before ``t`` are read."""
        return [run_id for run_id, _ in await self._ends_before(self._starts.started_before(t), t)]

    async def started_before(self, t: float) -> list[str]:
        return self._starts.started_before(t)

    async def holders(self, run_ids: Collection[str]) -> dict[str, Holder]:
        """From the lock and the holder records (holders.py): a record whose lock is free
        is a holder that died."""
        found = {}
        for run_id in run_ids:
            locked = self._due.state(run_id) == "held"
            holder = self._holders.last(run_id, locked=locked)
            if holder is None and locked:
                holder = Holder(None, None, None, live=True)  # a durable without holder records
            if holder is not None:
                found[run_id] = holder
        return found

    async def wake(self, run_id: str) -> None:
        events = await self._reader.read(run_id)  # only its end matters: payloads stay sealed
        if events and not isinstance(events[-1], ev.TERMINAL):  # an ended run is due never
            await self._due.prepare()
            self._due.add(run_id, -math.inf)

    async def ended(self, run_id: str, status: str | None = None) -> None:
        started = self._started.pop(run_id, None)
        if started is None:  # not opened here (a caller of the Store API alone)
            first = self._reader.first_record(self._dir.journal_path(run_id))
            started = None if first is None else first.t
        if status is not None and started is not None:
            self._ends.add(self._start_line(run_id, started), status)  # before the entry goes
        self._due.remove(run_id)
        self._holders.ended(run_id)

    async def retrying(self, run_id: str, started: float) -> None:
        """A ``retried`` line in the ends log, fsynced (see ends.py)."""
        try:
            self._ends.retried(self._start_line(run_id, started))
        except OSError as exc:
            raise StoreError(
                f"cannot retry run {run_id!r}: writing {self._ends.path} failed ({exc}); nothing "
                "was written to the run's journal",
                run_id=run_id,
            ) from exc

    async def state_index(self) -> StateIndex:
        """From the due index (every unfinished run) and the ends log (see ends.py): a
        listing by state then reads the journals of the unfinished runs, of those the
        log lacks and of those it says ended so; its cost follows what it shows and
        what is unfinished, not the store's history."""
        ended = self._ends.statuses(self._starts.lines())
        return StateIndex(frozenset(await self._due.unfinished()), ended)

    async def note_end(self, run_id: str, status: str, started: float) -> None:
        self._ends.note(self._start_line(run_id, started), status)

    def _start_line(self, run_id: str, started: float) -> str:
        return start_line(self._dir.journal_path(run_id), started)

    async def wait_for_change(self, timeout: float, *, since: int | None = None) -> None:
        """Wait ``timeout`` seconds of real time: other processes change the files
        behind trio's back, so a test's virtual clock says nothing about them."""
        import trio  # noqa: PLC0415 - the CLI reads a FileStore without trio (start-up)

        if isinstance(self.fs, OsFileSystem):
            await trio.to_thread.run_sync(time.sleep, timeout, abandon_on_cancel=True)
        else:
            await trio.sleep(timeout)
