"""Leases and fencing: which worker may write a run, and the proof in every write.

Each ``PostgresStore`` instance is one *owner* (``host:pid:random``). Opening a
run locks its row, refuses (:class:`~durable.RunLockedError`) if another owner's
lease has not expired, and otherwise takes the lease: owner set to this store,
``lease_expires`` a ``lease_ttl`` from now (the server's clock), and ``epoch``
incremented (:class:`Leases`: ``create``, ``open``, ``open_many``, ``restart``).
Within one store, a run is claimed before it is taken, so two tasks of one
store never open one run at once either (``Committer.claim``).

The writer remembers its epoch, and every transaction that appends records is
fenced on it (:func:`advance`: ``UPDATE ... WHERE run_id = ... AND epoch = ...
AND next_index = <first new index>``): a writer whose lease was taken over by
another worker (after it lapsed) writes nothing more and fails with a
:class:`~durable.StoreError` saying so; the run goes on where it is held now. The
primary key ``(run_id, idx)`` makes sure a record is never overwritten. While a
store holds writers, its committer renews all their leases every
``lease_ttl / 3`` in one ``UPDATE`` (:func:`renew`); a lease found lost fails its
writer. Closing a writer releases the lease (:func:`release`) if the epoch is
still its own; letting a run go (:meth:`Leases.release`) does the same and sets
the run's due time, in one transaction, and fails if the epoch is no longer its
own. Taking a run makes it due (at most now, see ``due.py``): held, its live lease
keeps it from the workers looking for due runs; if its holder dies, it is due
once the lease runs out.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import psycopg
import trio

from .._core import events as ev
from .._core.errors import (
    DurableError,
    DurableInternalError,
    JournalCorruptError,
    RunLockedError,
    StoreError,
)
from .._core.ids import check_run_id
from .._store import LEASE_MOVED, Holder, JournalWriter, Opened
from .due import owner_holder
from .journal import read_journal, read_journals
from .writer import PgWriter

if TYPE_CHECKING:
    from .committer import Committer, Group
    from .connection import Database
    from .listener import Listener
    from .schema import Conn

_RENEW = """
    UPDATE {runs} AS r SET lease_expires = now() + %s
    FROM unnest(%s::text[], %s::bigint[]) AS v(run_id, epoch)
    WHERE r.run_id = v.run_id AND r.epoch = v.epoch AND r.owner = %s
    RETURNING r.run_id, r.epoch
"""
#: Advance each run's next_index, fenced, and insert the records of the runs that
#: passed the fence: one statement, so one round trip per batch (a data-modifying
#: CTE: the INSERT sees which runs the UPDATE returned, in the same snapshot).
_ADVANCE_AND_APPEND = """
    WITH advanced AS (
        UPDATE {runs} AS r
        SET next_index = v.next_index,
            status = CASE WHEN v.ended THEN 'ended' ELSE 'open' END,  -- open again: a retry
            lease_expires = now() + %s
        FROM unnest(%s::text[], %s::bigint[], %s::integer[], %s::integer[], %s::boolean[])
            AS v(run_id, epoch, first_idx, next_index, ended)
        WHERE r.run_id = v.run_id AND r.epoch = v.epoch AND r.owner = %s AND r.next_index = v.first_idx
        RETURNING r.run_id, r.epoch
    ), appended AS (
        INSERT INTO {records} (run_id, idx, record)
        SELECT rec.run_id, rec.idx, rec.record
        FROM unnest(%s::text[], %s::integer[], %s::bytea[]) AS rec(run_id, idx, record)
        WHERE rec.run_id IN (SELECT run_id FROM advanced)
    )
    SELECT run_id, epoch FROM advanced
"""
#: The same for one run's records (most batches: ``durable.run``, a step of a worker
#: with one run due), with scalar parameters: psycopg adapts each list parameter in
#: about 20 us, so the nine arrays above cost a step about 0.15 ms more than this
#: (measured against the server on the same machine). ``{rows}`` is one
#: ``(%s, %s)`` of index and record per record; records are inserted only if the
#: fence passed (the join with ``advanced`` is empty otherwise).
_ADVANCE_AND_APPEND_ONE = """
    WITH advanced AS (
        UPDATE {{runs}}
        SET next_index = %s,
            status = CASE WHEN %s THEN 'ended' ELSE 'open' END,  -- open again: a retry
            lease_expires = now() + %s
        WHERE run_id = %s AND epoch = %s AND owner = %s AND next_index = %s
        RETURNING run_id, epoch
    ), appended AS (
        INSERT INTO {{records}} (run_id, idx, record)
        SELECT a.run_id, v.idx, v.record FROM advanced AS a,
            (VALUES {rows}) AS v(idx, record)
    )
    SELECT run_id, epoch FROM advanced
