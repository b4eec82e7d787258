"""durable's tables in one PostgreSQL schema: their names, how the first write makes
them, and their version.

All the tables are in one schema (``schema=``, default ``public``), every name
prefixed ``durable_``, versioned in ``durable_schema_version``:

``durable_runs``
    one row per run: ``run_id`` (primary key), ``workflow``, ``status``
    (``'open'``, or ``'ended'`` once a ``RunCompleted``/``RunFailed``/
    ``RunCancelled`` record is committed), the lease (``owner``, ``epoch``,
    ``lease_expires``: see ``leases.py``), ``next_index`` (how many records the
    journal holds) and ``created_at``.
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
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, TypeAlias

from psycopg import sql

from .._core.errors import StoreError

if TYPE_CHECKING:
    import psycopg

    Conn: TypeAlias = psycopg.Connection[tuple[Any, ...]]

#: The version of the tables this code reads and writes (``durable_schema_version``).
SCHEMA_VERSION = 1

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
        created_at timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS durable_runs_open ON {runs} (run_id) WHERE status = 'open'",
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

    def migrate(self, conn: Conn, where: str) -> None:
        """Create the tables if they are missing; refuse tables of a newer version.

        Tables of this version are used as they are, without DDL, so a role that may
        use but not create tables (no CREATE on the database or schema) can run workers.
        """
        if self.version(conn, where) == SCHEMA_VERSION:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [self.lock_key])
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]).fetchone()
            for statement in _DDL[1:] if found else _DDL:
                conn.execute(self.q(statement))
            version = self.version(conn, where)
            if version is None:
                conn.execute(self.q("INSERT INTO {version} (version) VALUES (%s)"), [SCHEMA_VERSION])

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
