"""durable's tables in one PostgreSQL schema: their names, how the first write makes
them, and their version.

All the tables are in one schema (``schema=``, default ``public``), every name
prefixed ``durable_``, versioned in ``durable_schema_version``:

``durable_runs``
    one row per run: ``run_id`` (primary key), ``workflow``, ``status``
    (``'open'``, or ``'ended'`` once a ``RunCompleted``/``RunFailed``/
    ``RunCancelled`` record is committed), the lease (``owner``, ``epoch``,
    ``lease_expires``: see ``leases.py``), ``next_index`` (how many records the
    journal holds), ``created_at``, and ``due_at`` (version 2): when the run has
    work again, in epoch seconds, ``'Infinity'`` when only a message wakes it (the
    due index, see ``due.py``). A partial index ``durable_runs_due`` on
    ``(due_at, run_id) WHERE status = 'open'`` answers "which runs are due" in
    the order they came due, reading only those.
``durable_records``
    the journal: one row per record, ``(run_id, idx)`` the primary key, and
    ``record`` exactly the framed bytes of journal contract v1 (see ``journal.py``).
``durable_inbox``
    messages (signals, cancel requests) for runs held elsewhere, in posting
    order (a ``bigserial``), each with its unique ``message_id`` (a re-post is
    a no-op) and its event as a framed v1 record (see ``inbox.py``).

Reads create nothing
--------------------
The tables are made by the first write, i.e. the first run created
(:meth:`Tables.migrate`: idempotently, under a transaction-scoped advisory lock,
so two processes starting at once do not trip over each other). Reading never
creates anything: a schema without the tables reads as a store without runs
(``PostgresStore.has_tables`` tells the two apart, for ``durable ls`` on a
mistyped schema). Tables of this version are used as they are, without DDL, so a
role that may use but not create tables can run workers; tables of a newer
version are refused.

Versions
--------
Version 1 had no due index. Its tables are read as they are (``durable ls`` and
``show`` work on them), and upgraded by the first write of this durable
(:meth:`Tables.migrate`, in one transaction under the same advisory lock):
``due_at`` is added, the open runs made due at their creation time (so that
workers take them all at once, as a version 1 worker would have), the index
made, and version 2 recorded. That needs the right to alter the tables (their
owner's): a role without it is told what to run, and by whom
(:func:`upgrade_refused`). ``due_at`` defaults to the time of the insert, so a
row that a durable of version 1 still running inserts is due at once too.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, TypeAlias

import psycopg
from psycopg import sql

from .._core.errors import StoreError
from .dsn import one_line

if TYPE_CHECKING:
    Conn: TypeAlias = psycopg.Connection[tuple[Any, ...]]

#: The version of the tables this code writes (``durable_schema_version``).
SCHEMA_VERSION = 2

_DDL = [
    "CREATE SCHEMA IF NOT EXISTS {schema}",
    "CREATE TABLE IF NOT EXISTS {version} (version integer NOT NULL)",
    """CREATE TABLE IF NOT EXISTS {runs} (
        run_id text PRIMARY KEY,
        workflow text NOT NULL,
        status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ended')),
        owner text,
        epoch bigint NOT NULL DEFAULT 0,
        lease_expires timestamptz,
        next_index integer NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        due_at double precision NOT NULL DEFAULT extract(epoch from now())
    )""",
    "CREATE INDEX IF NOT EXISTS durable_runs_open ON {runs} (run_id) WHERE status = 'open'",
    "CREATE INDEX IF NOT EXISTS durable_runs_due ON {runs} (due_at, run_id) WHERE status = 'open'",
    """CREATE TABLE IF NOT EXISTS {records} (
        run_id text NOT NULL REFERENCES {runs} (run_id),
        idx integer NOT NULL CHECK (idx >= 0),
        record bytea NOT NULL,
        PRIMARY KEY (run_id, idx)
    )""",
    """CREATE TABLE IF NOT EXISTS {inbox} (
        id bigserial PRIMARY KEY,
        run_id text NOT NULL REFERENCES {runs} (run_id),
        message_id text NOT NULL UNIQUE,
        record bytea NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS durable_inbox_run ON {inbox} (run_id, id)",
]

#: The statements that upgrade tables of each older version to the next, run in one
#: transaction under the schema's lock (when ``durable_schema_version`` says so).
#: From 1 to 2, the due index: the open runs are due at their creation, like every
#: run nobody took yet (an open run held by a live lease is left alone all the same,
#: and a run due too early only costs a replay). ADD COLUMN evaluates the default
#: once for the existing rows (no table rewrite); afterwards it is the insert time.
_UPGRADES = {
    1: [
        """ALTER TABLE {runs} ADD COLUMN IF NOT EXISTS
            due_at double precision NOT NULL DEFAULT extract(epoch from now())""",
        "UPDATE {runs} SET due_at = extract(epoch from created_at) WHERE status = 'open'",
        "CREATE INDEX IF NOT EXISTS durable_runs_due ON {runs} (due_at, run_id) WHERE status = 'open'",
        "UPDATE {version} SET version = 2",
    ],
}