"""
_ONE_ROW = "(%s::integer, %s::bytea)"
#: A due time NULL (a writer closed, not let go) keeps the run's: at most when it was taken.
_RELEASE = """
    UPDATE {runs} AS r SET owner = NULL, lease_expires = NULL, due_at = coalesce(v.due, r.due_at)
    FROM unnest(%s::text[], %s::bigint[], %s::double precision[]) AS v(run_id, epoch, due)
    WHERE r.run_id = v.run_id AND r.epoch = v.epoch AND r.owner = %s
    RETURNING r.run_id
"""
_CREATE = """
    INSERT INTO {runs} (run_id, workflow, status, owner, epoch, lease_expires, next_index, created_at, due_at)
    VALUES (%s, %s, 'open', %s, 1, now() + %s, 1, now(), %s)
    ON CONFLICT (run_id) DO NOTHING RETURNING epoch
"""
_INSERT_FIRST = "INSERT INTO {records} (run_id, idx, record) VALUES (%s, 0, %s)"
_LOCK_ONE = """
    SELECT owner, lease_expires, lease_expires > now(), extract(epoch from lease_expires)
    FROM {runs} WHERE run_id = %s FOR UPDATE NOWAIT
"""
_TAKE = """
    UPDATE {runs} SET owner = %s, epoch = epoch + 1, lease_expires = now() + %s,
        due_at = least(due_at, extract(epoch from now()))
    WHERE run_id = %s RETURNING epoch
"""
_TAKE_MANY = """
    UPDATE {runs} SET owner = %s, epoch = epoch + 1, lease_expires = now() + %s,
        due_at = least(due_at, extract(epoch from now()))
    WHERE run_id = ANY(%s) RETURNING run_id, epoch
"""
#: The runs of a list that are free to take (not held under a live lease of another
#: owner), oldest first; rows another worker has locked are skipped, not waited for.
_LOCK_FREE = """
    SELECT run_id, owner, extract(epoch from lease_expires) FROM {runs} WHERE run_id = ANY(%s)
        AND (owner IS NULL OR owner = %s OR lease_expires IS NULL OR lease_expires <= now())
    ORDER BY created_at, run_id LIMIT %s FOR UPDATE SKIP LOCKED
"""
_SWAP = """
    UPDATE {runs} SET epoch = epoch + 1, next_index = 1, status = 'open', workflow = %s,
        lease_expires = now() + %s
    WHERE run_id = %s AND epoch = %s AND owner = %s RETURNING epoch
"""

#: What ``open_many`` takes in its transaction: the epochs of the runs it took, their
#: journals (or the damage found), which of the runs it skipped exist, and the holders
#: whose expired leases it took over.
_Taken: TypeAlias = tuple[
    dict[str, int], dict[str, "list[ev.Event] | JournalCorruptError"], set[str], dict[str, Holder]
]


def _taken_over(owner: str | None, expires_at: float | None, me: str) -> Holder | None:
    """The holder whose expired lease an open takes over (None: the run was free, or ours)."""
    if owner is None or owner == me:
        return None
    return owner_holder(owner, expires_at, live=False)


def lease_moved(run_id: str) -> str:
    """Why a writer whose lease another worker took writes nothing more."""
    return (
        f"the lease on run {run_id!r} {LEASE_MOVED} (it opened the run after this "
        "worker's lease ran out), so this worker must give the run up; nothing more was written "
        "to its journal from here, and the run goes on where it is held now"
    )


def _locked(run_id: str, why: str) -> RunLockedError:
    return RunLockedError(
        f"run {run_id!r} {why}; durable never lets two writers append to one run", run_id=run_id
    )


# -- in the committer's transaction ------------------------------------------------


def renew(conn: Conn, db: Database, writers: list[PgWriter]) -> list[PgWriter]:
    """Extend the leases of ``writers``; return those whose lease is gone."""
    writers = sorted(writers, key=lambda w: w.run_id)
    rows = conn.execute(
        db.q(_RENEW), [db.ttl, [w.run_id for w in writers], [w.epoch for w in writers], db.owner]
    ).fetchall()
    kept = {(row[0], row[1]) for row in rows}
    return [w for w in writers if (w.run_id, w.epoch) not in kept]


def release(conn: Conn, db: Database, groups: list[Group]) -> list[str]:
    """Give up the leases of the groups' writers (those still theirs), setting the due
    time of the runs let go; return the runs released."""
    rows = conn.execute(
        db.q(_RELEASE),
        [
            [g.writer.run_id for g in groups],
            [g.writer.epoch for g in groups],
            [g.due for g in groups],
            db.owner,
        ],
    ).fetchall()
    return [row[0] for row in rows]


def advance_and_append(conn: Conn, db: Database, writes: list[Group]) -> list[Group]:
    """Advance each run's ``next_index`` past its group's records, fenced on the writer's
    epoch and on the first new index, and insert the records of the groups that passed
    (one statement); return those groups, and set ``group.error`` for the others (their
    records are not written)."""
    if len(writes) == 1:
        rows = _advance_and_append_one(conn, db, writes[0])
    else:
        rows = _advance_and_append_many(conn, db, writes)
    passed = {(row[0], row[1]) for row in rows}
    ok = [g for g in writes if (g.writer.run_id, g.writer.epoch) in passed]
    refused = [g for g in writes if (g.writer.run_id, g.writer.epoch) not in passed]
    if refused:
        explain_refusals(conn, db, refused)
    return ok


def explain_refusals(conn: Conn, db: Database, refused: list[Group]) -> None:
    """Set ``group.error`` to why the fence refused each group's records."""
    states = {
        row[0]: row[1:]
        for row in conn.execute(
            db.q("SELECT run_id, epoch, owner, next_index FROM {runs} WHERE run_id = ANY(%s)"),
            [[g.writer.run_id for g in refused]],
        ).fetchall()
    }
    for group in refused:
        group.error = _refusal(db, group, states.get(group.writer.run_id))


