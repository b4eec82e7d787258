"""A step's commit sent from the event loop itself: one connection trio waits on.

Why: a commit handed to the committer thread (``committer.py``) costs two thread
wake-ups besides the statement, the committer thread's and then the event
loop's (``run_sync_soon``): about 0.1 ms on an idle machine and 0.2 ms on a busy
one, a fifth to a third of a step. So a writer whose records the committer does
not hold (none queued, none in flight) sends its fenced append itself, on this
*direct line*: a connection in libpq's non-blocking mode (``psycopg.pq``, the
libpq API psycopg is built on; psycopg's own async connections need asyncio,
durable runs on trio) whose socket the event loop waits on like any other. One
statement is on the line at a time: a run that syncs while it is busy goes to
the committer and shares its group commits, so under load the line serves one
run and the committer the rest.

The statement is the committer's one-run fenced append (``leases``), outside a
transaction block, so it commits as a transaction of its own: same fence, same
commit. A statement that ends a run, or a release, still goes to the committer
(those transactions also notify the store's listeners).

Once sent, a statement is waited for even if the caller is cancelled (its outcome
decides what the writer may append next), for at most ``timeout`` seconds; past
that, or if the connection fails, the caller gets a :class:`DirectLineError` and
fails its writer as a failed group commit does (the outcome may be unknown; the run
resumes from its journal), and the connection is dropped. A new one is made at
the next use, in a worker thread; while connecting fails, the committer serves.
"""

from __future__ import annotations

import datetime
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import trio
from psycopg import pq

from . import leases
from .connection import idle_and_open
from .dsn import one_line

if TYPE_CHECKING:
    from .committer import Group
    from .connection import Database
    from .schema import Conn

#: PostgreSQL type OIDs of the parameters the one-run append takes, by Python type
#: (an integer goes as bigint: PostgreSQL compares and assigns it to integer columns).
_OIDS = {int: 20, bool: 16, str: 25, bytes: 17, datetime.timedelta: 1186}
#: After a failed connect, how long the committer serves alone before the next try.
_RECONNECT_AFTER = 5.0
#: A connection unused this long is replaced before its next statement (the pool
#: closes its idle connections after 10 minutes; a line used every few seconds keeps
#: its connection).
MAX_IDLE = 60.0


class DirectLineError(Exception):
    """A statement on the direct line failed or got no answer in time; its outcome
    may be unknown. ``str()`` says what happened (the committer words the failure)."""


class DirectLine:
    """One store's connection for commits sent from the event loop (see the module).

    Args:
        db: the store's database.
        timeout: the most seconds a statement is waited for once sent.
    """

    def __init__(self, db: Database, timeout: float) -> None:
        self.db = db
        self.timeout = timeout
        self._busy = threading.Lock()
        self._conn: Conn | None = None
        self._queries: dict[int, bytes] = {}
        self._connect_after = 0.0
        #: Seconds a connection may stay unused before it is replaced (see :meth:`ready`).
        self.max_idle = MAX_IDLE
        self._used_at = 0.0

    def acquire(self) -> bool:
        """Take the line if it is free (never waits); :meth:`release` gives it back."""
        if self.db.closed or time.monotonic() < self._connect_after:
            return False
        return self._busy.acquire(blocking=False)

    async def ready(self) -> bool:
        """Whether the line (acquired) has its connection, making it if need be (in a
        worker thread); False if that failed (tried again after a while).

        A connection known broken, closed by the server while idle, or unused for
        ``max_idle`` seconds, is replaced first: a statement sent on a connection that
        died while idle (a server restart, a firewall's idle timeout) would fail its
        run, since whether it committed would be unknown.
        """
        now = time.monotonic()
        conn = self._conn
        if conn is not None:
            if now - self._used_at < self.max_idle and idle_and_open(conn.pgconn):
                self._used_at = now
                return True
            self._drop()
        try:
            conn = await trio.to_thread.run_sync(self._connect)
        except psycopg.Error:
            self._connect_after = time.monotonic() + _RECONNECT_AFTER
            return False
        conn.pgconn.nonblocking = 1
        self._conn = conn
        self._used_at = time.monotonic()
        return True

    def release(self) -> None:
        self._busy.release()

    async def append(self, group: Group) -> bool:
        """Commit a group's records with the one-run fenced append, on the line the
        caller acquired; True if the fence passed (False: nothing was written, see
        ``leases.explain_refusals``).

        Raises:
            DirectLineError: the statement failed or no answer came in time.
        """
        conn = self._conn
        if conn is None:  # pragma: no cover - a bug: ready() makes it
            raise DirectLineError("the direct line has no connection")
        values, types, formats = _parameters(self.db, group)
        query = self._query(conn, len(group.records))
        with trio.CancelScope(shield=True), trio.move_on_after(self.timeout) as waited:
            try:
                results = await _execute(conn.pgconn, query, values, types, formats)
            except psycopg.Error as exc:
                self._drop()
                raise DirectLineError(one_line(exc)) from exc
        if waited.cancelled_caught:
            self._drop()
            raise DirectLineError(f"no answer within {self.timeout:g} s")
        return _passed(conn, results)

    def close(self) -> None:
        """Close the connection (called once the store's threads are stopped), unless a
        statement is on it: then its caller still waits on the socket, and the
        connection is closed when it is collected."""
        if self._busy.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self._busy.release()

    def _query(self, conn: Conn, count: int) -> bytes:
        query = self._queries.get(count)
        if query is None:
            text = self.db.q(leases.append_one_template(count)).as_bytes(conn)
            parts = text.split(b"%s")  # psycopg's placeholders as libpq's: $1, $2, ...
            query = parts[0] + b"".join(b"$%d" % n + part for n, part in enumerate(parts[1:], 1))
            self._queries[count] = query
        return query

    def _connect(self) -> Conn:
        conn = self.db.connect()
        conn.execute("SET client_encoding TO 'UTF8'")  # the text parameters are sent as UTF-8
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _parameters(db: Database, group: Group) -> tuple[list[bytes | None], list[int], list[int]]:
    """``leases.append_one_params`` as libpq takes them: ``(values, type OIDs, formats)``,
    text except bytes (binary)."""
    params = leases.append_one_params(db, group)
    return (
        [_text_or_bytes(value) for value in params],
        [_OIDS[type(value)] for value in params],
        [int(type(value) is bytes) for value in params],
    )


def _text_or_bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is bool:
        return b"t" if value else b"f"
    if type(value) is datetime.timedelta:
        return f"{value.total_seconds()!r} seconds".encode()
    return str(value).encode()  # int, str (the line's connection speaks UTF-8: _connect)


async def _execute(
    pgconn: pq.abc.PGconn, query: bytes, values: list[bytes | None], types: list[int], formats: list[int]
) -> list[pq.abc.PGresult]:
    """Send one statement and wait for all its results, letting trio run meanwhile."""
    fd = pgconn.socket
    pgconn.send_query_params(query, values, types, formats)
    while pgconn.flush():  # more to send: the socket's buffer is full
        await trio.lowlevel.wait_writable(fd)
    results: list[pq.abc.PGresult] = []
    while True:
        while pgconn.is_busy():
            await trio.lowlevel.wait_readable(fd)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


def _passed(conn: Conn, results: list[Any]) -> bool:
    """Whether the fence passed: the statement returned its run's row."""
    for result in results:
        if result.status != pq.ExecStatus.TUPLES_OK:
            error = psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
            raise DirectLineError(one_line(error))
    return bool(results) and results[-1].ntuples == 1
