"""The connection pool of one store, and database calls from trio.

psycopg's async API needs asyncio, and durable runs on trio: every database call
uses the synchronous API, from a worker thread (:meth:`Database.run`, through
``trio.to_thread``) or from the store's own committer and listener threads, on a
``psycopg_pool.ConnectionPool``. The pool opens on first use, not when the store
is made: one connection looks for durable's tables and checks their version,
then the pool opens (:meth:`Database.prepare`).

Reads create nothing (``schema.py``): until the tables are found, a call answers
what an empty store would (its ``missing`` value), looking again each time since
another process may have made them meanwhile; :meth:`Database.make_tables` is
for the first write, and :meth:`Database.upgrade` for every write to tables that
may be older (it makes none). Tables of an older version are read as they are; a
call that needs this version's (the due index) gives its ``older`` answer there.

Each pool connection ends a transaction left idle past ``lease_ttl``: a process
frozen inside a transaction (SIGSTOP, a VM pause) must not keep its row locks
past its lease, or it would stall the workers that take its runs over.

A database error becomes a :class:`~durable.StoreError` naming what failed and
the server, never the password (``dsn.py``).
"""

from __future__ import annotations

import datetime
import functools
import math
import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import psycopg_pool
import trio
from psycopg import pq, sql

from .._core.errors import StoreError
from .dsn import Dsn, one_line
from .schema import SCHEMA_VERSION, Tables

if TYPE_CHECKING:
    from .schema import Conn

T = TypeVar("T")


def idle_and_open(pgconn: pq.abc.PGconn) -> bool:
    """Whether a connection with no statement on it can take one: libpq knows it as
    open, and it has nothing to read. Nothing is expected on an idle line, so input
    there is the server closing it (a restart, ``pg_terminate_backend``: an error
    message, then the end of the stream), or, rarely, a notice; either way the
    connection is replaced (one poll, about a microsecond, against a run failed with
    its commit's outcome unknown)."""
    if pgconn.status != pq.ConnStatus.OK:
        return False
    poll = select.poll()
    poll.register(pgconn.socket, select.POLLIN)
    return not poll.poll(0)


def check_idle(conn: psycopg.Connection[Any]) -> None:
    """The pool's ``check``: a pooled connection the server closed while it waited in
    the pool is discarded (the pool gives another) before a group commit is sent on it."""
    if not idle_and_open(conn.pgconn):
        conn.close()  # the pool replaces a connection libpq knows as closed, not one that only failed
        raise psycopg.OperationalError("the server closed this connection while it was idle in the pool")


