"""The PostgreSQL store: one facade over the parts of this package.

A :class:`PostgresStore` is made of

- a :class:`~.connection.Database`: the DSN (``dsn.py``), the tables of its
  schema (``schema.py``) and the connection pool, opened on first use;
- a :class:`~.committer.Committer`: the store's writers (``writer.py``) and the
  thread that commits their records together, renewing their leases;
- :class:`~.leases.Leases`: creating, opening and restarting runs, each taking
  the run's lease (``leases.py``);
- a :class:`~.listener.Listener`: the ``LISTEN`` thread behind
  :meth:`PostgresStore.wait_for_change`;
- a :class:`~.journal.Reader`: reading journals and listing runs;
- an :class:`~.inbox.Inbox`: messages for runs held elsewhere;
- a :class:`~.due.DueIndex`: which runs are due, and when the next one is.

This module and ``dsn.py`` are imported with ``durable``; psycopg and the other
parts are imported when the first store is made, so ``import durable`` costs
nothing for PostgreSQL, and a machine without psycopg (the optional
``postgres`` extra) gets one clear error, from the constructor.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from .._core import events as ev
from .._core.durations import Duration, parse_duration
from .._core.errors import DurableError
from .._core.ids import check_run_id
from .._core.payloads import payloads_from
from .._store import CodecOption, Holder, JournalWriter, Opened, Removal, StateIndex, Store, page
from .dsn import split_options

if TYPE_CHECKING:
    from .committer import Committer
    from .connection import Database
    from .due import DueIndex
    from .inbox import Inbox
    from .journal import Reader
    from .leases import Leases
    from .listener import Listener

_NO_PSYCOPG = (
    "durable.PostgresStore needs psycopg 3 and psycopg_pool: install durable with its "
    "postgres extra (pip install 'durable-yield[postgres]', or '.[postgres]' in a clone)"
)


def _lease_seconds(value: Any) -> float:
    return parse_duration(value, what="lease_ttl")


def _check_given_once(name: str, keyword: Any, in_dsn: str | None, meaning: Callable[[Any], Any]) -> None:
    """Refuse an option given both as a keyword and in the DSN with two meanings: which
    one should win is the caller's to say (the same value twice is fine)."""
    if keyword is None or in_dsn is None or meaning(keyword) == meaning(in_dsn):
        return
    raise ValueError(
        f"{name} is given twice, {name}={keyword!r} and ?{name}={in_dsn} in the DSN, with different "
        "values; give it once"
    )


