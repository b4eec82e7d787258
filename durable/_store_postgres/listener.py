"""Change notifications: workers wake up at once when a run may need them.

Creating a run, releasing or ending one, and posting a message ``NOTIFY`` a
channel (``durable_changes`` for the ``public`` schema, a name derived from the
schema otherwise) with the run id as payload, in the transaction that made the
change. :meth:`Listener.wait` (``PostgresStore.wait_for_change``) waits for one:
the first wait starts a thread that holds a dedicated ``LISTEN`` connection
(outside the pool) and reconnects when it is lost, so workers wake up at once
instead of only polling.

A change counts by generation: each notification, and each change this store
made itself, bumps a counter and wakes the trio tasks waiting. A task may wait
*since* a token (:meth:`Listener.token`), taken before it looked at the store:
a change since then returns at once. What happened before ``LISTEN`` (or while
its connection was lost) was never notified, so (re)connecting counts as a
change for such waiters; the others began waiting after it.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import psycopg
import trio
from psycopg import sql

from .connection import Database
from .dsn import one_line

_log = logging.getLogger("durable.postgres")


class Listener:
    """The ``LISTEN`` thread of one store and the trio tasks waiting for a change."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._generation = 0
        #: Tasks in :meth:`wait`: their trio token, the event that wakes them, and
        #: whether they wait "since a token" (and so must hear of changes LISTEN missed).
        self.waiters: list[tuple[trio.lowlevel.TrioToken, trio.Event, bool]] = []
        self._thread: threading.Thread | None = None
        #: Set once the thread listens (or failed to connect: waiters fall back to their timeout).
        self.listening = threading.Event()
        self._stop = threading.Event()

    def changed(self, *, only_since: bool = False) -> None:
        """Something changed (a notification came, or this store changed something): wake
        waiters (``only_since``: only those waiting since a token, for changes that LISTEN
        may have missed before it was set up; the others began waiting after it)."""
        with self._lock:
            self._generation += 1
            waiters = [(token, event) for token, event, since in self.waiters if since or not only_since]
        for token, event in waiters:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(event.set)

    def token(self) -> int:
        with self._lock:
            return self._generation

    async def wait(self, timeout: float, *, since: int | None = None) -> None:
        """Return when something changed since ``since`` (or from now), or after ``timeout`` seconds."""
        self.db.check_open()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name=f"durable-listener {self.db.owner}", daemon=True
                )
                self._thread.start()
        with trio.move_on_after(timeout):
            if not self.listening.is_set():
                await trio.to_thread.run_sync(
                    self.listening.wait, self.db.connect_timeout + 1, abandon_on_cancel=True
                )
            entry = (trio.lowlevel.current_trio_token(), trio.Event(), since is not None)
            with self._lock:
                # Without a token, changes count from now (the store listens by now);
                # with one, a change since it (a first LISTEN counts as one: what was
                # looked at before it may have changed unnoticed) returns at once.
                if since is not None and self._generation != since:
                    return
                self.waiters.append(entry)
            try:
                await entry[1].wait()
            finally:
                with self._lock:
                    self.waiters.remove(entry)

    def _main(self) -> None:
        delay = 0.5
        reconnect = False
        failures = 0  # connections refused in a row
        while not self._stop.is_set():
            try:
                conn = self.db.connect()
            except psycopg.Error as exc:
                failures += 1
                # The first refusal is not told: what the store was doing meets the same
                # server and says so itself (a command line exits with its one line, not
                # after a warning that something will retry). The next, half a second
                # later, means the store goes on without notifications for now.
                if failures > 1:
                    _log.warning(
                        "durable: cannot LISTEN at %s (retrying): %s",
                        self.db.where,
                        self.db.scrub(one_line(exc)),
                    )
                self.listening.set()  # waiters fall back to their timeout
                reconnect = True
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            failures = 0
            try:
                with conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.db.tables.channel)))
                    delay = 0.5
                    self.listening.set()
                    # What happened before LISTEN (or while the connection was lost) was
                    # not notified here: waiters holding an older token look again.
                    self.changed(only_since=not reconnect)
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.25):
                            self.changed()
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                _log.warning(
                    "durable: LISTEN connection to %s lost (reconnecting): %s",
                    self.db.where,
                    self.db.scrub(one_line(exc)),
                )
                reconnect = True
                self._stop.wait(delay)

    def stop(self) -> None:
        """Stop the thread; the tasks waiting return now rather than at their timeout."""
        self._stop.set()
        self.changed()
        if self._thread is not None:
            self._thread.join(5.0)
