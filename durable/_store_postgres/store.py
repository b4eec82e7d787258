"""A store in PostgreSQL, shared by many worker processes on many machines.

Tables
------
All in one schema (``schema=``, default ``public``), every name prefixed
``durable_``, created and migrated by the first write, i.e. the first run
created (idempotently, under a transaction-scoped advisory lock, so two
processes starting at once do not trip over each other), versioned in
``durable_schema_version``. Reading never creates anything: a schema without
the tables reads as a store without runs (:meth:`PostgresStore.has_tables`
tells the two apart, for ``durable ls`` on a mistyped schema):

``durable_runs``
    one row per run: ``run_id`` (primary key), ``workflow``, ``status``
    (``'open'``, or ``'ended'`` once a ``RunCompleted``/``RunFailed``/
    ``RunCancelled`` record is committed), the lease (``owner``, ``epoch``,
    ``lease_expires``), ``next_index`` (how many records the journal holds)
    and ``created_at``.
``durable_records``
    the journal: one row per record, ``(run_id, idx)`` the primary key, and
    ``record`` exactly the framed bytes of journal contract v1 (marker,
    length, CRC-32, CBOR payload) that a file journal holds. Reading a
    journal concatenates the v1 header and the records in ``idx`` order and
    decodes them with the same :func:`durable._core.codec.scan` as every store, so
    every record keeps its checksum, and damage (or a missing record) raises
    :class:`~durable.JournalCorruptError` naming the run and the record. A
    record is committed whole or not at all, so there is no torn tail here:
    any record that fails its checks is damage.
``durable_inbox``
    messages (signals, cancel requests) for runs held elsewhere, in posting
    order (a ``bigserial``), each with its unique ``message_id`` (a re-post is
    a no-op) and its event as a framed v1 record.

Leases and fencing
------------------
Each :class:`PostgresStore` instance is one *owner* (``host:pid:random``).
Opening a run locks its row, refuses (:class:`~durable.RunLockedError`) if
another owner's lease has not expired, and otherwise takes the lease: owner
set to this store, ``lease_expires`` a ``lease_ttl`` from now (the server's
clock), and ``epoch`` incremented. The writer remembers its epoch, and every
transaction that appends records is fenced on it (``UPDATE ... WHERE run_id =
... AND epoch = ... AND next_index = <first new index>``): a writer whose
lease was taken over by another worker (after it lapsed) writes nothing more
and fails with a :class:`~durable.StoreError` saying so; the run goes on where
it is held now. The primary key ``(run_id, idx)`` makes sure a record is never
overwritten. While a store holds writers, its committer thread renews all its
leases every ``lease_ttl / 3`` in one ``UPDATE``; a lease found lost fails its
writer. Closing a writer releases the lease (if the epoch is still its own).

Group commit
------------
Appends are buffered in memory; :meth:`JournalWriter.sync` hands them to the
store's committer thread, which commits what every writer of this store
queued meanwhile in one transaction (one fenced ``UPDATE`` for all runs, one
``INSERT`` for all records, fencing each run on its own: a fenced run's records
are left out without failing the others) and wakes the callers once it
committed. A database error fails the writers of that batch and is never
retried (the outcome of a failed commit can be unknown): their runs resume
from the journal by replay.

Notifications
-------------
Creating a run, releasing or ending one, and posting a message ``NOTIFY`` a
channel (``durable_changes`` for the ``public`` schema) with the run id as
payload; :meth:`PostgresStore.wait_for_change` waits on a dedicated ``LISTEN``
connection, so workers wake up at once instead of only polling.

psycopg's async API needs asyncio, and durable runs on trio: every database
call uses the synchronous API from a worker thread (``trio.to_thread``) or
from the store's own committer and listener threads, on a
``psycopg_pool.ConnectionPool``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, LiteralString, TypeAlias, TypeVar

import trio

from ._core import events as ev
from ._core.codec import HEADER_SIZE, decode_record, encode_header, encode_record, scan
from ._core.durations import Duration, parse_duration
from ._core.errors import DurableError, JournalCorruptError, RunLockedError, StoreError, UnknownRunError
from ._core.ids import check_run_id
from ._store import JournalWriter, Opened, Store

_IMPORT_ERROR: ImportError | None = None
try:
    import psycopg
    import psycopg_pool
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as exc:  # pragma: no cover - without the "postgres" extra
    _IMPORT_ERROR = exc

if TYPE_CHECKING:
    Conn: TypeAlias = psycopg.Connection[tuple[Any, ...]]

T = TypeVar("T")

#: The version of the tables this code reads and writes (``durable_schema_version``).
SCHEMA_VERSION = 1

_log = logging.getLogger("durable.postgres")

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

_RENEW = """
    UPDATE {runs} AS r SET lease_expires = now() + %s
    FROM unnest(%s::text[], %s::bigint[]) AS v(run_id, epoch)
    WHERE r.run_id = v.run_id AND r.epoch = v.epoch AND r.owner = %s
    RETURNING r.run_id, r.epoch
"""
_ADVANCE = """
    UPDATE {runs} AS r
    SET next_index = v.next_index,
        status = CASE WHEN v.ended THEN 'ended' ELSE r.status END,
        lease_expires = now() + %s
    FROM unnest(%s::text[], %s::bigint[], %s::integer[], %s::integer[], %s::boolean[])
        AS v(run_id, epoch, first_idx, next_index, ended)
    WHERE r.run_id = v.run_id AND r.epoch = v.epoch AND r.owner = %s AND r.next_index = v.first_idx
    RETURNING r.run_id, r.epoch
"""
_INSERT_RECORDS = """
    INSERT INTO {records} (run_id, idx, record)
    SELECT * FROM unnest(%s::text[], %s::integer[], %s::bytea[])
"""
_RELEASE = """
    UPDATE {runs} AS r SET owner = NULL, lease_expires = NULL
    FROM unnest(%s::text[], %s::bigint[]) AS v(run_id, epoch)
    WHERE r.run_id = v.run_id AND r.epoch = v.epoch AND r.owner = %s
    RETURNING r.run_id
"""
_NOTIFY_MANY: LiteralString = "SELECT pg_notify(%s, x) FROM unnest(%s::text[]) AS x"


def _one_line(exc: BaseException) -> str:
    """The first line of an error's message (psycopg adds DETAIL and HINT lines)."""
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else type(exc).__name__


#: Query parameters of a DSN URI (or pairs of a key=value string) that configure the
#: store rather than the connection.
_STORE_OPTIONS = ("schema", "lease_ttl")