def _require_psycopg() -> None:
    """Import psycopg (a first store does); without it, say how to install it."""
    try:
        import psycopg  # noqa: F401, PLC0415 - psycopg loads with the first store, not with durable
        import psycopg_pool  # noqa: F401, PLC0415
    except ImportError as exc:  # without the "postgres" extra
        raise ImportError(_NO_PSYCOPG) from exc


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
        codec: payload codecs (see :mod:`durable.codecs`): one, or a list applied in order.

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
        codec: CodecOption = None,
    ) -> None:
        _require_psycopg()
        self.payloads = payloads_from(codec)
        if not isinstance(dsn, str):
            raise TypeError(f"dsn must be a str (got {type(dsn).__name__})")
        dsn, options = split_options(dsn)
        _check_given_once("schema", schema, options.get("schema"), lambda value: value)
        _check_given_once("lease_ttl", lease_ttl, options.get("lease_ttl"), _lease_seconds)
        schema = schema if schema is not None else options.get("schema", "public")
        lease_ttl = lease_ttl if lease_ttl is not None else options.get("lease_ttl", "30s")
        if not isinstance(schema, str) or not schema or len(schema.encode()) > 63:
            raise ValueError(f"schema must be a non-empty name of at most 63 bytes (got {schema!r})")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int (got {pool_size!r})")
        ttl = parse_duration(lease_ttl, what="lease_ttl")
        if ttl <= 0:
            raise ValueError(f"lease_ttl must be positive (got {lease_ttl!r})")
        timeout = max(parse_duration(connect_timeout, what="connect_timeout"), 1.0)
        self._compose(dsn, schema, lease_ttl=ttl, connect_timeout=timeout, pool_size=pool_size)

    def _compose(
        self, dsn: str, schema: str, *, lease_ttl: float, connect_timeout: float, pool_size: int
    ) -> None:
        """Make the parts (psycopg is importable by now)."""
        from .committer import Committer  # noqa: PLC0415 - the parts import psycopg
        from .connection import Database  # noqa: PLC0415
        from .dsn import Dsn  # noqa: PLC0415
        from .due import DueIndex  # noqa: PLC0415
        from .inbox import Inbox  # noqa: PLC0415
        from .journal import Reader  # noqa: PLC0415
        from .leases import Leases  # noqa: PLC0415
        from .listener import Listener  # noqa: PLC0415
        from .schema import Tables  # noqa: PLC0415

        target = Dsn(dsn)
        extra = "" if schema == "public" else f", schema={schema!r}"
        self._db: Database = Database(
            target,
            Tables(schema),
            owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}",
            lease_ttl=lease_ttl,
            connect_timeout=connect_timeout,
            pool_size=pool_size,
            label=f"PostgresStore({target.redacted()!r}{extra})",
        )
        self._listener: Listener = Listener(self._db)
        self._committer: Committer = Committer(self._db, self._listener.changed)
        self._leases: Leases = Leases(self._db, self._committer, self._listener)
        self._reader: Reader = Reader(self._db)
        self._inbox: Inbox = Inbox(self._db, self._listener, self)
        self._due: DueIndex = DueIndex(self._db, self._listener)

    # -- naming --------------------------------------------------------------------

    def __repr__(self) -> str:
        return self._db.label

    @property
    def owner(self) -> str:
        """This store instance's identity as the holder of leases."""
        return self._db.owner

    @property
    def where(self) -> str:
        """``host:port/dbname`` of the server, for messages."""
        return self._db.where

    @property
    def schema(self) -> str:
        return self._db.tables.schema

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts without renewal."""
        return self._db.lease_ttl

    @property
    def commit_transactions(self) -> int:
        """Transactions the committer ran for appends (for tests)."""
        return self._committer.commit_transactions

    @property
    def committed_jobs(self) -> int:
        """Syncs the committer's transactions served (for tests)."""
        return self._committer.committed_jobs

    async def has_tables(self) -> bool:
        """Whether durable's tables exist in the store's schema (a first write makes them).

        Raises:
            StoreError: the server cannot be reached, or its tables are of a newer version.
        """
        return await self._db.run("looking for durable's tables", lambda conn: True, missing=False)

    # -- runs ----------------------------------------------------------------------

    async def create(self, started: ev.RunStarted) -> JournalWriter | None:
        writer = await self._leases.create(self._sealed(started))
        return None if writer is None else self._attach(writer)

    async def open(self, run_id: str) -> Opened | None:
        # A writer of this store just closed (or let go) releases the lease in the
        # committer thread: the open waits for that (leases.py), rather than find the
        # row locked by it (RunLockedError), or take the lease from the release.
        return self._attach_opened(await self._leases.open(run_id), run_id)

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
        return self._attach_each(run_ids, await self._leases.open_many(run_ids, limit=limit))

    async def restart(self, started: ev.RunStarted, writer: JournalWriter) -> JournalWriter:
        return self._attach(await self._leases.restart(self._sealed(started), writer))

    async def read(self, run_id: str) -> list[ev.Event] | None:
        events = await self._reader.read(run_id)
        return None if events is None else self._unsealed(events, run_id)

    async def run_ids(self) -> list[str]:
        return await self._reader.run_ids()

    async def newest_first(self, limit: int | None = None, before: str | None = None) -> list[str]:
        return page(await self._reader.newest_first(), limit, before)

    async def unfinished(self) -> list[str]:
        """Ids of the runs not ended, sorted, leaving out those another worker's live lease holds."""
        return await self._reader.unfinished()

    async def state_index(self) -> StateIndex:
        """From the runs' status column and the type code of each ended run's last record
        (journal.py): no journal is read."""
        return await self._reader.state_index()

    # -- the due index -------------------------------------------------------------

    async def due_runs(self, now: float, limit: int, *, among: Collection[str] | None = None) -> list[str]:
        """Up to ``limit`` runs not ended, due at ``now`` and held by no live lease, oldest
        due first (``among``: only these), read from the index on ``due_at``.

        Tables of an older version (no index yet: nothing wrote to them since this
        durable came) list every unfinished run, as a store without an index does.
        """
        found = await self._due.due_runs(now, limit, among)
        return await super().due_runs(now, limit, among=among) if found is None else found

    async def next_due(self, now: float) -> float | None:
        return await self._due.next_due(now)

    async def release(self, writer: JournalWriter, due: float) -> None:
        """Set the run's due time and give up its lease, in one transaction fenced on the
        writer's epoch, and close the writer.

        Raises:
            StoreError: the lease moved to another worker meanwhile (as an append would
                say); nothing was changed.
        """
        await self._leases.release(writer, due)

    async def held(self, run_ids: Collection[str]) -> set[str]:
        return await self._due.held(run_ids)

    async def holders(self, run_ids: Collection[str]) -> dict[str, Holder]:
        return await self._due.holders(run_ids)

    async def remove(self, run_id: str, *, unfinished: bool = False) -> Removal:
        """In one transaction, refused while a live lease holds the run (removal.py)."""
        from . import removal  # noqa: PLC0415 - with psycopg, loaded by the first store

        run_id = check_run_id(run_id)
        held_here = self._committer.holds(run_id)
        if not held_here:
            await self._committer.released(run_id)  # a writer closed here: its lease let go
        remove = functools.partial(removal.remove_run, self._db, run_id, unfinished, held_here)
        result: Removal = await self._db.run(f"removing run {run_id!r}", remove, missing="missing")
        return result

    async def finished_before(self, t: float) -> list[str]:
        """Only the runs that ended and were created before ``t`` are read."""
        from . import removal  # noqa: PLC0415

        find = functools.partial(removal.ended_created_before, self._db, t)
        candidates: list[str] = await self._db.run("listing ended runs", find, missing=[])
        return [run_id for run_id, _ in await self._ends_before(candidates, t)]

    async def started_before(self, t: float) -> list[str]:
        from . import removal  # noqa: PLC0415

        find = functools.partial(removal.created_before, self._db, t)
        found: list[str] = await self._db.run("listing runs", find, missing=[])
        return found

    async def wake(self, run_id: str) -> None:
        await self._due.wake(run_id)

    async def ended(self, run_id: str, status: str | None = None) -> None:
        """Nothing to do: the transaction that committed the terminal record marked the
        run ``ended``, which takes it out of the due index."""

    # -- the inbox -----------------------------------------------------------------

    async def post(self, run_id: str, message: ev.Message) -> None:
        await self._inbox.post(run_id, self._sealed(message))

    async def messages(self, run_id: str) -> list[ev.Message]:
        return self._unsealed(await self._inbox.messages(run_id), run_id)

    async def remove_messages(self, run_id: str, message_ids: Collection[str]) -> None:
        await self._inbox.remove(run_id, message_ids)

    async def runs_with_messages(self) -> set[str]:
        return await self._inbox.runs_with_messages()

    # -- change notifications ------------------------------------------------------

    def change_token(self) -> int:
        return self._listener.token()

    async def wait_for_change(self, timeout: float, *, since: int | None = None) -> None:
        """Return when a run was created, released or ended, or a message posted (by any
        process using this database and schema) since ``since``, or after ``timeout`` seconds."""
        await self._listener.wait(timeout, since=since)

    # -- closing ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the leases still held, stop the threads, close the connections. Idempotent."""
        if self._db.closed:
            return
        self._db.closed = True
        import trio  # noqa: PLC0415 - `durable ls` on a FileStore imports this module, not trio

        await trio.to_thread.run_sync(self._shutdown)

    def _shutdown(self) -> None:
        self._committer.shutdown()
        self._listener.stop()
        self._db.close()