class Database:
    """One store's way to its tables: the DSN, the pool, and who this store is.

    Args:
        dsn: the parsed connection string.
        tables: durable's tables in the store's schema.
        owner: this store's identity as the holder of leases.
        lease_ttl: seconds a lease lasts without renewal.
        connect_timeout: seconds to wait for the server.
        pool_size: the most connections the pool opens.
        label: how messages name the store (its ``repr``, without the password).
    """

    def __init__(
        self,
        dsn: Dsn,
        tables: Tables,
        *,
        owner: str,
        lease_ttl: float,
        connect_timeout: float,
        pool_size: int,
        label: str,
    ) -> None:
        self.dsn = dsn
        self.tables = tables
        self.owner = owner
        self.lease_ttl = lease_ttl
        #: ``lease_ttl`` as a query parameter (an ``interval``).
        self.ttl = datetime.timedelta(seconds=lease_ttl)
        self.connect_timeout = connect_timeout
        self.label = label
        #: ``aclose()`` was called: nothing more may be done.
        self.closed = False
        self._pool_size = pool_size
        self._init_lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[Conn] | None = None
        #: The version of the tables found (None: none found yet). Until it is this
        #: durable's, each call looks again: another process may have made or upgraded them.
        self.version: int | None = None

    @property
    def where(self) -> str:
        """``host:port/dbname`` of the server, for messages."""
        return self.dsn.where

    def q(self, template: str) -> sql.Composed:
        """A query naming this store's tables (:meth:`Tables.q`)."""
        return self.tables.q(template)

    def scrub(self, text: str) -> str:
        return self.dsn.scrub(text)

    def error(self, what: str, exc: BaseException) -> StoreError:
        """The StoreError for a database error while doing ``what``."""
        return StoreError(self.scrub(f"{what} failed (PostgreSQL at {self.where}): {one_line(exc)}"))

    def check_open(self) -> None:
        if self.closed:
            raise StoreError(f"{self.label} is closed (aclose() was called); make a new store to go on")

    def connect(self) -> Conn:
        """A connection of its own, outside the pool (raises ``psycopg.Error``)."""
        timeout = max(2, math.ceil(self.connect_timeout))
        return psycopg.connect(self.dsn.text, autocommit=True, connect_timeout=timeout)

    def _configure(self, conn: Conn) -> None:
        """A new pool connection: the server ends a session idle in a transaction for
        ``lease_ttl`` (see the module's docstring)."""
        timeout_ms = max(1000, int(self.lease_ttl * 1000))
        conn.execute(sql.SQL("SET idle_in_transaction_session_timeout = {}").format(sql.Literal(timeout_ms)))

    def prepare(self) -> psycopg_pool.ConnectionPool[Conn]:
        """Connect, check the tables' version (if they exist), open the pool: once, on first use.

        Nothing is created here: the first write makes the tables (:meth:`make_tables`).
        """
        pool = self._pool
        if pool is not None:
            return pool
        with self._init_lock:
            if self._pool is not None:
                return self._pool
            self.check_open()
            try:
                conn = self.connect()
            except psycopg.Error as exc:
                raise StoreError(
                    self.scrub(f"cannot connect to PostgreSQL at {self.where}: {one_line(exc)}")
                ) from None
            try:
                with conn:
                    self.version = self.tables.version(conn, self.where)
            except psycopg.Error as exc:
                raise self.error(
                    f"looking for durable's tables in schema {self.tables.schema!r}", exc
                ) from exc
            pool = psycopg_pool.ConnectionPool(
                self.dsn.text,
                min_size=1,
                max_size=self._pool_size,
                open=False,
                kwargs={"autocommit": True, "connect_timeout": max(2, math.ceil(self.connect_timeout))},
                name=f"durable-{self.owner}",
                configure=self._configure,
                check=check_idle,
            )
            try:
                pool.open(wait=True, timeout=self.connect_timeout)
            except psycopg.Error as exc:
                pool.close()
                raise self.error("opening a connection pool", exc) from None
            self._pool = pool
            return pool

    def make_tables(self, *, create: bool = True) -> None:
        """Make sure the tables exist (the first write makes them) at this version (the
        first write of this durable upgrades older ones): once per store. Without
        ``create``, tables that do not exist are left so (a write that needs a run).
        """
        if self.version == SCHEMA_VERSION:
            return
        pool = self.prepare()
        try:
            with pool.connection() as conn:
                self.tables.migrate(conn, self.where, create=create)
                self.version = self.tables.version(conn, self.where)
        except psycopg.Error as exc:
            raise self.error(f"setting up durable's tables in schema {self.tables.schema!r}", exc) from exc

    async def upgrade(self) -> None:
        """Upgrade older tables before writing to them (nothing once they are this version's)."""
        self.check_open()
        if self.version != SCHEMA_VERSION:
            await trio.to_thread.run_sync(functools.partial(self.make_tables, create=False))

    def call(
        self, what: str, fn: Callable[[Conn], T], missing: T, older: Callable[[Conn], T] | None = None
    ) -> T:
        """``fn`` on a pool connection; ``missing`` if the tables do not exist, ``older``
        (if given) instead of ``fn`` on tables of an older version."""
        pool = self.prepare()
        try:
            with pool.connection() as conn:
                if self.version != SCHEMA_VERSION:  # another process may have made them since
                    self.version = self.tables.version(conn, self.where)
                if self.version is None:
                    return missing
                if self.version != SCHEMA_VERSION and older is not None:
                    return older(conn)
                return fn(conn)
        except psycopg.Error as exc:
            raise self.error(what, exc) from exc

    async def run(
        self, what: str, fn: Callable[[Conn], T], *, missing: T, older: Callable[[Conn], T] | None = None
    ) -> T:
        """Run ``fn`` on a pool connection in a thread; ``missing`` is its answer when the
        tables do not exist (reading never creates them), ``older`` (if given) runs
        instead on tables of an older version."""
        self.check_open()
        return await trio.to_thread.run_sync(self.call, what, fn, missing, older)

    def close(self) -> None:
        """Close the pool (the threads using it are stopped by now)."""
        with self._init_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