#: The keywords of libpq's key=value connection strings (PostgreSQL 17).
_LIBPQ_KEYWORDS = frozenset(
    (  # noqa: SIM905 - a list of words reads best as words
        "host hostaddr port dbname user password passfile require_auth channel_binding "
        "connect_timeout client_encoding options application_name fallback_application_name "
        "keepalives keepalives_idle keepalives_interval keepalives_count tcp_user_timeout "
        "replication gssencmode sslmode sslnegotiation requiressl sslcompression sslcert sslkey "
        "sslkeylogfile sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni requirepeer "
        "ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation "
        "service target_session_attrs load_balance_hosts"
    ).split()
)
_FIRST_KEY = re.compile(r"\s*([A-Za-z_]+)\s*=")
#: One ``key = value`` pair of a key=value string; a value is quoted '...' (with \\ escapes) or a word.
_PAIR = re.compile(r"(?:^|\s)([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']\S*|)")


def looks_like_dsn(text: str) -> bool:
    """Whether ``--store`` text names a PostgreSQL store rather than a directory: a
    ``postgresql://`` (or ``postgres://``) URL, or a libpq key=value string whose first
    key is one of libpq's (``host=db dbname=app``) or the store's (``schema=...``).

    A directory whose name starts like that can still be given as ``./host=x``.
    """
    if text.startswith(("postgresql://", "postgres://")):
        return True
    first = _FIRST_KEY.match(text)
    return first is not None and (first.group(1) in _LIBPQ_KEYWORDS or first.group(1) in _STORE_OPTIONS)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _store_options(dsn: str) -> tuple[str, dict[str, str]]:
    """A DSN without the store's own options (``?schema=...&lease_ttl=...`` of a URL, or
    ``schema=... lease_ttl=...`` pairs of a key=value string), and those."""
    if not dsn.startswith(("postgresql://", "postgres://")):
        options: dict[str, str] = {}

        def take(match: re.Match[str]) -> str:
            if match.group(1) not in _STORE_OPTIONS:
                return match.group(0)
            options[match.group(1)] = _unquote(match.group(2))
            return ""

        return _PAIR.sub(take, dsn).strip(), options
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    options = {name: value for name, value in query if name in _STORE_OPTIONS}
    rest = urllib.parse.urlencode([(name, value) for name, value in query if name not in _STORE_OPTIONS])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), options


#: What ``open_many`` takes in its transaction: the epochs of the runs it took, their
#: journals (or the damage found), and which of the runs it skipped exist.
_Taken: TypeAlias = tuple[dict[str, int], dict[str, "list[ev.Event] | JournalCorruptError"], set[str]]


def _lease_moved(run_id: str) -> str:
    return (
        f"the lease on run {run_id!r} moved to another worker (it opened the run after this "
        "worker's lease ran out), so this worker must give the run up; nothing more was written "
        "to its journal from here, and the run goes on where it is held now"
    )


class _Job:
    """One writer's records to commit (maybe none) and/or its lease to release.

    The committer thread finishes it once; trio tasks await :meth:`wait`, a
    closing writer blocks in :meth:`wait_blocking`.
    """

    def __init__(
        self, writer: _PgWriter, first: int, records: list[bytes], ended: bool, release: bool
    ) -> None:
        self.writer = writer
        self.first = first
        self.records = records
        self.ended = ended
        self.release = release
        self.error: str | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []

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


class _Group:
    """What one batch does for one writer: its queued jobs merged in order."""

    def __init__(self, writer: _PgWriter) -> None:
        self.writer = writer
        self.jobs: list[_Job] = []
        self.first = -1
        self.records: list[bytes] = []
        self.ended = False
        self.release = False
        self.error: str | None = None

    def add(self, job: _Job) -> None:
        self.jobs.append(job)
        self.release = self.release or job.release
        if not job.records:
            return
        if not self.records:
            self.first = job.first
        elif job.first != self.first + len(self.records):  # pragma: no cover - a bug
            self.error = f"internal error: records of run {self.writer.run_id!r} queued out of order"
        self.records.extend(job.records)
        self.ended = self.ended or job.ended


class _PgWriter(JournalWriter):
    """Buffers appended records; :meth:`sync` commits them through the store's committer."""

    def __init__(self, store: PostgresStore, run_id: str, epoch: int, next_index: int) -> None:
        super().__init__(f"the PostgreSQL journal of run {run_id!r}", next_index)
        self.run_id = run_id
        self.epoch = epoch
        self._store = store
        self._buffer: list[bytes] = []
        self._ended = False
        self._last: _Job | None = None
        #: The run's outcome was appended: once committed, its lease no longer matters.
        self.terminal = False
        self.closed = False
        #: Replaced by a fresh journal (``restart``): its lease went to the new writer.
        self.superseded = False

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

    def _check(self) -> None:
        if self.closed:
            raise StoreError(f"{self.name} is closed; open the run again to write to it")
        super()._check()

    def lose(self, message: str) -> None:
        """Fail the writer from the committer thread: the next append or sync raises."""
        if self._failure is None:
            self._failure = message

    def flush(self) -> None:
        """Hand the buffered records to the committer without waiting for the commit."""
        if self._buffer and self.live:
            first, records, ended = self.take()
            try:
                self._last = self._store._enqueue(self, first, records, ended, release=False)
            except StoreError as exc:
                self._fail(str(exc))

    async def _sync(self) -> None:
        if self._buffer:
            first, records, ended = self.take()
            try:
                self._last = self._store._enqueue(self, first, records, ended, release=False)
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

    def close(self) -> None:
        """Commit what is still buffered (not claimed durable), release the lease. Idempotent.

        Blocks until the committer has done it (one transaction), or at most ``lease_ttl``;
        a run whose outcome is committed is released without waiting.
        """
        if self.closed:
            return
        self.closed = True
        self._store._close_writer(self)


