"""Group commit: one thread per store commits what all its writers queued, together.

Appends are buffered in the writer (``writer.py``); :meth:`PgWriter.sync` hands
them to the store's committer thread as a :class:`Job`, and the thread commits
what every writer of this store queued meanwhile in one transaction (one fenced
``UPDATE`` for all runs, one ``INSERT`` for all records, fencing each run on its
own, see ``leases.py``: a fenced run's records are left out without failing the
others) and wakes the callers once it committed. A database error fails the
writers of that batch and is never retried (the outcome of a failed commit can
be unknown): their runs resume from the journal by replay.

The same transaction renews the leases of the store's live writers every
``lease_ttl / 3``, releases those of closed writers and of runs let go (setting
their due time, ``due.py``), and announces the runs that ended or were released
with ``NOTIFY`` (``listener.py``). A run let go whose lease is no longer the
writer's is not released, and its job fails: the caller hears of it. A batch
with nothing but records of runs that go on (most steps) is the fenced append
alone: one statement, run outside a transaction block, which PostgreSQL commits
as a transaction of its own: one round trip instead of three.

A run whose records the thread does not hold commits its steps from the event
loop instead, on the store's direct line (``direct.py``), when the line is free:
that saves the two thread wake-ups around each commit. A flush (a step's start,
handed over before its activity runs) waits up to ``FLUSH_DELAY`` in the queue, so
that a quick activity's sync takes it back and commits both in one statement.

The committer also keeps the store's writers, at most one per run: a run is
*claimed* before it is taken (:meth:`Committer.claim`), so two tasks of one store
never open one run at once, and *registered* with its writer once taken, which
starts the thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, LiteralString

import psycopg
import trio

from .._core.errors import RunLockedError, StoreError
from . import leases
from .direct import DirectLine, DirectLineError
from .dsn import one_line

if TYPE_CHECKING:
    from .connection import Database
    from .schema import Conn
    from .writer import PgWriter

_log = logging.getLogger("durable.postgres")

#: How long a flush's records (``PgWriter.flush``: a step's start, handed over before
#: its activity runs) may wait in the queue for the sync that follows: a sync on the
#: direct line takes them back and commits them with its own (one commit instead of
#: two for a quick activity); past this, the thread commits them, so that other
#: processes see the step in flight.
FLUSH_DELAY = 0.002

_NOTIFY_MANY: LiteralString = "SELECT pg_notify(%s, x) FROM unnest(%s::text[]) AS x"


class Job:
    """One writer's records to commit (maybe none) and/or its lease to release (with
    the run's due time, when the run is let go until then).

    The committer thread finishes it once; trio tasks await :meth:`wait`, a
    closing writer blocks in :meth:`wait_blocking`.
    """

    def __init__(
        self,
        writer: PgWriter,
        first: int,
        records: list[bytes],
        ended: bool,
        release: bool,
        due: float | None = None,
        lazy: bool = False,
    ) -> None:
        self.writer = writer
        self.first = first
        self.records = records
        self.ended = ended
        #: A flush's records: committed within ``FLUSH_DELAY``, not at once (see ``Committer``).
        self.lazy = lazy
        self.queued_at = time.monotonic()
        self.release = release
        self.due = due
        self.error: str | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []

    @property
    def checked(self) -> bool:
        """Whether its caller hears of a failure: records to commit, or a run let go
        (a plain release is best effort: an unreleased lease runs out by itself)."""
        return bool(self.records) or self.due is not None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def finish(self, error: str | None) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self.error = error
            self._done.set()
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    async def wait(self) -> None:
        if self._done.is_set():
            return
        token = trio.lowlevel.current_trio_token()
        event = trio.Event()

        def wake() -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(event.set)

        with self._lock:
            if self._done.is_set():
                return
            self._wakers.append(wake)
        await event.wait()

    def wait_blocking(self, timeout: float) -> bool:
        return self._done.wait(timeout)


class Group:
    """What one batch does for one writer: its queued jobs merged in order."""

    def __init__(self, writer: PgWriter) -> None:
        self.writer = writer
        self.jobs: list[Job] = []
        self.first = -1
        self.records: list[bytes] = []
        self.ended = False
        self.release = False
        #: The due time of a run let go (None: a writer closed, the run's due time kept).
        self.due: float | None = None
        self.error: str | None = None

    def add(self, job: Job) -> None:
        self.jobs.append(job)
        self.release = self.release or job.release
        if job.due is not None:
            self.due = job.due
        self.add_records(job.first, job.records)
        self.ended = self.ended or (job.ended and bool(job.records))

    def add_records(self, first: int, records: list[bytes]) -> None:
        """Add records that follow the group's (a job's, or a writer's buffer on the direct line)."""
        if not records:
            return
        if not self.records:
            self.first = first
        elif first != self.first + len(self.records):  # pragma: no cover - a bug
            self.error = f"internal error: records of run {self.writer.run_id!r} queued out of order"
        self.records.extend(records)