@functools.cache
def append_one_template(count: int) -> str:
    """``_ADVANCE_AND_APPEND_ONE`` for ``count`` records; its parameters are
    :func:`append_one_params`'s."""
    return _ADVANCE_AND_APPEND_ONE.format(rows=", ".join([_ONE_ROW] * count))


def append_one_params(db: Database, group: Group) -> list[Any]:
    """The parameters of :func:`append_one_template` for a group's records."""
    writer = group.writer
    params: list[Any] = [
        group.first + len(group.records),
        group.ended,
        db.ttl,
        writer.run_id,
        writer.epoch,
        db.owner,
        group.first,
    ]
    for offset, record in enumerate(group.records):
        params += (group.first + offset, record)
    return params


def _advance_and_append_one(conn: Conn, db: Database, group: Group) -> list[tuple[Any, ...]]:
    query = db.q(append_one_template(len(group.records)))
    return conn.execute(query, append_one_params(db, group)).fetchall()


def _advance_and_append_many(conn: Conn, db: Database, writes: list[Group]) -> list[tuple[Any, ...]]:
    run_ids, indexes, records = [], [], []
    for group in writes:
        for offset, record in enumerate(group.records):
            run_ids.append(group.writer.run_id)
            indexes.append(group.first + offset)
            records.append(record)
    return conn.execute(
        db.q(_ADVANCE_AND_APPEND),
        [
            db.ttl,
            [g.writer.run_id for g in writes],
            [g.writer.epoch for g in writes],
            [g.first for g in writes],
            [g.first + len(g.records) for g in writes],
            [g.ended for g in writes],
            db.owner,
            run_ids,
            indexes,
            records,
        ],
    ).fetchall()


def _refusal(db: Database, group: Group, state: tuple[Any, ...] | None) -> str:
    """Why the fence refused a group's records, from the run row as it is now."""
    run_id = group.writer.run_id
    if state is None:
        return f"run {run_id!r} is no longer in {db.tables.schema}.durable_runs; nothing was written"
    epoch, owner, next_index = state
    if epoch != group.writer.epoch or owner != db.owner:
        return lease_moved(run_id)
    return (
        f"the journal of run {run_id!r} holds {next_index} records, but this writer's next "
        f"record is {group.first}; durable neither overwrites records nor leaves gaps, so "
        "nothing was written"
    )


# -- taking runs -------------------------------------------------------------------