class PostgresStore(Store):
    """Journals in PostgreSQL: many worker processes on many machines share one database.

    The store creates its tables on first use. Runs are held through leases
    that the store renews while it has them open; a worker that lost its
    lease (it stalled longer than ``lease_ttl`` and another worker took the
    run over) is fenced off and writes nothing more.

    Args:
        dsn: a libpq connection string or URL, e.g. ``"postgresql://user@host:5432/db"``;
            a URL may carry the two options below as ``?schema=...&lease_ttl=...`` (so
            that ``--store`` and ``DURABLE_STORE`` can name a configured store).
        schema: the schema of durable's tables (created if missing; default ``public``).
        lease_ttl: how long a lease lasts without renewal (``"30s"``, the default, a number
            of seconds or a timedelta); a crashed worker's runs can be taken over after this.
        pool_size: the most connections the store's pool opens (besides one for LISTEN).
        connect_timeout: how long to wait for the server when connecting.

    Raises:
        StoreError: the DSN cannot be parsed (a server that cannot be reached is
            reported by the first operation, also as ``StoreError``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        lease_ttl: Duration | None = None,
        pool_size: int = 10,
        connect_timeout: Duration = "10s",
    ) -> None:
        if _IMPORT_ERROR is not None:
            raise ImportError(
                "durable.PostgresStore needs psycopg 3 and psycopg_pool: install durable with its "
                "postgres extra (pip install 'durable-yield[postgres]', or '.[postgres]' in a clone)"
            ) from _IMPORT_ERROR
        if not isinstance(dsn, str):
            raise TypeError(f"dsn must be a str (got {type(dsn).__name__})")
        dsn, options = _store_options(dsn)
        schema = schema if schema is not None else options.get("schema", "public")
        lease_ttl = lease_ttl if lease_ttl is not None else options.get("lease_ttl", "30s")
        if not isinstance(schema, str) or not schema or len(schema.encode()) > 63:
            raise ValueError(f"schema must be a non-empty name of at most 63 bytes (got {schema!r})")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int (got {pool_size!r})")
        self._lease_ttl = parse_duration(lease_ttl, what="lease_ttl")
        if self._lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be positive (got {lease_ttl!r})")
        self._connect_timeout = max(parse_duration(connect_timeout, what="connect_timeout"), 1.0)
        try:
            self._params = conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            # libpq quotes the text it stumbled on, which may be part of a password.
            why = "(not shown: it holds a password)" if "password" in dsn else f"({_one_line(exc)})"
            raise StoreError(
                f"invalid PostgreSQL connection string {why}: write a URL "
                "postgresql://user@host:port/dbname or libpq key=value pairs (host=... dbname=...; "
                "quote a value with spaces: password='a b')"
            ) from None
        self._dsn = dsn
        self._schema = schema
        self._pool_size = pool_size
        self._ttl = datetime.timedelta(seconds=self._lease_ttl)
        #: This store instance's identity as the holder of leases.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        digest = hashlib.sha256(f"durable-schema:{schema}".encode()).digest()
        self._lock_key = int.from_bytes(digest[:8], "big", signed=True)
        self._channel = "durable_changes" if schema == "public" else f"durable_changes_{digest.hex()[:20]}"
        self._names = {
            "schema": sql.Identifier(schema),
            "version": sql.Identifier(schema, "durable_schema_version"),
            "runs": sql.Identifier(schema, "durable_runs"),
            "records": sql.Identifier(schema, "durable_records"),
            "inbox": sql.Identifier(schema, "durable_inbox"),
        }
        self._queries: dict[str, sql.Composed] = {}

        self._init_lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[Conn] | None = None
        #: The tables exist (this version): found by a read, or made by the first write.
        self._tables = False
        self._closed = False
        # The committer thread: its queue, the writers whose leases it renews.
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._stopping = False
        self._writers: weakref.WeakValueDictionary[str, _PgWriter] = weakref.WeakValueDictionary()
        self._claiming: set[str] = set()
        self._committer: threading.Thread | None = None
        #: Transactions the committer ran for appends, and syncs they served (for tests).
        self.commit_transactions = 0
        self.committed_jobs = 0
        # Change notifications: the LISTEN thread and the trio tasks waiting.
        self._generation = 0
        #: Tasks in wait_for_change: their trio token, the event that wakes them, and
        #: whether they wait "since a token" (and so must hear of changes LISTEN missed).
        self._waiters: list[tuple[trio.lowlevel.TrioToken, trio.Event, bool]] = []
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()
        self._stop_listener = threading.Event()

    # -- naming, errors ------------------------------------------------------------

    def __repr__(self) -> str:
        extra = "" if self._schema == "public" else f", schema={self._schema!r}"
        return f"PostgresStore({self._safe_dsn()!r}{extra})"

    def _safe_dsn(self) -> str:
        """The DSN with any password replaced by ``***``."""
        dsn = self._dsn
        if "://" in dsn:
            parts = urllib.parse.urlsplit(dsn)
            netloc = parts.netloc
            if "@" in netloc:
                user, _, host = netloc.rpartition("@")
                if ":" in user:
                    user = user.partition(":")[0] + ":***"
                netloc = f"{user}@{host}"
            query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            masked = [(k, "***" if k == "password" else v) for k, v in query]
            return urllib.parse.urlunsplit(
                parts._replace(netloc=netloc, query=urllib.parse.urlencode(masked, safe="*"))
            )
        params = dict(self._params)
        if "password" in params:
            params["password"] = "***"
        return make_conninfo("", **params)

    @property
    def where(self) -> str:
        """``host:port/dbname`` of the server, for messages."""
        host = str(self._params.get("host") or self._params.get("hostaddr") or "localhost")
        port = str(self._params.get("port") or 5432)
        db = self._params.get("dbname")
        return f"{host}:{port}" + (f"/{db}" if db else "")

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts without renewal."""
        return self._lease_ttl

    def _scrub(self, text: str) -> str:
        password = self._params.get("password")
        return text.replace(str(password), "***") if password else text

    def _db_error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(self._scrub(f"{what} failed (PostgreSQL at {self.where}): {_one_line(exc)}"))

    def _journal_name(self, run_id: str) -> str:
        return f"run {run_id!r} in {self._schema}.durable_records"

    def _q(self, template: str) -> sql.Composed:
        query = self._queries.get(template)
        if query is None:
            query = sql.SQL(template).format(**self._names)
            self._queries[template] = query
        return query

    def _configure(self, conn: Conn) -> None:
        """A new pool connection: a process frozen inside a transaction (SIGSTOP, a VM
        pause) must not keep its row locks past its lease, or it would stall the workers
        that take its runs over; the server ends such a session after ``lease_ttl``."""
        timeout_ms = max(1000, int(self._lease_ttl * 1000))
        conn.execute(sql.SQL("SET idle_in_transaction_session_timeout = {}").format(sql.Literal(timeout_ms)))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed (aclose() was called); make a new store to go on")

    # -- connecting, tables --------------------------------------------------------

    def _prepare(self) -> psycopg_pool.ConnectionPool[Conn]:
        """Connect, check the tables' version (if they exist), open the pool: once, on first use.

        Nothing is created here: the first write makes the tables (:meth:`_make_tables`).
        """
        pool = self._pool
        if pool is not None:
            return pool
        with self._init_lock:
            if self._pool is not None:
                return self._pool
            self._check_open()
            timeout = max(2, math.ceil(self._connect_timeout))
            try:
                conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=timeout)
            except psycopg.Error as exc:
                raise StoreError(
                    self._scrub(f"cannot connect to PostgreSQL at {self.where}: {_one_line(exc)}")
                ) from None
            try:
                with conn:
                    self._tables = self._version(conn) == SCHEMA_VERSION
            except psycopg.Error as exc:
                raise self._db_error(f"looking for durable's tables in schema {self._schema!r}", exc) from exc
            pool = psycopg_pool.ConnectionPool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                open=False,
                kwargs={"autocommit": True, "connect_timeout": timeout},
                name=f"durable-{self.owner}",
                configure=self._configure,
            )
            try:
                pool.open(wait=True, timeout=self._connect_timeout)
            except psycopg.Error as exc:
                pool.close()
                raise self._db_error("opening a connection pool", exc) from None
            self._pool = pool
            return pool

    def _make_tables(self) -> None:
        """Make sure the tables exist (the first write makes them): once per store."""
        if self._tables:
            return
        pool = self._prepare()
        try:
            with pool.connection() as conn:
                self._migrate(conn)
        except psycopg.Error as exc:
            raise self._db_error(f"setting up durable's tables in schema {self._schema!r}", exc) from exc
        self._tables = True

    def _migrate(self, conn: Conn) -> None:
        """Create the tables if they are missing; refuse tables of a newer version.

        Tables of this version are used as they are, without DDL, so a role that may
        use but not create tables (no CREATE on the database or schema) can run workers.
        """
        if self._version(conn) == SCHEMA_VERSION:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [self._lock_key])
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [self._schema]).fetchone()
            for statement in _DDL[1:] if found else _DDL:
                conn.execute(self._q(statement))
            version = self._version(conn)
            if version is None:
                conn.execute(self._q("INSERT INTO {version} (version) VALUES (%s)"), [SCHEMA_VERSION])

    def _version(self, conn: Conn) -> int | None:
        """The version in ``durable_schema_version``; None if there is none (yet)."""
        table = self._names["version"].as_string(conn)
        row = conn.execute("SELECT to_regclass(%s)", [table]).fetchone()
        if row is None or row[0] is None:
            return None
        found = conn.execute(self._q("SELECT max(version) FROM {version}")).fetchone()
        version = None if found is None or found[0] is None else int(found[0])
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"the durable tables in schema {self._schema!r} of PostgreSQL at {self.where} are "
                f"version {version}, newer than this durable uses ({SCHEMA_VERSION}); upgrade durable"
            )
        return version

    def _call(self, what: str, fn: Callable[[Conn], T], missing: T) -> T:
        pool = self._prepare()
        try:
            with pool.connection() as conn:
                if not self._tables:  # another process may have made them since
                    if self._version(conn) != SCHEMA_VERSION:
                        return missing
                    self._tables = True
                return fn(conn)
        except psycopg.Error as exc:
            raise self._db_error(what, exc) from exc

    async def _run(self, what: str, fn: Callable[[Conn], T], *, missing: T) -> T:
        """Run ``fn`` on a pool connection in a thread; ``missing`` is its answer when the
        tables do not exist (reading never creates them)."""
        self._check_open()
        return await trio.to_thread.run_sync(self._call, what, fn, missing)

    async def has_tables(self) -> bool:
        """Whether durable's tables exist in the store's schema (a first write makes them).

        Raises:
            StoreError: the server cannot be reached, or its tables are of a newer version.
        """
        return await self._run("looking for durable's tables", lambda conn: True, missing=False)

    # -- reading journals ----------------------------------------------------------

    def _journal(self, conn: Conn, run_id: str) -> list[ev.Event] | None:
        """Read and check a run's journal (None if there is no such run).

        One statement, so the run row and the records come from one snapshot.
        """
        rows = conn.execute(
            self._q(
                "SELECT r.next_index, j.idx, j.record FROM {runs} AS r"
                " LEFT JOIN {records} AS j ON j.run_id = r.run_id"
                " WHERE r.run_id = %s ORDER BY j.idx"
            ),
            [run_id],
        ).fetchall()
        if not rows:
            return None
        return self._decode(run_id, rows[0][0], [(idx, rec) for _, idx, rec in rows if idx is not None])

    def _decode(self, run_id: str, count: int, rows: Sequence[tuple[Any, ...]]) -> list[ev.Event]:
        """The events of a journal's rows ``(idx, record)``, checked exactly like a file's.

        ``count`` is how many records the run row says the journal holds.
        """
        name = self._journal_name(run_id)
        offset = HEADER_SIZE
        for expected, (idx, record) in enumerate(rows):
            if idx != expected:
                raise JournalCorruptError(
                    name, offset, f"record {expected} is missing (the next one stored is {idx})", expected
                )
            offset += len(record)
        if len(rows) < count:
            raise JournalCorruptError(
                name, offset, f"the run has {count} records but only {len(rows)} are stored", len(rows)
            )
        if not rows:
            raise JournalCorruptError(name, HEADER_SIZE, "the run has no records", 0)
        data = b"".join([encode_header(), *(bytes(record) for _, record in rows)])
        found = scan(data, name)  # raises for damage that a later record proves durable
        if len(found.events) != len(rows):
            # Every stored record was committed whole: one that fails is damage, not a torn tail.
            try:
                decode_record(data, found.end)
            except ValueError as exc:
                reason = str(exc).partition(": ")[2] or str(exc)
            else:
                reason = "record index out of sequence"
            raise JournalCorruptError(name, found.end, reason, len(found.events))
        if len(rows) > count:
            raise JournalCorruptError(
                name, offset, f"{len(rows)} records are stored but the run has only {count}", count
            )
        first = found.events[0]
        if not isinstance(first, ev.RunStarted) or first.run_id != run_id:
            raise JournalCorruptError(name, HEADER_SIZE, "record 0 is not this run's RunStarted", 0)
        return found.events

    # -- the Store API -------------------------------------------------------------

    def _claim(self, run_id: str) -> None:
        """Keep two tasks of this store from opening (or creating) one run at once."""
        with self._cond:
            held = self._writers.get(run_id)
            if run_id in self._claiming or (held is not None and not held.closed):
                raise RunLockedError(
                    f"run {run_id!r} is already open for writing in this store ({self!r}); durable "
                    "never lets two writers append to one run",
                    run_id=run_id,
                )
            self._claiming.add(run_id)

    def _register(self, writer: _PgWriter) -> None:
        with self._cond:
            self._claiming.discard(writer.run_id)
            self._writers[writer.run_id] = writer
            if self._committer is None:
                self._committer = threading.Thread(
                    target=self._committer_main, name=f"durable-committer {self.owner}", daemon=True
                )
                self._committer.start()
            self._cond.notify_all()

    def _unclaim(self, run_id: str) -> None:
        with self._cond:
            self._claiming.discard(run_id)

    async def create(self, started: ev.RunStarted) -> JournalWriter | None:
        run_id = check_run_id(started.run_id)
        self._check_open()
        writer = _PgWriter(self, run_id, 1, 0)
        writer.append(started)
        _, (record,), _ = writer.take()

        def insert(conn: Conn) -> bool:
            with conn.transaction():
                row = conn.execute(
                    self._q(
                        "INSERT INTO {runs} (run_id, workflow, status, owner, epoch, lease_expires,"
                        " next_index, created_at) VALUES (%s, %s, 'open', %s, 1, now() + %s, 1, now())"
                        " ON CONFLICT (run_id) DO NOTHING RETURNING epoch"
                    ),
                    [run_id, started.workflow, self.owner, self._ttl],
                ).fetchone()
                if row is None:
                    return False
                conn.execute(
                    self._q("INSERT INTO {records} (run_id, idx, record) VALUES (%s, 0, %s)"),
                    [run_id, record],
                )
                conn.execute("SELECT pg_notify(%s, %s)", [self._channel, run_id])
            return True

        try:
            self._claim(run_id)
        except RunLockedError:
            return None  # this store holds it: it exists
        try:
            await trio.to_thread.run_sync(self._make_tables)
            made = await self._run(f"creating run {run_id!r}", insert, missing=False)
        except BaseException:
            self._unclaim(run_id)
            raise
        if not made:
            self._unclaim(run_id)
            return None
        writer.synced_through(0)
        self._register(writer)
        self._changed()
        return writer

    async def open(self, run_id: str) -> Opened | None:
        run_id = check_run_id(run_id)
        self._check_open()

        def take(conn: Conn) -> tuple[int, list[ev.Event]] | None:
            with conn.transaction():
                try:
                    row = conn.execute(
                        self._q(
                            "SELECT owner, lease_expires, lease_expires > now()"
                            " FROM {runs} WHERE run_id = %s FOR UPDATE NOWAIT"
                        ),
                        [run_id],
                    ).fetchone()
                except psycopg.errors.LockNotAvailable:
                    # Another worker is in a transaction on this run (taking it, renewing
                    # its lease): skip it rather than wait behind a worker that may be frozen.
                    raise RunLockedError(
                        f"run {run_id!r} is being taken or renewed by another worker right now; "
                        "durable never lets two writers append to one run",
                        run_id=run_id,
                    ) from None
                if row is None:
                    return None
                owner, expires, live = row
                if owner is not None and owner != self.owner and live:
                    raise RunLockedError(
                        f"run {run_id!r} is held by another worker ({owner}) whose lease runs until "
                        f"{expires.astimezone(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC; durable never lets "
                        "two writers append to one run (another worker can take it over once that "
                        "lease expires unrenewed)",
                        run_id=run_id,
                    )
                epoch_row = conn.execute(
                    self._q(
                        "UPDATE {runs} SET owner = %s, epoch = epoch + 1, lease_expires = now() + %s"
                        " WHERE run_id = %s RETURNING epoch"
                    ),
                    [self.owner, self._ttl, run_id],
                ).fetchone()
                assert epoch_row is not None
                events = self._journal(conn, run_id)
                assert events is not None  # the row is locked
                return int(epoch_row[0]), events

        self._claim(run_id)
        try:
            taken = await self._run(f"opening run {run_id!r}", take, missing=None)
        except BaseException:
            self._unclaim(run_id)
            raise
        if taken is None:
            self._unclaim(run_id)
            return None
        epoch, events = taken
        writer = _PgWriter(self, run_id, epoch, len(events))
        self._register(writer)
        return Opened(events, writer)

    async def open_many(
        self, run_ids: Sequence[str], *, limit: int | None = None
    ) -> list[Opened | DurableError | None]:
        """Claim many runs for recovery in one transaction.

        The rows are locked with ``FOR UPDATE SKIP LOCKED``: a run that another
        worker is claiming at this moment, or whose lease is live, is skipped
        (``RunLockedError`` in its place) instead of waited for, so workers that
        look at the same runs at once share them rather than queue on them. With a
        ``limit``, the oldest free runs up to it are taken (the others get None). The
        journals are read and checked in the same transaction, and only runs whose
        journal reads get their lease taken.
        """
        ids = [check_run_id(run_id) for run_id in run_ids]
        self._check_open()
        results: dict[str, Opened | DurableError | None] = {}
        mine: list[str] = []
        for run_id in ids:
            try:
                self._claim(run_id)
            except RunLockedError as exc:
                results[run_id] = exc
            else:
                mine.append(run_id)

        nothing: _Taken = ({}, {}, set())  # no tables: no runs

        def take(conn: Conn) -> _Taken:
            with conn.transaction():
                free = [
                    row[0]
                    for row in conn.execute(
                        self._q(
                            "SELECT run_id FROM {runs} WHERE run_id = ANY(%s) AND (owner IS NULL"
                            " OR owner = %s OR lease_expires IS NULL OR lease_expires <= now())"
                            " ORDER BY created_at, run_id LIMIT %s FOR UPDATE SKIP LOCKED"
                        ),
                        [mine, self.owner, limit],
                    ).fetchall()
                ]
                if limit is not None and len(free) >= limit:
                    skipped: list[str] = []  # the rest were left alone: None, not locked
                else:
                    skipped = [run_id for run_id in mine if run_id not in set(free)]
                exist = (
                    {
                        row[0]
                        for row in conn.execute(
                            self._q("SELECT run_id FROM {runs} WHERE run_id = ANY(%s)"), [skipped]
                        ).fetchall()
                    }
                    if skipped
                    else set()
                )
                journals = self._journals(conn, free)
                readable = [run_id for run_id, found in journals.items() if isinstance(found, list)]
                epochs: dict[str, int] = dict(
                    conn.execute(
                        self._q(
                            "UPDATE {runs} SET owner = %s, epoch = epoch + 1, lease_expires = now() + %s"
                            " WHERE run_id = ANY(%s) RETURNING run_id, epoch"
                        ),
                        [self.owner, self._ttl, readable],
                    ).fetchall()
                )
            return epochs, journals, exist

        epochs: dict[str, int]
        journals: dict[str, list[ev.Event] | JournalCorruptError]
        exist: set[str]
        try:
            epochs, journals, exist = (
                await self._run(f"opening {len(mine)} runs", take, missing=nothing) if mine else nothing
            )
        except BaseException:
            for run_id in mine:
                self._unclaim(run_id)
            raise
        for run_id in mine:
            found = journals.get(run_id)
            if isinstance(found, list) and run_id in epochs:
                writer = _PgWriter(self, run_id, int(epochs[run_id]), len(found))
                self._register(writer)
                results[run_id] = Opened(found, writer)
                continue
            self._unclaim(run_id)
            if found is None and (run_id not in exist or (limit is not None and len(epochs) >= limit)):
                results[run_id] = None  # no such run
                continue
            results[run_id] = (
                found
                if isinstance(found, JournalCorruptError)
                else RunLockedError(
                    f"run {run_id!r} is held, or being taken, by another worker; durable never lets "
                    "two writers append to one run",
                    run_id=run_id,
                )
            )
        return [results[run_id] for run_id in ids]

    def _journals(
        self, conn: Conn, run_ids: Sequence[str]
    ) -> dict[str, list[ev.Event] | JournalCorruptError]:
        """Read and check the journals of many runs in one statement (rows locked by the caller)."""
        rows = conn.execute(
            self._q(
                "SELECT r.run_id, r.next_index, j.idx, j.record FROM {runs} AS r"
                " LEFT JOIN {records} AS j ON j.run_id = r.run_id"
                " WHERE r.run_id = ANY(%s) ORDER BY r.run_id, j.idx"
            ),
            [list(run_ids)],
        ).fetchall()
        by_run: dict[str, tuple[int, list[tuple[Any, ...]]]] = {}
        for run_id, count, idx, record in rows:
            entry = by_run.setdefault(run_id, (count, []))
            if idx is not None:
                entry[1].append((idx, record))
        found: dict[str, list[ev.Event] | JournalCorruptError] = {}
        for run_id, (count, records) in by_run.items():
            try:
                found[run_id] = self._decode(run_id, count, records)
            except JournalCorruptError as exc:
                found[run_id] = exc
        return found

    async def restart(self, started: ev.RunStarted, writer: JournalWriter) -> JournalWriter:
        run_id = check_run_id(started.run_id)
        if not isinstance(writer, _PgWriter) or writer._store is not self or writer.run_id != run_id:
            raise ValueError(f"restart() needs the writer of run {run_id!r} that this store handed out")
        self._check_open()
        fresh = _PgWriter(self, run_id, 0, 0)
        fresh.append(started)
        _, (record,), _ = fresh.take()

        def swap(conn: Conn) -> int | None:
            with conn.transaction():
                row = conn.execute(
                    self._q(
                        "UPDATE {runs} SET epoch = epoch + 1, next_index = 1, status = 'open',"
                        " workflow = %s, lease_expires = now() + %s"
                        " WHERE run_id = %s AND epoch = %s AND owner = %s RETURNING epoch"
                    ),
                    [started.workflow, self._ttl, run_id, writer.epoch, self.owner],
                ).fetchone()
                if row is None:
                    return None
                conn.execute(self._q("DELETE FROM {records} WHERE run_id = %s"), [run_id])
                conn.execute(
                    self._q("INSERT INTO {records} (run_id, idx, record) VALUES (%s, 0, %s)"),
                    [run_id, record],
                )
                return int(row[0])

        epoch = await self._run(f"starting run {run_id!r} over in a fresh journal", swap, missing=None)
        if epoch is None:
            message = _lease_moved(run_id)
            writer.lose(message)
            raise StoreError(message)
        # The old writer's epoch is stale now: whatever it still had queued is fenced off.
        writer.superseded = True
        writer.close()
        fresh.epoch = epoch
        fresh.synced_through(0)
        self._register(fresh)
        return fresh

    async def read(self, run_id: str) -> list[ev.Event] | None:
        run_id = check_run_id(run_id)
        return await self._run(
            f"reading run {run_id!r}", lambda conn: self._journal(conn, run_id), missing=None
        )

    async def run_ids(self) -> list[str]:
        rows: list[tuple[Any, ...]] = await self._run(
            "listing runs",
            lambda conn: conn.execute(self._q("SELECT run_id FROM {runs}")).fetchall(),
            missing=[],
        )
        return sorted(row[0] for row in rows)

    async def unfinished(self) -> list[str]:
        """Ids of the runs not ended, sorted, leaving out those another worker's live lease holds."""
        query = self._q(
            "SELECT run_id FROM {runs} WHERE status = 'open' AND (owner IS NULL OR owner = %s"
            " OR lease_expires IS NULL OR lease_expires <= now())"
        )
        rows: list[tuple[Any, ...]] = await self._run(
            "listing unfinished runs", lambda conn: conn.execute(query, [self.owner]).fetchall(), missing=[]
        )
        return sorted(row[0] for row in rows)

    # -- the inbox -----------------------------------------------------------------

    async def post(self, run_id: str, message: ev.Message) -> None:
        run_id = check_run_id(run_id)
        if not isinstance(message, ev.SignalReceived | ev.CancelRequested):
            raise TypeError(f"only signals and cancel requests can be posted (got {message!r})")
        record = encode_record(message, 0, -1)

        def insert(conn: Conn) -> bool:
            with conn.transaction():
                if (
                    conn.execute(self._q("SELECT 1 FROM {runs} WHERE run_id = %s"), [run_id]).fetchone()
                    is None
                ):
                    return False
                conn.execute(
                    self._q(
                        "INSERT INTO {inbox} (run_id, message_id, record) VALUES (%s, %s, %s)"
                        " ON CONFLICT (message_id) DO NOTHING"
                    ),
                    [run_id, message.message_id, record],
                )
                conn.execute("SELECT pg_notify(%s, %s)", [self._channel, run_id])
            return True

        if not await self._run(f"leaving a message for run {run_id!r}", insert, missing=False):
            raise UnknownRunError(run_id, self)
        self._changed()

    async def messages(self, run_id: str) -> list[ev.Message]:
        run_id = check_run_id(run_id)
        query = self._q("SELECT id, record FROM {inbox} WHERE run_id = %s ORDER BY id")
        rows: list[tuple[Any, ...]] = await self._run(
            f"reading the messages of run {run_id!r}",
            lambda conn: conn.execute(query, [run_id]).fetchall(),
            missing=[],
        )
        found = []
        for row_id, record in rows:
            name = f"message {row_id} for run {run_id!r} in {self._schema}.durable_inbox"
            events = scan(encode_header() + bytes(record), name).events
            if len(events) != 1 or not isinstance(events[0], ev.SignalReceived | ev.CancelRequested):
                raise JournalCorruptError(
                    name, HEADER_SIZE, "a message must hold one signal or cancel request"
                )
            found.append(events[0])
        return found

    async def remove_messages(self, run_id: str, message_ids: Collection[str]) -> None:
        run_id = check_run_id(run_id)
        ids = list(message_ids)
        if not ids:
            return
        query = self._q("DELETE FROM {inbox} WHERE run_id = %s AND message_id = ANY(%s)")
        await self._run(
            f"removing messages of run {run_id!r}",
            lambda conn: conn.execute(query, [run_id, ids]).rowcount,
            missing=0,
        )

    async def runs_with_messages(self) -> set[str]:
        query = self._q("SELECT DISTINCT run_id FROM {inbox}")
        rows: list[tuple[Any, ...]] = await self._run(
            "listing runs with messages", lambda conn: conn.execute(query).fetchall(), missing=[]
        )
        return {row[0] for row in rows}

    # -- change notifications ------------------------------------------------------

    def _changed(self, *, only_since: bool = False) -> None:
        """Something changed (a notification came, or this store changed something): wake
        waiters (``only_since``: only those waiting since a token, for changes that LISTEN
        may have missed before it was set up; the others began waiting after it)."""
        with self._cond:
            self._generation += 1
            waiters = [(token, event) for token, event, since in self._waiters if since or not only_since]
        for token, event in waiters:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(event.set)

    def change_token(self) -> int:
        with self._cond:
            return self._generation

    async def wait_for_change(self, timeout: float, *, since: int | None = None) -> None:
        """Return when a run was created, released or ended, or a message posted (by any
        process using this database and schema) since ``since``, or after ``timeout`` seconds."""
        self._check_open()
        with self._cond:
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listener_main, name=f"durable-listener {self.owner}", daemon=True
                )
                self._listener.start()
        with trio.move_on_after(timeout):
            if not self._listening.is_set():
                await trio.to_thread.run_sync(
                    self._listening.wait, self._connect_timeout + 1, abandon_on_cancel=True
                )
            entry = (trio.lowlevel.current_trio_token(), trio.Event(), since is not None)
            with self._cond:
                # Without a token, changes count from now (the store listens by now);
                # with one, a change since it (a first LISTEN counts as one: what was
                # looked at before it may have changed unnoticed) returns at once.
                if since is not None and self._generation != since:
                    return
                self._waiters.append(entry)
            try:
                await entry[1].wait()
            finally:
                with self._cond:
                    self._waiters.remove(entry)

    def _listener_main(self) -> None:
        delay = 0.5
        reconnect = False
        while not self._stop_listener.is_set():
            try:
                conn = psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=max(2, math.ceil(self._connect_timeout))
                )
            except psycopg.Error as exc:
                _log.warning(
                    "durable: cannot LISTEN at %s (retrying): %s", self.where, self._scrub(_one_line(exc))
                )
                self._listening.set()  # waiters fall back to their timeout
                reconnect = True
                self._stop_listener.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                with conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    delay = 0.5
                    self._listening.set()
                    # What happened before LISTEN (or while the connection was lost) was
                    # not notified here: waiters holding an older token look again.
                    self._changed(only_since=not reconnect)
                    while not self._stop_listener.is_set():
                        for _ in conn.notifies(timeout=0.25):
                            self._changed()
            except psycopg.Error as exc:
                if self._stop_listener.is_set():
                    break
                _log.warning(
                    "durable: LISTEN connection to %s lost (reconnecting): %s",
                    self.where,
                    self._scrub(_one_line(exc)),
                )
                reconnect = True
                self._stop_listener.wait(delay)

    # -- the committer thread ------------------------------------------------------

    def _enqueue(
        self, writer: _PgWriter, first: int, records: list[bytes], ended: bool, *, release: bool
    ) -> _Job:
        job = _Job(writer, first, records, ended, release)
        with self._cond:
            if self._stopping:
                raise StoreError(f"{self!r} is closed (aclose() was called); nothing more can be written")
            self._queue.append(job)
            self._cond.notify_all()
        return job

    def _close_writer(self, writer: _PgWriter) -> None:
        # A run whose outcome is committed has nothing left to write: its release
        # goes to the committer without blocking the event loop for a round trip.
        finished = writer.terminal and not writer._buffer and writer._last is not None
        job = self._release(writer)
        if finished:
            return
        if job is not None and not job.wait_blocking(max(self._lease_ttl, 1.0)):
            _log.warning("durable: releasing run %r timed out; its lease runs out by itself", writer.run_id)

    def _release(self, writer: _PgWriter) -> _Job | None:
        """Queue a closed writer's last records (unless it failed) and the release of its lease."""
        with self._cond:
            if self._writers.get(writer.run_id) is writer:
                del self._writers[writer.run_id]
        if writer.superseded:
            return None
        first, records, ended = writer.take()
        if writer.failed:
            records, ended = [], False
        try:
            return self._enqueue(writer, first, records, ended, release=True)
        except StoreError:
            return None  # the store is closed: the lease runs out by itself

    def _committer_main(self) -> None:
        every = self._lease_ttl / 3
        next_renewal = time.monotonic() + every
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    if not any(w.live for w in self._writers.values()):
                        self._cond.wait()
                        continue
                    remaining = next_renewal - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                jobs, self._queue = self._queue, []
                if self._stopping and not jobs:
                    return
                renew: list[_PgWriter] = []
                if time.monotonic() >= next_renewal:
                    renew = [w for w in self._writers.values() if w.live]
                    next_renewal = time.monotonic() + every
            try:
                self._run_batch(jobs, renew)
            except BaseException as exc:  # pragma: no cover - a bug: never leave callers hanging
                _log.exception("durable: the committer failed")
                for job in jobs:
                    job.writer.lose(f"internal error in the PostgreSQL committer: {exc!r}")
                    job.finish(f"internal error in the PostgreSQL committer: {exc!r}")

    def _run_batch(self, jobs: list[_Job], renew: list[_PgWriter]) -> None:
        """One transaction: renew leases, append every queued writer's records, release leases."""
        groups: dict[int, _Group] = {}
        for job in jobs:
            groups.setdefault(id(job.writer), _Group(job.writer)).add(job)
        for group in groups.values():
            failure = group.writer.failure or group.error
            if failure is not None:  # failed before this batch: its records are not written
                group.error = failure
                group.records = []
        writes = sorted((g for g in groups.values() if g.records), key=lambda g: g.writer.run_id)
        releases = sorted((g for g in groups.values() if g.release), key=lambda g: g.writer.run_id)
        if writes:
            self.commit_transactions += 1
            self.committed_jobs += sum(1 for g in writes for job in g.jobs if job.records)
        try:
            lost, changed = self._transaction(renew, writes, releases)
        except (psycopg.Error, StoreError) as exc:
            self._batch_failed(jobs, writes, exc)
            return
        for writer in lost:
            writer.lose(_lease_moved(writer.run_id))
        for group in groups.values():
            if group.error is not None:
                group.writer.lose(group.error)
            for job in group.jobs:
                job.finish(group.error if job.records else None)
        if changed:
            self._changed()

    def _transaction(
        self, renew: list[_PgWriter], writes: list[_Group], releases: list[_Group]
    ) -> tuple[list[_PgWriter], list[str]]:
        """Run a batch's transaction: ``(writers whose lease is lost, runs ended or released)``."""
        lost: list[_PgWriter] = []
        changed: list[str] = []
        pool = self._prepare()
        with pool.connection() as conn, conn.transaction():
            if renew:
                lost = self._renew(conn, renew)
            if writes:
                changed += self._append(conn, writes)
            if releases:
                rows = conn.execute(
                    self._q(_RELEASE),
                    [[g.writer.run_id for g in releases], [g.writer.epoch for g in releases], self.owner],
                ).fetchall()
                changed += [row[0] for row in rows]
            if changed:
                conn.execute(_NOTIFY_MANY, [self._channel, changed])
        return lost, changed

    def _batch_failed(self, jobs: list[_Job], writes: list[_Group], exc: BaseException) -> None:
        """A batch's transaction failed: fail its writers, never retry (the outcome may be unknown)."""
        message = self._scrub(
            f"committing to PostgreSQL at {self.where} failed: {_one_line(exc)}; durable stops "
            "the run instead of retrying (whether the transaction committed may be unknown); "
            "it resumes from its journal on recovery"
        )
        _log.warning("durable: %s", message)
        for group in writes:
            group.writer.lose(message)
        for job in jobs:
            job.finish(job.writer.failure if job.records else None)

    def _renew(self, conn: Conn, writers: list[_PgWriter]) -> list[_PgWriter]:
        """Extend the leases of ``writers``; return those whose lease is gone."""
        writers = sorted(writers, key=lambda w: w.run_id)
        rows = conn.execute(
            self._q(_RENEW),
            [self._ttl, [w.run_id for w in writers], [w.epoch for w in writers], self.owner],
        ).fetchall()
        kept = {(row[0], row[1]) for row in rows}
        return [w for w in writers if (w.run_id, w.epoch) not in kept]

    def _append(self, conn: Conn, writes: list[_Group]) -> list[str]:
        """Advance each run's ``next_index`` (fenced on its epoch) and insert the records of the
        runs that passed; set ``group.error`` for the others. Returns the runs that ended."""
        rows = conn.execute(
            self._q(_ADVANCE),
            [
                self._ttl,
                [g.writer.run_id for g in writes],
                [g.writer.epoch for g in writes],
                [g.first for g in writes],
                [g.first + len(g.records) for g in writes],
                [g.ended for g in writes],
                self.owner,
            ],
        ).fetchall()
        passed = {(row[0], row[1]) for row in rows}
        ok = [g for g in writes if (g.writer.run_id, g.writer.epoch) in passed]
        refused = [g for g in writes if (g.writer.run_id, g.writer.epoch) not in passed]
        if refused:
            states = {
                row[0]: row[1:]
                for row in conn.execute(
                    self._q("SELECT run_id, epoch, owner, next_index FROM {runs} WHERE run_id = ANY(%s)"),
                    [[g.writer.run_id for g in refused]],
                ).fetchall()
            }
            for group in refused:
                group.error = self._refusal(group, states.get(group.writer.run_id))
        if ok:
            run_ids, indexes, records = [], [], []
            for group in ok:
                for offset, record in enumerate(group.records):
                    run_ids.append(group.writer.run_id)
                    indexes.append(group.first + offset)
                    records.append(record)
            conn.execute(self._q(_INSERT_RECORDS), [run_ids, indexes, records])
        return [g.writer.run_id for g in ok if g.ended]

    def _refusal(self, group: _Group, state: tuple[Any, ...] | None) -> str:
        run_id = group.writer.run_id
        if state is None:
            return f"run {run_id!r} is no longer in {self._schema}.durable_runs; nothing was written"
        epoch, owner, next_index = state
        if epoch != group.writer.epoch or owner != self.owner:
            return _lease_moved(run_id)
        return (
            f"the journal of run {run_id!r} holds {next_index} records, but this writer's next "
            f"record is {group.first}; durable neither overwrites records nor leaves gaps, so "
            "nothing was written"
        )

    # -- closing ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the leases still held, stop the threads, close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await trio.to_thread.run_sync(self._shutdown)

    def _shutdown(self) -> None:
        with self._cond:
            writers = [w for w in self._writers.values() if not w.closed]
        releases = []
        for writer in writers:  # queued together: one transaction releases them all
            writer.closed = True
            releases.append(self._release(writer))
        for job in releases:
            if job is not None:
                job.wait_blocking(max(self._lease_ttl, 1.0))
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            committer = self._committer
        if committer is not None:
            committer.join(max(self._lease_ttl, 5.0))
        self._stop_listener.set()
        self._changed()  # waiters return now rather than at their timeout
        if self._listener is not None:
            self._listener.join(5.0)
        with self._init_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
