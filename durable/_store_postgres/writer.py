"""One run's journal writer: appends buffered in memory, committed by the store's committer.

:meth:`PgWriter.append` encodes a record and keeps it (no I/O: ``append`` is
synchronous); :meth:`PgWriter.sync` hands what is buffered to the committer
(``committer.py``) and waits until the transaction that holds it committed.
:meth:`PgWriter.flush` hands it over without waiting, so that it shares a
transaction with other runs' records.

The writer holds its run's lease at one ``epoch`` (``leases.py``): every commit
of its records is fenced on it. When the committer finds the lease gone, or a
commit fails, it calls :meth:`PgWriter.lose` from its thread, and the next
append or sync raises :class:`~durable.StoreError` with the reason. Closing the
writer commits what is still buffered (not claimed durable) and releases the
lease.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .._core import events as ev
from .._core.errors import StoreError
from .._store import JournalWriter

if TYPE_CHECKING:
    from .committer import Committer, Job


class PgWriter(JournalWriter):
    """Buffers appended records; :meth:`sync` commits them through the store's committer."""

    def __init__(self, committer: Committer, run_id: str, epoch: int, next_index: int) -> None:
        super().__init__(f"the PostgreSQL journal of run {run_id!r}", next_index)
        self.run_id = run_id
        #: The lease's epoch this writer holds: its commits are fenced on it.
        self.epoch = epoch
        #: The committer of the store that handed this writer out.
        self.committer = committer
        self._buffer: list[bytes] = []
        self._ended = False
        self._last: Job | None = None
        #: The run's outcome was appended: once committed, its lease no longer matters.
        self.terminal = False
        self.closed = False
        #: Replaced by a fresh journal (``restart``): its lease went to the new writer.
        self.superseded = False
        #: Set while this writer's records are on the direct line (``_sync_direct``).
        self._direct: trio.Event | None = None
        self._flush_after_direct = False

    def append(self, event: ev.Event) -> None:
        super().append(event)
        if isinstance(event, ev.TERMINAL):
            self._ended = True
            self.terminal = True

    def _write(self, data: bytes) -> None:
        self._buffer.append(data)  # no I/O here: append() is synchronous

    def take(self) -> tuple[int, list[bytes], bool]:
        """Hand over the buffered records: ``(index of the first, records, ended)``."""
        records, self._buffer = self._buffer, []
        ended, self._ended = self._ended, False
        return self.next_index - len(records), records, ended

    @property
    def failure(self) -> str | None:
        """Why the writer refuses further appends, if it does."""
        return self._failure

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def live(self) -> bool:
        return not self.closed and self._failure is None

    @property
    def outcome_queued(self) -> bool:
        """The run's outcome went to the committer and nothing was appended after it."""
        return self.terminal and not self._buffer and self._last is not None

    def _check(self) -> None:
        if self.closed:
            raise StoreError(f"{self.name} is closed; open the run again to write to it")
        super()._check()

    def check(self) -> None:
        """Raise :class:`~durable.StoreError` if the writer is closed or failed."""
        self._check()

    def lose(self, message: str) -> None:
        """Fail the writer from the committer thread: the next append or sync raises."""
        if self._failure is None:
            self._failure = message

    def flush(self) -> None:
        """Hand the buffered records to the committer without waiting for the commit."""
        if self._direct is not None:  # they follow the records on the direct line
            self._flush_after_direct = True
            return
        if self._buffer and self.live:
            first, records, ended = self.take()
            try:
                self._last = self.committer.enqueue(self, first, records, ended, release=False, lazy=True)
            except StoreError as exc:
                self._fail(str(exc))

    async def _sync(self) -> None:
        while self._direct is not None:  # another task's records go first
            await self._direct.wait()
        # If they failed, so does this sync: what it covers may include them.
        self._check()
        queued = self._last is not None and self._last.lazy and not self._last.done  # a flush's
        if (self._buffer or queued) and not self._ended and await self._sync_direct():
            return
        if self._buffer:
            first, records, ended = self.take()
            try:
                self._last = self.committer.enqueue(self, first, records, ended, release=False)
            except StoreError as exc:
                raise self._fail(str(exc)) from None
        job = self._last
        if job is None:
            return
        # A sync cancelled while waiting leaves its job in flight: the next sync waits
        # for it too (the committer handles each writer's jobs in order).
        await job.wait()
        if job.error is not None:
            raise self._fail(job.error)

    async def _sync_direct(self) -> bool:
        """Commit the buffered records (and those queued to the committer and not yet
        taken) from this task, on the store's direct line (``direct.py``), if the line
        is free and the committer holds none of this run's records in flight; False if
        not (nothing done)."""
        line = self.committer.direct
        if not line.acquire():
            return False
        try:
            if not await line.ready():
                return False
            # Connecting let other tasks run: one may have appended the run's outcome
            # (that commit must mark the run ended and notify: the committer's), or the
            # writer may have failed meanwhile (the committer's path says so).
            if self._ended or self._failure is not None:
                return False
            # No await from here until the records are on the line: what is taken
            # back and taken is sent, or its jobs finish with the error.
            group = self.committer.take_back(self)
            if group is None:
                return False
            first, records, _ = self.take()
            group.add_records(first, records)
            if not group.records:  # the thread committed them meanwhile: wait for its word
                return False
            self._direct = trio.Event()
            try:
                await self.committer.commit_direct(group)
            finally:
                if group.error is not None:
                    self._fail(group.error)  # before any waiting task runs again
                self._direct.set()
                self._direct = None
        finally:
            line.release()
        if group.error is not None:
            raise StoreError(f"{self.name} can no longer be written: {group.error}")
        if self._flush_after_direct:
            self._flush_after_direct = False
            self.flush()
        return True

    def close(self) -> None:
        """Commit what is still buffered (not claimed durable), release the lease. Idempotent.

        Blocks until the committer has done it (one transaction), or at most ``lease_ttl``;
        a run whose outcome is committed is released without waiting.
        """
        if self.closed:
            return
        self.closed = True
        self.committer.close_writer(self)