class Tables:
    """durable's tables in one schema: their names in queries, the channel that
    announces changes, and the lock that makes them one process at a time."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        digest = hashlib.sha256(f"durable-schema:{schema}".encode()).digest()
        #: The advisory lock taken while making the tables.
        self.lock_key = int.from_bytes(digest[:8], "big", signed=True)
        #: The ``NOTIFY`` channel of this schema (see ``listener.py``).
        self.channel = "durable_changes" if schema == "public" else f"durable_changes_{digest.hex()[:20]}"
        self._names = {
            "schema": sql.Identifier(schema),
            "version": sql.Identifier(schema, "durable_schema_version"),
            "runs": sql.Identifier(schema, "durable_runs"),
            "records": sql.Identifier(schema, "durable_records"),
            "inbox": sql.Identifier(schema, "durable_inbox"),
        }
        self._queries: dict[str, sql.Composed] = {}

    def q(self, template: str) -> sql.Composed:
        """A query with ``{runs}``, ``{records}``, ``{inbox}``, ... naming this schema's tables."""
        query = self._queries.get(template)
        if query is None:
            query = sql.SQL(template).format(**self._names)
            self._queries[template] = query
        return query

    def journal_name(self, run_id: str) -> str:
        """How messages name a run's journal."""
        return f"run {run_id!r} in {self.schema}.durable_records"

    def migrate(self, conn: Conn, where: str, *, create: bool = True) -> None:
        """Create the tables if they are missing (unless not ``create``), upgrade tables of
        an older version; refuse tables of a newer version.

        Tables of this version are used as they are, without DDL, so a role that may
        use but not create tables (no CREATE on the database or schema) can run workers.

        Raises:
            StoreError: older tables that this role may not alter (what to run, and by
                whom), or tables of a newer version.
        """
        if self.version(conn, where) == SCHEMA_VERSION:
            return
        version = None
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [self.lock_key])
                # Another process may have made or upgraded the tables meanwhile. Reading
                # pg_namespace first also makes this session see what it committed: the
                # lock that reading takes makes the session take in catalog changes
                # (to_regclass alone may answer from a stale cache).
                found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema])
                schema_exists = found.fetchone() is not None
                version = self.version(conn, where)
                if version is None:
                    if create:
                        self._create(conn, schema_exists)
                else:
                    for statement in self.upgrade_statements(version):
                        conn.execute(self.q(statement))
        except psycopg.errors.InsufficientPrivilege as exc:
            if version is None:
                raise  # no right to create the tables: the caller says so
            raise upgrade_refused(self, conn, where, version, exc) from None

    def _create(self, conn: Conn, schema_exists: bool) -> None:
        """Make the tables at this version (under the lock)."""
        for statement in _DDL[1:] if schema_exists else _DDL:
            conn.execute(self.q(statement))
        conn.execute(self.q("INSERT INTO {version} (version) VALUES (%s)"), [SCHEMA_VERSION])

    @staticmethod
    def upgrade_statements(version: int) -> list[str]:
        """The statements (templates) that upgrade tables of ``version`` to this one."""
        return [statement for old in range(version, SCHEMA_VERSION) for statement in _UPGRADES[old]]

    def upgrade_sql(self, conn: Conn, version: int) -> str:
        """The upgrade from ``version`` as one transaction an operator can paste into psql."""
        statements = [self.q(statement).as_string(conn) for statement in self.upgrade_statements(version)]
        return " ".join(["BEGIN;", *(" ".join(s.split()) + ";" for s in statements), "COMMIT;"])

    def version(self, conn: Conn, where: str) -> int | None:
        """The version in ``durable_schema_version``; None if there is none (yet).

        Raises:
            StoreError: the tables are of a newer version than this durable's.
        """
        table = self._names["version"].as_string(conn)
        row = conn.execute("SELECT to_regclass(%s)", [table]).fetchone()
        if row is None or row[0] is None:
            return None
        found = conn.execute(self.q("SELECT max(version) FROM {version}")).fetchone()
        version = None if found is None or found[0] is None else int(found[0])
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"the durable tables in schema {self.schema!r} of PostgreSQL at {where} are "
                f"version {version}, newer than this durable uses ({SCHEMA_VERSION}); upgrade durable"
            )
        return version


def upgrade_refused(tables: Tables, conn: Conn, where: str, version: int, exc: psycopg.Error) -> StoreError:
    """The error for older tables that this role may not upgrade: who may, and what to run."""
    row = conn.execute(
        "SELECT current_user, (SELECT tableowner FROM pg_tables WHERE schemaname = %s"
        " AND tablename = 'durable_runs')",
        [tables.schema],
    ).fetchone()
    user, owner = row if row is not None else ("?", "?")
    return StoreError(
        f"the durable tables in schema {tables.schema!r} of PostgreSQL at {where} are version "
        f"{version}, and this durable needs version {SCHEMA_VERSION} (a due_at column and an index "
        f"on durable_runs, so that waiting runs cost no worker anything); role {user!r} may not "
        f"alter them ({one_line(exc)}). Upgrade them once as their owner ({owner!r}): start this durable "
        f"as that role (its first write upgrades them), or have that role run: "
        f"{tables.upgrade_sql(conn, version)} "
        "Until then, this durable can read these runs but not write them."
    )