class Committer:
    """The store's writers and the thread that commits for them.

    Args:
        db: the store's database.
        changed: called after a batch ended or released runs (wakes this store's waiters).
    """

    def __init__(self, db: Database, changed: Callable[[], None]) -> None:
        self.db = db
        self._changed = changed
        self._cond = threading.Condition()
        self._queue: list[Job] = []
        self._stopping = False
        self._writers: weakref.WeakValueDictionary[str, PgWriter] = weakref.WeakValueDictionary()
        self._claiming: set[str] = set()
        #: The release queued by the last writer of each run closed (or let go) here, while the job
        #: lives (weakly: a done job is dropped by the queue and leaves the table).
        self._releases: weakref.WeakValueDictionary[str, Job] = weakref.WeakValueDictionary()
        self._thread: threading.Thread | None = None
        #: The writers whose jobs the thread took and has not finished (take_back
        #: leaves their later jobs to the thread, in order).
        self._in_batch: set[PgWriter] = set()
        #: Transactions the committer ran for appends, and syncs they served (for tests).
        self.commit_transactions = 0
        self.committed_jobs = 0
        #: Commits sent from the event loop (``direct.py``).
        self.direct = DirectLine(db, timeout=max(db.lease_ttl, db.connect_timeout))

    # -- the writers -----------------------------------------------------------------

    def claim(self, run_id: str) -> None:
        """Keep two tasks of this store from opening (or creating) one run at once."""
        with self._cond:
            held = self._writers.get(run_id)
            if run_id in self._claiming or (held is not None and not held.closed):
                raise RunLockedError(
                    f"run {run_id!r} is already open for writing in this store ({self.db.label}); "
                    "durable never lets two writers append to one run",
                    run_id=run_id,
                )
            self._claiming.add(run_id)

    def holds(self, run_id: str) -> bool:
        """Whether this store has the run open for writing (or is opening it) now."""
        with self._cond:
            held = self._writers.get(run_id)
            return run_id in self._claiming or (held is not None and not held.closed)

    def unclaim(self, run_id: str) -> None:
        with self._cond:
            self._claiming.discard(run_id)

    def register(self, writer: PgWriter) -> None:
        """A claimed run was taken: its writer's lease is renewed from now on."""
        with self._cond:
            self._claiming.discard(writer.run_id)
            self._writers[writer.run_id] = writer
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name=f"durable-committer {self.db.owner}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def enqueue(
        self,
        writer: PgWriter,
        first: int,
        records: list[bytes],
        ended: bool,
        *,
        release: bool,
        due: float | None = None,
        lazy: bool = False,
    ) -> Job:
        job = Job(writer, first, records, ended, release, due, lazy)
        with self._cond:
            if self._stopping:
                raise StoreError(
                    f"{self.db.label} is closed (aclose() was called); nothing more can be written"
                )
            self._queue.append(job)
            if release:
                # Until it commits, an open of the run in this store waits for it
                # (released()): the lease is still this owner's, and an open would take it.
                self._releases[writer.run_id] = job
            self._cond.notify_all()
        return job

    def take_back(self, writer: PgWriter) -> Group | None:
        """The writer's jobs still queued (the thread has not taken them), out of the
        queue as one group, for the direct line; None (nothing taken) if the thread
        holds one of its jobs now, or one of them ends the run or releases it."""
        with self._cond:
            if writer in self._in_batch:
                return None  # some of its records are in the thread's hands: their order holds
            mine = [job for job in self._queue if job.writer is writer]
            if any(job.ended or job.release for job in mine):
                return None
            if mine:
                self._queue = [job for job in self._queue if job.writer is not writer]
        group = Group(writer)
        for job in mine:
            group.add(job)
        return group

    async def commit_direct(self, group: Group) -> None:
        """Commit a group on the direct line (acquired by the caller); ``group.error``
        says why not, and the jobs taken back hear the same, whatever happens."""
        run_id = group.writer.run_id
        try:
            passed = await self.direct.append(group)
            self.commit_transactions += 1
            self.committed_jobs += len(group.jobs) + 1
            if not passed:
                group.error = f"the fence refused the records of run {run_id!r}; nothing was written"
                with trio.CancelScope(shield=True):  # a cancelled caller still hears why
                    await self._explain(group)
        except DirectLineError as exc:
            group.error = self._failed(str(exc))
        except BaseException as exc:  # pragma: no cover - a bug: never report records committed
            group.error = group.error or f"internal error on the direct line: {exc!r}"
            raise
        finally:
            for job in group.jobs:
                job.finish(group.error)

    async def _explain(self, group: Group) -> None:
        """Why the fence refused a group on the direct line (read on a pool connection)."""
        try:
            await self.db.run(
                f"reading run {group.writer.run_id!r}",
                lambda conn: leases.explain_refusals(conn, self.db, [group]),
                missing=None,
            )
        except StoreError as exc:
            group.error = f"the fence refused the records of run {group.writer.run_id!r}; {exc}"

    def close_writer(self, writer: PgWriter) -> None:
        # A run whose outcome is committed has nothing left to write: its release
        # goes to the committer without blocking the event loop for a round trip.
        finished = writer.outcome_queued
        job = self._release(writer)
        if finished:
            return
        if job is not None and not job.wait_blocking(max(self.db.lease_ttl, 1.0)):
            _log.warning("durable: releasing run %r timed out; its lease runs out by itself", writer.run_id)

    def let_go(self, writer: PgWriter, due: float) -> Job:
        """Close a writer whose run waits until ``due``: queue its last records (if any),
        its due time and the release of its lease, for one transaction (the job fails
        if the lease is no longer the writer's).

        Raises:
            StoreError: the writer is closed or failed, or the store is closed.
        """
        writer.check()
        # Forgotten and its release queued in one step (the lock is reentrant): no open
        # in another thread sees the run free of a writer and of a release both.
        with self._cond:
            self._forget(writer)
            writer.closed = True
            first, records, ended = writer.take()
            return self.enqueue(writer, first, records, ended, release=True, due=due)

    def _forget(self, writer: PgWriter) -> None:
        """A closed writer's lease is no longer renewed, and its run may be opened again."""
        with self._cond:
            if self._writers.get(writer.run_id) is writer:
                del self._writers[writer.run_id]

    def _release(self, writer: PgWriter) -> Job | None:
        """Queue a closed writer's last records (unless it failed) and the release of its lease."""
        with self._cond:  # in one step, as in let_go()
            self._forget(writer)
            if writer.superseded:
                return None
            first, records, ended = writer.take()
            if writer.failed:
                records, ended = [], False
            try:
                return self.enqueue(writer, first, records, ended, release=True)
            except StoreError:
                return None  # the store is closed: the lease runs out by itself

    async def released(self, run_id: str) -> None:
        """Return once the release of the run's last writer closed (or let go) here is
        committed (a closed writer's release goes to this thread without being waited for)."""
        with self._cond:
            job = self._releases.get(run_id)
        if job is not None:
            await job.wait()

    def shutdown(self) -> None:
        """Release the leases still held (in one transaction), then stop the thread."""
        with self._cond:
            writers = [w for w in self._writers.values() if not w.closed]
        releases = []
        for writer in writers:  # queued together: one transaction releases them all
            writer.closed = True
            releases.append(self._release(writer))
        for job in releases:
            if job is not None:
                job.wait_blocking(max(self.db.lease_ttl, 1.0))
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(max(self.db.lease_ttl, 5.0))
        self.direct.close()

    # -- the thread ------------------------------------------------------------------

    def _main(self) -> None:
        every = self.db.lease_ttl / 3
        next_renewal = time.monotonic() + every
        while True:
            with self._cond:
                while not self._stopping:
                    wait = self._idle_for(next_renewal)
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(wait)
                jobs, self._queue = self._queue, []
                if self._stopping and not jobs:
                    return
                self._in_batch = {job.writer for job in jobs}
                renew: list[PgWriter] = []
                if time.monotonic() >= next_renewal:
                    renew = [w for w in self._writers.values() if w.live]
                    next_renewal = time.monotonic() + every
            try:
                self.run_batch(jobs, renew)
            except BaseException as exc:  # pragma: no cover - a bug: never leave callers hanging
                _log.exception("durable: the committer failed")
                for job in jobs:
                    job.writer.lose(f"internal error in the PostgreSQL committer: {exc!r}")
                    job.finish(f"internal error in the PostgreSQL committer: {exc!r}")
            finally:
                with self._cond:
                    self._in_batch = set()

    def _idle_for(self, next_renewal: float) -> float | None:
        """How long the thread may sleep before it has work (None: until notified; zero
        or less: it has work now). Called holding ``_cond``."""
        now = time.monotonic()
        wait: float | None = None
        if self._queue:
            if not all(job.lazy for job in self._queue):
                return 0.0
            wait = self._queue[0].queued_at + FLUSH_DELAY - now  # the oldest flush
        if any(w.live for w in self._writers.values()):
            renewal = next_renewal - now
            wait = renewal if wait is None else min(wait, renewal)
        return wait

    def run_batch(self, jobs: list[Job], renew: list[PgWriter]) -> None:
        """One transaction: renew leases, append every queued writer's records, release leases."""
        groups: dict[int, Group] = {}
        for job in jobs:
            groups.setdefault(id(job.writer), Group(job.writer)).add(job)
        for group in groups.values():
            failure = group.writer.failure or group.error
            if failure is not None:  # failed before this batch: its records are not written,
                group.error = failure  # and a run let go keeps its due time (it may be due now)
                group.records = []
                group.due = None
        writes = sorted((g for g in groups.values() if g.records), key=lambda g: g.writer.run_id)
        releases = sorted((g for g in groups.values() if g.release), key=lambda g: g.writer.run_id)
        if writes:
            self.commit_transactions += 1
            self.committed_jobs += sum(1 for g in writes for job in g.jobs if job.records)
        try:
            lost, changed = self.transaction(renew, writes, releases)
        except (psycopg.Error, StoreError) as exc:
            self._batch_failed(jobs, writes, exc)
            return
        for writer in lost:
            writer.lose(leases.lease_moved(writer.run_id))
        for group in groups.values():
            if group.error is not None:
                group.writer.lose(group.error)
            for job in group.jobs:
                job.finish(group.error if job.checked else None)
        if changed:
            self._changed()

    def transaction(
        self, renew: list[PgWriter], writes: list[Group], releases: list[Group]
    ) -> tuple[list[PgWriter], list[str]]:
        """Run a batch's transaction: ``(writers whose lease is lost, runs ended or released)``."""
        lost: list[PgWriter] = []
        changed: list[str] = []
        pool = self.db.prepare()
        if writes and not renew and not releases and not any(g.ended for g in writes):
            # The common batch, a step's records: the fenced append is one statement,
            # and a statement outside a transaction block is a transaction of its own
            # (the pool's connections are in autocommit), so it commits as one round
            # trip instead of three (BEGIN, the statement, COMMIT), with the same fence.
            with pool.connection() as conn:
                self._append(conn, writes)
            return lost, changed
        with pool.connection() as conn, conn.transaction():
            if renew:
                lost = leases.renew(conn, self.db, renew)
            if writes:
                changed += self._append(conn, writes)
            if releases:
                released = leases.release(conn, self.db, releases)
                changed += released
                self._refuse_let_go(releases, set(released))
            if changed:
                conn.execute(_NOTIFY_MANY, [self.db.tables.channel, changed])
        return lost, changed

    def _append(self, conn: Conn, writes: list[Group]) -> list[str]:
        """Insert the records of the runs whose fence passes (``group.error`` says why for
        the others). Returns the runs that ended."""
        ok = leases.advance_and_append(conn, self.db, writes)
        return [g.writer.run_id for g in ok if g.ended]

    @staticmethod
    def _refuse_let_go(releases: list[Group], released: set[str]) -> None:
        """Fail the runs let go whose lease was not released: it moved to another worker."""
        for group in releases:
            if group.due is not None and group.writer.run_id not in released and group.error is None:
                group.error = leases.lease_moved(group.writer.run_id)

    def _failed(self, why: str) -> str:
        """The failure of the writers of a commit that failed (logged once)."""
        message = self.db.scrub(
            f"committing to PostgreSQL at {self.db.where} failed: {why}; durable stops "
            "the run instead of retrying (whether the transaction committed may be unknown); "
            "it resumes from its journal on recovery"
        )
        _log.warning("durable: %s", message)
        return message

    def _batch_failed(self, jobs: list[Job], writes: list[Group], exc: BaseException) -> None:
        """A batch's transaction failed: fail its writers, never retry (the outcome may be unknown)."""
        message = self._failed(one_line(exc))
        for group in writes:
            group.writer.lose(message)
        for job in jobs:
            job.finish((job.writer.failure or message) if job.checked else None)