class Leases:
    """Taking runs: creating one, opening one or many, starting one over; each hands
    out a :class:`PgWriter` that holds the lease."""

    def __init__(self, db: Database, committer: Committer, listener: Listener) -> None:
        self.db = db
        self.committer = committer
        self.listener = listener

    async def create(self, started: ev.RunStarted) -> JournalWriter | None:
        run_id = check_run_id(started.run_id)
        self.db.check_open()
        writer = PgWriter(self.committer, run_id, 1, 0)
        writer.append(started)
        _, (record,), _ = writer.take()
        try:
            self.committer.claim(run_id)
        except RunLockedError:
            return None  # this store holds it: it exists
        try:
            await trio.to_thread.run_sync(self.db.make_tables)
            insert = functools.partial(self._insert, started, record)
            made = await self.db.run(f"creating run {run_id!r}", insert, missing=False)
        except BaseException:
            self.committer.unclaim(run_id)
            raise
        if not made:
            self.committer.unclaim(run_id)
            return None
        writer.synced_through(0)
        self.committer.register(writer)
        self.listener.changed()
        return writer

    def _insert(self, started: ev.RunStarted, record: bytes, conn: Conn) -> bool:
        """Insert a new run's row (its lease taken) and its first record; False if it exists."""
        db = self.db
        with conn.transaction():
            row = conn.execute(
                db.q(_CREATE), [started.run_id, started.workflow, db.owner, db.ttl, started.t]
            ).fetchone()
            if row is None:
                return False
            conn.execute(db.q(_INSERT_FIRST), [started.run_id, record])
            conn.execute("SELECT pg_notify(%s, %s)", [db.tables.channel, started.run_id])
        return True

    async def open(self, run_id: str) -> Opened | None:
        run_id = check_run_id(run_id)
        await self.db.upgrade()
        self.committer.claim(run_id)
        try:
            # Claimed, no writer of this store can let the run go any more; one that
            # did just before is waited for (its lease is still ours: taking it now
            # would fence its release off, and the run would fail there).
            await self.committer.released(run_id)
            take = functools.partial(self._take, run_id)
            taken = await self.db.run(f"opening run {run_id!r}", take, missing=None)
        except BaseException:
            self.committer.unclaim(run_id)
            raise
        if taken is None:
            self.committer.unclaim(run_id)
            return None
        epoch, events, previous = taken
        writer = PgWriter(self.committer, run_id, epoch, len(events))
        self.committer.register(writer)
        return Opened(events, writer, previous)

    def _take(self, run_id: str, conn: Conn) -> tuple[int, list[ev.Event], Holder | None] | None:
        """Lock a run's row, take its lease unless another owner's is live, read its journal."""
        db = self.db
        with conn.transaction():
            try:
                row = conn.execute(db.q(_LOCK_ONE), [run_id]).fetchone()
            except psycopg.errors.LockNotAvailable:
                # Another worker is in a transaction on this run (taking it, renewing
                # its lease): skip it rather than wait behind a worker that may be frozen.
                raise _locked(run_id, "is being taken or renewed by another worker right now") from None
            if row is None:
                return None
            owner, expires, live, expires_at = row
            if owner is not None and owner != db.owner and live:
                until = expires.astimezone(datetime.UTC)
                raise RunLockedError(
                    f"run {run_id!r} is held by another worker ({owner}) whose lease runs until "
                    f"{until:%Y-%m-%d %H:%M:%S} UTC; durable never lets two writers append to one run "
                    "(another worker can take it over once that lease expires unrenewed)",
                    run_id=run_id,
                )
            epoch_row = conn.execute(db.q(_TAKE), [db.owner, db.ttl, run_id]).fetchone()
            events = read_journal(conn, db.tables, run_id)
            if epoch_row is None or events is None:  # the row is locked: it cannot vanish
                raise DurableInternalError(f"the row of run {run_id!r} vanished while it was locked")
            return int(epoch_row[0]), events, _taken_over(owner, expires_at, db.owner)

    async def open_many(
        self, run_ids: Sequence[str], *, limit: int | None = None
    ) -> list[Opened | DurableError | None]:
        """Claim many runs for recovery in one transaction (see ``PostgresStore.open_many``)."""
        ids = [check_run_id(run_id) for run_id in run_ids]
        await self.db.upgrade()
        results: dict[str, Opened | DurableError | None] = {}
        mine: list[str] = []
        for run_id in ids:
            try:
                self.committer.claim(run_id)
            except RunLockedError as exc:
                results[run_id] = exc
            else:
                mine.append(run_id)
        nothing: _Taken = ({}, {}, set(), {})  # no tables: no runs
        try:
            for run_id in mine:  # as open() does
                await self.committer.released(run_id)
            take = functools.partial(self._take_many, mine, limit)
            epochs, journals, exist, previous = (
                await self.db.run(f"opening {len(mine)} runs", take, missing=nothing) if mine else nothing
            )
        except BaseException:
            for run_id in mine:
                self.committer.unclaim(run_id)
            raise
        for run_id in mine:
            opened = self._opened(run_id, journals.get(run_id), epochs, exist, limit)
            if isinstance(opened, Opened) and run_id in previous:
                opened = Opened(opened.events, opened.writer, previous[run_id])
            results[run_id] = opened
        return [results[run_id] for run_id in ids]

    def _take_many(self, mine: list[str], limit: int | None, conn: Conn) -> _Taken:
        """Lock the free runs among ``mine`` (up to ``limit``), read their journals, and
        take the leases of those whose journal reads."""
        db = self.db
        with conn.transaction():
            rows = conn.execute(db.q(_LOCK_FREE), [mine, db.owner, limit]).fetchall()
            free = [row[0] for row in rows]
            previous = {row[0]: holder for row in rows if (holder := _taken_over(row[1], row[2], db.owner))}
            if limit is not None and len(free) >= limit:
                skipped: list[str] = []  # the rest were left alone: None, not locked
            else:
                skipped = [run_id for run_id in mine if run_id not in set(free)]
            exist = (
                {
                    row[0]
                    for row in conn.execute(
                        db.q("SELECT run_id FROM {runs} WHERE run_id = ANY(%s)"), [skipped]
                    ).fetchall()
                }
                if skipped
                else set()
            )
            journals = read_journals(conn, db.tables, free)
            readable = [run_id for run_id, found in journals.items() if isinstance(found, list)]
            epochs: dict[str, int] = dict(
                conn.execute(db.q(_TAKE_MANY), [db.owner, db.ttl, readable]).fetchall()
            )
        return epochs, journals, exist, previous

    def _opened(
        self,
        run_id: str,
        found: list[ev.Event] | JournalCorruptError | None,
        epochs: dict[str, int],
        exist: set[str],
        limit: int | None,
    ) -> Opened | DurableError | None:
        """What ``open_many`` answers for one run it claimed, after its transaction."""
        if isinstance(found, list) and run_id in epochs:
            writer = PgWriter(self.committer, run_id, int(epochs[run_id]), len(found))
            self.committer.register(writer)
            return Opened(found, writer)
        self.committer.unclaim(run_id)
        if found is None and (run_id not in exist or (limit is not None and len(epochs) >= limit)):
            return None  # no such run
        if isinstance(found, JournalCorruptError):
            return found
        return _locked(run_id, "is held, or being taken, by another worker")

    async def release(self, writer: JournalWriter, due: float) -> None:
        """Let a run go until ``due``: its due time set and its lease given up in one
        transaction (with the records still buffered, if any), fenced on the writer's
        epoch; the writer is closed.

        Raises:
            StoreError: the lease moved to another worker meanwhile (nothing was changed:
                the run is where it is held now), or the writer failed or was closed.
        """
        if not isinstance(writer, PgWriter) or writer.committer is not self.committer:
            raise DurableInternalError(f"{writer.name} is not a journal of this store")
        self.db.check_open()
        job = self.committer.let_go(writer, due)
        await job.wait()
        if job.error is not None:
            raise StoreError(job.error, run_id=writer.run_id)

    async def restart(self, started: ev.RunStarted, writer: JournalWriter) -> JournalWriter:
        run_id = check_run_id(started.run_id)
        if (
            not isinstance(writer, PgWriter)
            or writer.committer is not self.committer
            or writer.run_id != run_id
        ):
            raise ValueError(f"restart() needs the writer of run {run_id!r} that this store handed out")
        self.db.check_open()
        fresh = PgWriter(self.committer, run_id, 0, 0)
        fresh.append(started)
        _, (record,), _ = fresh.take()
        swap = functools.partial(self._swap, started, writer.epoch, record)
        epoch = await self.db.run(f"starting run {run_id!r} over in a fresh journal", swap, missing=None)
        if epoch is None:
            message = lease_moved(run_id)
            writer.lose(message)
            raise StoreError(message, run_id=run_id)
        # The old writer's epoch is stale now: whatever it still had queued is fenced off.
        writer.superseded = True
        writer.close()
        fresh.epoch = epoch
        fresh.synced_through(0)
        self.committer.register(fresh)
        return fresh

    def _swap(self, started: ev.RunStarted, epoch: int, record: bytes, conn: Conn) -> int | None:
        """Replace a run's journal by its first record, fenced on ``epoch``; the new epoch."""
        db = self.db
        with conn.transaction():
            row = conn.execute(
                db.q(_SWAP), [started.workflow, db.ttl, started.run_id, epoch, db.owner]
            ).fetchone()
            if row is None:
                return None
            conn.execute(db.q("DELETE FROM {records} WHERE run_id = %s"), [started.run_id])
            conn.execute(db.q(_INSERT_FIRST), [started.run_id, record])
            return int(row[0])
