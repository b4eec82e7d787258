"""An in-memory store for tests: journal contract v1 bytes in a dict, nothing on disk."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Collection

import trio

from ._core import events as ev
from ._core.codec import encode_header, encode_record, scan
from ._core.errors import DurableInternalError, RunLockedError, StoreError, UnknownRunError
from ._core.payloads import payloads_from
from ._store import CodecOption, Holder, JournalWriter, Opened, Removal, Store, page


class _MemoryWriter(JournalWriter):
    syncs = False

    def __init__(self, store: MemoryStore, run_id: str, next_index: int) -> None:
        super().__init__(f"memory journal {run_id!r}", next_index)
        self._store = store
        self.run_id = run_id
        self._closed = False

    def _write(self, data: bytes) -> None:
        self._store.journals[self.run_id] += data

    async def _sync(self) -> None:
        pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._store._open.discard(self.run_id)


class MemoryStore(Store):
    """Journals kept in memory, encoded exactly as on disk; for tests and examples.

    ``journals`` maps each run id to its journal bytes, so a test can inspect or
    damage them.

    Args:
        codec: payload codecs (see :mod:`durable.codecs`): one, or a list applied in order.
    """

    def __init__(self, *, codec: CodecOption = None) -> None:
        self.payloads = payloads_from(codec)
        self.journals: dict[str, bytearray] = {}
        self._open: set[str] = set()
        self.inboxes: dict[str, list[ev.Message]] = {}
        #: The due index: when each unfinished run has work to do (see Store.due_runs).
        self.due: dict[str, float] = {}
        self._changed = trio.Event()
        self._generation = 0

    def __repr__(self) -> str:
        return f"MemoryStore({len(self.journals)} runs)"

    def _lock(self, run_id: str) -> None:
        if run_id in self._open:
            raise RunLockedError(f"run {run_id!r} is already open for writing in this store", run_id=run_id)
        self._open.add(run_id)

    async def create(self, started: ev.RunStarted) -> JournalWriter | None:
        if started.run_id in self.journals:
            return None
        # Encoded first: a record the journal cannot hold is refused before the run
        # exists or is locked.
        first = encode_record(self._sealed(started), 0, -1)
        self._lock(started.run_id)
        self.journals[started.run_id] = bytearray(encode_header() + first)
        writer = self._attach(_MemoryWriter(self, started.run_id, 1))
        writer.synced_through(0)
        self.due.setdefault(started.run_id, started.t)  # kept by a continuation
        self._notify()
        return writer

    async def open(self, run_id: str) -> Opened | None:
        if run_id not in self.journals:
            return None
        self._lock(run_id)
        try:
            found = scan(bytes(self.journals[run_id]), f"memory journal {run_id!r}")
        except BaseException:
            self._open.discard(run_id)
            raise
        del self.journals[run_id][found.end :]
        opened = Opened(found.events, _MemoryWriter(self, run_id, len(found.events)))
        return self._attach_opened(opened, run_id)

    async def restart(self, started: ev.RunStarted, writer: JournalWriter) -> JournalWriter:
        encode_record(self._sealed(started), 0, -1)  # refused before the old journal goes, not after
        writer.close()
        del self.journals[started.run_id]
        fresh = await self.create(started)
        if fresh is None:
            raise DurableInternalError(f"run {started.run_id!r} reappeared while it was being restarted")
        return fresh

    async def read(self, run_id: str) -> list[ev.Event] | None:
        data = self.journals.get(run_id)
        if data is None:
            return None
        return self._unsealed(scan(bytes(data), f"memory journal {run_id!r}").events, run_id)

    async def run_ids(self) -> list[str]:
        return sorted(self.journals)

    async def newest_first(self, limit: int | None = None, before: str | None = None) -> list[str]:
        return page(await self._all_newest_first(), limit, before)

    async def _all_newest_first(self) -> list[str]:
        starts = {}
        for run_id, data in self.journals.items():
            events = scan(bytes(data), f"memory journal {run_id!r}").events
            starts[run_id] = events[0].t if events else 0.0
        return sorted(starts, key=lambda run_id: (starts[run_id], run_id), reverse=True)

    async def post(self, run_id: str, message: ev.Message) -> None:
        if run_id not in self.journals:
            raise UnknownRunError(run_id, self)
        inbox = self.inboxes.setdefault(run_id, [])
        if all(m.message_id != message.message_id for m in inbox):
            inbox.append(self._sealed(message))  # held as a store holds it: sealed
        await self.wake(run_id)

    async def messages(self, run_id: str) -> list[ev.Message]:
        return self._unsealed(list(self.inboxes.get(run_id, ())), run_id)

    async def remove_messages(self, run_id: str, message_ids: Collection[str]) -> None:
        gone = set(message_ids)
        kept = [m for m in self.inboxes.get(run_id, ()) if m.message_id not in gone]
        if kept:
            self.inboxes[run_id] = kept
        else:
            self.inboxes.pop(run_id, None)

    async def runs_with_messages(self) -> set[str]:
        return set(self.inboxes)

    async def due_runs(self, now: float, limit: int, *, among: Collection[str] | None = None) -> list[str]:
        due = sorted(
            (when, run_id)
            for run_id, when in self.due.items()
            if when <= now and run_id not in self._open and (among is None or run_id in among)
        )
        return [run_id for _, run_id in due[:limit]]

    async def next_due(self, now: float) -> float | None:
        return min((when for when in self.due.values() if now < when < math.inf), default=None)

    async def release(self, writer: JournalWriter, due: float) -> None:
        if not isinstance(writer, _MemoryWriter):
            raise DurableInternalError(f"{writer.name} is not a journal of this store")
        self.due[writer.run_id] = due
        writer.close()
        self._notify()

    async def held(self, run_ids: Collection[str]) -> set[str]:
        return set(run_ids) & self._open

    async def remove(self, run_id: str, *, unfinished: bool = False) -> Removal:
        data = self.journals.get(run_id)
        if data is None:
            return "missing"
        if run_id in self._open:
            raise RunLockedError(f"run {run_id!r} is open for writing in this store", run_id=run_id)
        if not unfinished:
            try:
                events = scan(bytes(data), f"memory journal {run_id!r}").events
            except StoreError:
                return "unfinished"  # damaged: its end cannot be told
            if not events or not isinstance(events[-1], ev.TERMINAL):
                return "unfinished"
        del self.journals[run_id]
        self.inboxes.pop(run_id, None)
        self.due.pop(run_id, None)
        return "removed"

    async def holders(self, run_ids: Collection[str]) -> dict[str, Holder]:
        """Only this process can hold a run of a memory store, and only while it lives."""
        me = Holder(os.getpid(), socket.gethostname(), None, live=True)
        return {run_id: me for run_id in await self.held(run_ids)}

    async def wake(self, run_id: str) -> None:
        if run_id in self.due:
            self.due[run_id] = min(self.due[run_id], 0.0)
        self._notify()

    async def ended(self, run_id: str, status: str | None = None) -> None:
        self.due.pop(run_id, None)

    def change_token(self) -> int:
        return self._generation

    async def wait_for_change(self, timeout: float, *, since: int | None = None) -> None:
        """Wait until a run is created or a message posted: this store sees every change
        itself, so it needs no timeout to find one (and ignores ``timeout``)."""
        if since is not None and since != self._generation:
            return
        await self._changed.wait()

    def _notify(self) -> None:
        self._generation += 1
        self._changed.set()
        self._changed = trio.Event()
