"""The due index: which runs a worker should take now, and when to look next.

Every run row has ``due_at`` (epoch seconds; ``'Infinity'`` when only a message
wakes it), kept where the run's state changes, each time in the transaction
that changes it:

- creating a run: its ``RunStarted`` time (a new run is due at once; held by its
  creator's lease, it is left out until that lease is given up or runs out);
- taking a run (``open``, ``open_many``): at most now, so that a holder that dies
  leaves it due, found once its lease runs out (``leases.py``);
- letting a run go (``PostgresStore.release``): the time it waits for, with the
  lease given up, fenced on the holder's epoch (``committer.py``);
- posting a message, or a message journaled while nobody held the run
  (``PostgresStore.wake``): at most now (:data:`WAKE`), with a ``NOTIFY``;
- a terminal record committed: ``status = 'ended'``, which leaves the partial
  index ``durable_runs_due`` (``(due_at, run_id) WHERE status = 'open'``).

:meth:`DueIndex.due_runs` reads that index from its start up to ``now`` and
skips the rows held under a live lease, so it reads the due runs and those held
(at most what the workers run at once), never the runs that wait;
:meth:`DueIndex.next_due` reads one index entry. "Now" in the database is its
own clock (``now()``), the due times a worker compares with are its clock's:
clocks that disagree by a second delay a wake-up by a second, nothing more.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from .._core.ids import check_run_id
from .._store import Holder

if TYPE_CHECKING:
    from .connection import Database
    from .listener import Listener
    from .schema import Conn

#: Make a run due now unless it is already: a row already due is not even locked, so
#: a post never waits behind the transaction of a worker renewing the run's lease.
WAKE = """
    UPDATE {runs} SET due_at = extract(epoch from now())
    WHERE run_id = %s AND status = 'open' AND due_at > extract(epoch from now())
"""
_DUE = """
    SELECT run_id FROM {runs}
    WHERE status = 'open' AND due_at <= %s
        AND (owner IS NULL OR lease_expires IS NULL OR lease_expires <= now())
"""
_ORDER = " ORDER BY due_at, run_id LIMIT %s"
_HELD = """
    SELECT run_id FROM {runs}
    WHERE run_id = ANY(%s) AND owner IS NOT NULL AND lease_expires > now()
"""
#: Who holds each of the runs, or held it last without letting it go (an expired lease
#: not given up: its holder died or froze).
_HOLDERS = """
    SELECT run_id, owner, extract(epoch from lease_expires), coalesce(lease_expires > now(), false)
    FROM {runs} WHERE run_id = ANY(%s) AND owner IS NOT NULL
"""
_NEXT_DUE = """
    SELECT min(due_at) FROM {runs} WHERE status = 'open' AND due_at > %s AND due_at < 'Infinity'
"""


def owner_holder(owner: str, lease_expires: float | None, *, live: bool) -> Holder:
    """The holder a lease's owner (``host:pid:random``, see PostgresStore) names."""
    host = owner.rpartition(":")[0]  # without the random part
    host, _, pid = host.rpartition(":")
    return Holder(
        int(pid) if pid.isdigit() else None,
        host or None,
        None,
        live=live,
        lease_expires=None if lease_expires is None else float(lease_expires),
    )


class DueIndex:
    """Answers which runs are due, and when the next one is; wakes a run."""

    def __init__(self, db: Database, listener: Listener) -> None:
        self.db = db
        self.listener = listener

    async def due_runs(self, now: float, limit: int, among: Collection[str] | None) -> list[str] | None:
        """Up to ``limit`` runs due at ``now`` that no live lease holds, oldest due first
        (``among``: only these); None on tables without the index (an older version)."""
        if limit <= 0 or (among is not None and not among):
            return []
        params: list[Any] = [now, limit]
        query = self.db.q(_DUE + _ORDER)
        if among is not None:
            params = [now, [check_run_id(run_id) for run_id in among], limit]
            query = self.db.q(_DUE + " AND run_id = ANY(%s)" + _ORDER)
        rows: list[tuple[Any, ...]] | None = await self.db.run(
            "listing the runs due",
            lambda conn: conn.execute(query, params).fetchall(),
            missing=[],
            older=lambda conn: None,
        )
        return None if rows is None else [row[0] for row in rows]

    async def next_due(self, now: float) -> float | None:
        """The earliest finite due time after ``now`` of a run not ended; None if none."""
        query = self.db.q(_NEXT_DUE)
        row: tuple[Any, ...] | None = await self.db.run(
            "looking for the next run due",
            lambda conn: conn.execute(query, [now]).fetchone(),
            missing=None,
            older=lambda conn: None,
        )
        return None if row is None or row[0] is None else float(row[0])

    async def held(self, run_ids: Collection[str]) -> set[str]:
        """Which of the runs a worker holds under a live lease (for ``ls`` and ``show``)."""
        ids = [check_run_id(run_id) for run_id in run_ids]
        if not ids:
            return set()
        query = self.db.q(_HELD)
        rows: list[tuple[Any, ...]] = await self.db.run(
            "looking at who holds runs",
            lambda conn: conn.execute(query, [ids]).fetchall(),
            missing=[],
        )
        return {row[0] for row in rows}

    async def holders(self, run_ids: Collection[str]) -> dict[str, Holder]:
        """Who holds each of the runs under a lease, live or expired (see Store.holders)."""
        ids = [check_run_id(run_id) for run_id in run_ids]
        if not ids:
            return {}
        query = self.db.q(_HOLDERS)
        rows: list[tuple[Any, ...]] = await self.db.run(
            "looking at who holds runs", lambda conn: conn.execute(query, [ids]).fetchall(), missing=[]
        )
        return {run_id: owner_holder(owner, expires, live=live) for run_id, owner, expires, live in rows}

    async def wake(self, run_id: str) -> None:
        """Make a run due now (nothing if there is no such run, or it ended), and say so
        (a run that was due already may have been passed over while it was held)."""
        run_id = check_run_id(run_id)
        await self.db.upgrade()
        await self.db.run(f"waking run {run_id!r}", functools.partial(self._wake, run_id), missing=None)
        self.listener.changed()

    def _wake(self, run_id: str, conn: Conn) -> None:
        db = self.db
        with conn.transaction():
            conn.execute(db.q(WAKE), [run_id])
            conn.execute("SELECT pg_notify(%s, %s)", [db.tables.channel, run_id])
