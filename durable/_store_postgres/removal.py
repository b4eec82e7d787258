"""Removing runs from PostgreSQL, and finding the runs ``durable prune`` removes.

A run is removed in one transaction: its row locked (``FOR UPDATE NOWAIT``: a
worker taking or renewing it right now makes the removal refuse, not wait), a
run held under a live lease refused, then its records, its messages and its row
deleted. The transaction is the atomicity: a crash leaves the run whole or gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from .._core.errors import RunLockedError
from .._store import Removal

if TYPE_CHECKING:
    from .connection import Database
    from .schema import Conn

_LOCK = """
    SELECT status, coalesce(owner IS NOT NULL AND lease_expires > now(), false), owner
    FROM {runs} WHERE run_id = %s FOR UPDATE NOWAIT
"""
_DELETE = (
    "DELETE FROM {records} WHERE run_id = %s",
    "DELETE FROM {inbox} WHERE run_id = %s",
    "DELETE FROM {runs} WHERE run_id = %s",
)
#: Runs that ended and were created before a time: a run that ended before it began
#: before it (the end itself is read from the journal's last record).
_ENDED_CREATED_BEFORE = """
    SELECT run_id FROM {runs} WHERE status = 'ended' AND created_at < to_timestamp(%s)
    ORDER BY created_at, run_id
"""
_CREATED_BEFORE = """
    SELECT run_id FROM {runs} WHERE created_at < to_timestamp(%s) ORDER BY created_at, run_id
"""


def remove_run(db: Database, run_id: str, unfinished: bool, held_here: bool, conn: Conn) -> Removal:
    """Remove one run in one transaction (see the module docstring). A live lease of this
    store's own that no writer of it holds (``held_here`` False) is a release on its way
    (a writer closed, its release not committed yet): it does not keep the run."""
    with conn.transaction():
        try:
            row = conn.execute(db.q(_LOCK), [run_id]).fetchone()
        except psycopg.errors.LockNotAvailable:
            raise RunLockedError(
                f"run {run_id!r} is being taken or renewed by a worker right now; try again, "
                "or stop the workers first",
                run_id=run_id,
            ) from None
        if row is None:
            return "missing"
        status, live, owner = row
        if live and (owner != db.owner or held_here):
            raise RunLockedError(
                f"run {run_id!r} is held by a worker ({owner}) under a live lease: durable does not "
                "remove a run a process is running; stop that worker (or cancel the run) first",
                run_id=run_id,
            )
        if status != "ended" and not unfinished:
            return "unfinished"
        for statement in _DELETE:
            conn.execute(db.q(statement), [run_id])
    return "removed"


def ended_created_before(db: Database, t: float, conn: Conn) -> list[str]:
    rows: list[tuple[Any, ...]] = conn.execute(db.q(_ENDED_CREATED_BEFORE), [t]).fetchall()
    return [row[0] for row in rows]


def created_before(db: Database, t: float, conn: Conn) -> list[str]:
    rows: list[tuple[Any, ...]] = conn.execute(db.q(_CREATED_BEFORE), [t]).fetchall()
    return [row[0] for row in rows]
