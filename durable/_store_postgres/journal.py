"""Reading journals from ``durable_records``, checked exactly like a file's.

A journal is one row per record, ``(run_id, idx)`` the primary key, and
``record`` exactly the framed bytes of journal contract v1 (marker, length,
CRC-32, CBOR payload) that a file journal holds. Reading a journal concatenates
the v1 header and the records in ``idx`` order and decodes them with the same
:func:`durable._core.codec.scan` as every store, so every record keeps its
checksum, and damage (or a missing record) raises
:class:`~durable.JournalCorruptError` naming the run and the record. A record is
committed whole or not at all, so there is no torn tail here: any record that
fails its checks is damage. The run row's ``next_index`` says how many records
there must be, so a missing last record is found too.

The run row and the records are read in one statement, so they come from one
snapshot; :func:`read_journals` reads many runs in one statement (for
``open_many``, whose caller holds their rows locked). :class:`Reader` answers the
store's reads: a journal, the run ids, and the unfinished runs (those not ended,
leaving out the runs another worker's live lease holds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._core import events as ev
from .._core.codec import HEADER_SIZE, decode_record, encode_header, scan
from .._core.errors import JournalCorruptError
from .._core.ids import check_run_id
from .._core.outcomes import STATUS
from .._store import StateIndex

if TYPE_CHECKING:
    from .connection import Database
    from .schema import Conn, Tables

#: The runs not ended and not held under another owner's live lease.
_UNFINISHED = """
    SELECT run_id FROM {runs} WHERE status = 'open'
        AND (owner IS NULL OR owner = %s OR lease_expires IS NULL OR lease_expires <= now())
"""

#: Each run's status, and how each run that ended ended: the type code of its last
#: record. Journal contract v1 fixes where it is: a record is 10 bytes of framing
#: (marker, length, CRC-32), then a CBOR array of fewer than 24 items (one header
#: byte, 0x80 to 0x97) whose first item is the type code, one byte below 24. A
#: record of another shape gives NULL: that run is read, as every run once was.
_STATES = """
    SELECT r.run_id, r.status = 'open',
        CASE WHEN length(rec.record) > 11 AND get_byte(rec.record, 10) BETWEEN 128 AND 151
            THEN get_byte(rec.record, 11) END
    FROM {runs} AS r LEFT JOIN {records} AS rec
        ON r.status = 'ended' AND rec.run_id = r.run_id AND rec.idx = r.next_index - 1
"""
#: The status of a run whose journal ends with each terminal type code.
_ENDED_BY_CODE = {ev.EVENT_TYPES[event]: status for event, status in STATUS.items()}


class Reader:
    """Reading a store's runs: one journal, every run's id, the unfinished ones."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def read(self, run_id: str) -> list[ev.Event] | None:
        run_id = check_run_id(run_id)
        tables = self.db.tables
        return await self.db.run(
            f"reading run {run_id!r}", lambda conn: read_journal(conn, tables, run_id), missing=None
        )

    async def state_index(self) -> StateIndex:
        """The open runs, and how each run that ended ended (see ``_STATES``): one
        statement, one index probe per run that ended, no journal read."""
        query = self.db.q(_STATES)
        rows: list[tuple[Any, ...]] = await self.db.run(
            "reading the runs' states", lambda conn: conn.execute(query).fetchall(), missing=[]
        )
        unfinished = frozenset(run_id for run_id, is_open, _ in rows if is_open)
        ended = {
            run_id: _ENDED_BY_CODE[code]
            for run_id, is_open, code in rows
            if not is_open and code in _ENDED_BY_CODE
        }
        return StateIndex(unfinished, ended)

    async def run_ids(self) -> list[str]:
        query = self.db.q("SELECT run_id FROM {runs}")
        rows: list[tuple[Any, ...]] = await self.db.run(
            "listing runs", lambda conn: conn.execute(query).fetchall(), missing=[]
        )
        return sorted(row[0] for row in rows)

    async def newest_first(self) -> list[str]:
        """Every run id, the newest created first (the ``created_at`` column)."""
        query = self.db.q("SELECT run_id FROM {runs} ORDER BY created_at DESC, run_id DESC")
        rows: list[tuple[Any, ...]] = await self.db.run(
            "listing runs", lambda conn: conn.execute(query).fetchall(), missing=[]
        )
        return [row[0] for row in rows]

    async def unfinished(self) -> list[str]:
        """Ids of the runs not ended, sorted, leaving out those another worker's live lease holds."""
        query, owner = self.db.q(_UNFINISHED), self.db.owner
        rows: list[tuple[Any, ...]] = await self.db.run(
            "listing unfinished runs", lambda conn: conn.execute(query, [owner]).fetchall(), missing=[]
        )
        return sorted(row[0] for row in rows)


def read_journal(conn: Conn, tables: Tables, run_id: str) -> list[ev.Event] | None:
    """Read and check a run's journal (None if there is no such run)."""
    rows = conn.execute(
        tables.q(
            "SELECT r.next_index, j.idx, j.record FROM {runs} AS r"
            " LEFT JOIN {records} AS j ON j.run_id = r.run_id"
            " WHERE r.run_id = %s ORDER BY j.idx"
        ),
        [run_id],
    ).fetchall()
    if not rows:
        return None
    records = [(idx, rec) for _, idx, rec in rows if idx is not None]
    return decode(tables.journal_name(run_id), run_id, rows[0][0], records)


def read_journals(
    conn: Conn, tables: Tables, run_ids: Sequence[str]
) -> dict[str, list[ev.Event] | JournalCorruptError]:
    """Read and check the journals of many runs in one statement: each run's events, or
    the damage found in its journal. Runs that do not exist are left out."""
    rows = conn.execute(
        tables.q(
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
            found[run_id] = decode(tables.journal_name(run_id), run_id, count, records)
        except JournalCorruptError as exc:
            found[run_id] = exc
    return found


def decode(name: str, run_id: str, count: int, rows: Sequence[tuple[Any, ...]]) -> list[ev.Event]:
    """The events of a journal's rows ``(idx, record)``, checked exactly like a file's.

    ``name`` names the journal in errors; ``count`` is how many records the run row
    says the journal holds.
    """
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
