"""The inbox: messages (signals, cancel requests) for runs that another worker holds.

``durable_inbox`` keeps them in posting order (a ``bigserial``), each with its
unique ``message_id`` (a re-post is a no-op) and its event as a framed v1
record, checked by the same codec as a journal when read. Posting to a run that
does not exist raises :class:`~durable.UnknownRunError`; posting makes the run
due now (``due.py``: a run let go while it waits is taken again) and announces
its id with ``NOTIFY`` (``listener.py``), so the worker holding it, or one that
takes it, wakes up.
The holder journals the messages, then removes them (``durable/_inbox.py`` holds
that protocol, the same for every store).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from .._core import events as ev
from .._core.codec import HEADER_SIZE, encode_header, encode_record, scan
from .._core.errors import JournalCorruptError, UnknownRunError
from .._core.ids import check_run_id
from .due import WAKE

if TYPE_CHECKING:
    from .._store import Store
    from .connection import Database
    from .listener import Listener
    from .schema import Conn

_POST = """
    INSERT INTO {inbox} (run_id, message_id, record) VALUES (%s, %s, %s)
    ON CONFLICT (message_id) DO NOTHING
"""


class Inbox:
    """The messages of one store's runs."""

    def __init__(self, db: Database, listener: Listener, store: Store) -> None:
        self.db = db
        self.listener = listener
        #: The store, for :class:`~durable.UnknownRunError`.
        self.store = store

    async def post(self, run_id: str, message: ev.Message) -> None:
        run_id = check_run_id(run_id)
        if not isinstance(message, ev.SignalReceived | ev.CancelRequested):
            raise TypeError(f"only signals and cancel requests can be posted (got {message!r})")
        record = encode_record(message, 0, -1)
        db = self.db
        await db.upgrade()

        def insert(conn: Conn) -> bool:
            with conn.transaction():
                if conn.execute(db.q("SELECT 1 FROM {runs} WHERE run_id = %s"), [run_id]).fetchone() is None:
                    return False
                conn.execute(db.q(_POST), [run_id, message.message_id, record])
                conn.execute(db.q(WAKE), [run_id])
                conn.execute("SELECT pg_notify(%s, %s)", [db.tables.channel, run_id])
            return True

        if not await db.run(f"leaving a message for run {run_id!r}", insert, missing=False):
            raise UnknownRunError(run_id, self.store)
        self.listener.changed()

    async def messages(self, run_id: str) -> list[ev.Message]:
        run_id = check_run_id(run_id)
        query = self.db.q("SELECT id, record FROM {inbox} WHERE run_id = %s ORDER BY id")
        rows: list[tuple[Any, ...]] = await self.db.run(
            f"reading the messages of run {run_id!r}",
            lambda conn: conn.execute(query, [run_id]).fetchall(),
            missing=[],
        )
        found = []
        for row_id, record in rows:
            name = f"message {row_id} for run {run_id!r} in {self.db.tables.schema}.durable_inbox"
            events = scan(encode_header() + bytes(record), name).events
            if len(events) != 1 or not isinstance(events[0], ev.SignalReceived | ev.CancelRequested):
                raise JournalCorruptError(
                    name, HEADER_SIZE, "a message must hold one signal or cancel request"
                )
            found.append(events[0])
        return found

    async def remove(self, run_id: str, message_ids: Collection[str]) -> None:
        run_id = check_run_id(run_id)
        ids = list(message_ids)
        if not ids:
            return
        query = self.db.q("DELETE FROM {inbox} WHERE run_id = %s AND message_id = ANY(%s)")
        await self.db.run(
            f"removing messages of run {run_id!r}",
            lambda conn: conn.execute(query, [run_id, ids]).rowcount,
            missing=0,
        )

    async def runs_with_messages(self) -> set[str]:
        query = self.db.q("SELECT DISTINCT run_id FROM {inbox}")
        rows: list[tuple[Any, ...]] = await self.db.run(
            "listing runs with messages", lambda conn: conn.execute(query).fetchall(), missing=[]
        )
        return {row[0] for row in rows}
