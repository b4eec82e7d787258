"""What only the PostgreSQL store promises: tables made by the first write (and tables of
version 1 upgraded by it), leases and fencing, the due index's leases and queries, group
commit, notifications, and clear errors. The Store contract itself is in test_stores.py
(the due index's in test_due_index.py).

Two store instances on one schema stand for two worker processes.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import cbor2
import pgutil
import psycopg
import pytest
import trio
from psycopg import sql
from psycopg.conninfo import make_conninfo

import durable
from durable._core import codec as _codec
from durable._core import events as ev
from durable._store import JournalWriter, Opened
from durable._store_from import store_from
from durable._store_postgres import PostgresStore
from durable._store_postgres.committer import Job
from durable._store_postgres.schema import SCHEMA_VERSION
from durable._store_postgres.writer import PgWriter

postgres = pytest.mark.postgres


def started(run_id: str = "run-1", workflow: str = "wf") -> ev.RunStarted:
    return ev.RunStarted(run_id, workflow, cbor2.dumps([[run_id], {}]), 1.0)


def step(seq: int) -> ev.ActivityScheduled:
    return ev.ActivityScheduled(seq, "act", cbor2.dumps([[seq], {}]), float(seq))


def signal(message_id: str) -> ev.SignalReceived:
    return ev.SignalReceived("decision", cbor2.dumps("yes"), 1.0, message_id)


def table(store: PostgresStore, name: str) -> sql.Composable:
    return sql.Identifier(store.schema, name)


def run_row(store: PostgresStore, run_id: str) -> dict[str, Any]:
    rows = pgutil.execute(
        sql.SQL("SELECT status, owner, epoch, next_index FROM {} WHERE run_id = %s").format(
            table(store, "durable_runs")
        ),
        [run_id],
    )
    status, owner, epoch, next_index = rows[0]
    return {"status": status, "owner": owner, "epoch": epoch, "next_index": next_index}


def expire_lease(store: PostgresStore, run_id: str) -> None:
    """The holder stalled past its lease (without its renewals running meanwhile)."""
    pgutil.execute(
        sql.SQL("UPDATE {} SET lease_expires = now() - interval '1 second' WHERE run_id = %s").format(
            table(store, "durable_runs")
        ),
        [run_id],
    )


def indexes(store: PostgresStore, run_id: str) -> list[int]:
    rows = pgutil.execute(
        sql.SQL("SELECT idx FROM {} WHERE run_id = %s ORDER BY idx").format(table(store, "durable_records")),
        [run_id],
    )
    return [row[0] for row in rows]


async def create(store: PostgresStore, run_id: str = "run-1") -> JournalWriter:
    writer = await store.create(started(run_id))
    assert writer is not None
    return writer


async def create_with_one_step(store: PostgresStore) -> JournalWriter:
    """Run ``run-1`` created, with ``step(1)`` appended and synced."""
    writer = await create(store)
    writer.append(step(1))
    await writer.sync()
    return writer


@pytest.fixture(autouse=True)
def _needs_postgres(request: pytest.FixtureRequest) -> None:
    # Checked here, in a sync fixture: a skip raised inside a trio fixture loses its reason.
    if request.node.get_closest_marker("postgres") is not None:
        pgutil.require()


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    made = pgutil.fresh_store()
    yield made
    await made.aclose()


@pytest.fixture
async def other(store: PostgresStore) -> AsyncIterator[PostgresStore]:
    """A second worker on the same tables."""
    made = pgutil.store_on(store.schema)
    yield made
    await made.aclose()


# -- the tables ---------------------------------------------------------------------


@postgres
async def test_the_tables_are_made_by_the_first_write_and_again_is_harmless(store: PostgresStore) -> None:
    assert await store.run_ids() == []  # reading creates nothing
    assert not pgutil.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [store.schema])
    (await create(store)).close()  # creates the schema and tables
    again = pgutil.store_on(store.schema)
    try:
        assert await again.run_ids() == ["run-1"]  # runs the same DDL: changes nothing
        assert await again.read("run-1") == [started()]
    finally:
        await again.aclose()
    versions = pgutil.execute(
        sql.SQL("SELECT version FROM {}").format(table(store, "durable_schema_version"))
    )
    assert versions == [(SCHEMA_VERSION,)]


@postgres
def test_workers_starting_at_once_on_a_fresh_schema_all_get_the_tables() -> None:
    pgutil.require()
    schema = pgutil.fresh_schema()
    stores = [pgutil.store_on(schema) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def first_use(store: PostgresStore) -> None:
        barrier.wait()
        try:
            store._db.make_tables()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        versions = pgutil.execute(
            sql.SQL("SELECT version FROM {}").format(sql.Identifier(schema, "durable_schema_version"))
        )
        assert versions == [(SCHEMA_VERSION,)]
    finally:
        for store in stores:
            trio.run(store.aclose)
        pgutil.drop_schema(schema)


@postgres
async def test_tables_of_a_newer_version_are_refused(store: PostgresStore) -> None:
    (await create(store)).close()
    pgutil.execute(
        sql.SQL("UPDATE {} SET version = %s").format(table(store, "durable_schema_version")),
        [SCHEMA_VERSION + 1],
    )
    newer = pgutil.store_on(store.schema)
    try:
        with pytest.raises(durable.StoreError, match=r"newer than this durable uses.*upgrade durable"):
            await newer.run_ids()
    finally:
        await newer.aclose()


@postgres
async def test_a_role_that_may_not_create_tables_works_with_existing_ones(store: PostgresStore) -> None:
    (await create(store, "run-0")).close()  # the tables exist
    role = f"durable_test_role_{uuid.uuid4().hex[:12]}"
    schema = sql.Identifier(store.schema)
    pgutil.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    limited = None
    try:
        for grant in (
            "GRANT USAGE ON SCHEMA {schema} TO {role}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        ):
            pgutil.execute(sql.SQL(grant).format(schema=schema, role=sql.Identifier(role)))
        limited = PostgresStore(make_conninfo(pgutil.dsn(), user=role), schema=store.schema)
        writer = await create(limited)
        writer.append(step(1))
        await writer.sync()
        writer.close()
        await limited.post("run-1", signal("m-1"))
        assert await store.read("run-1") == [started(), step(1)]
        assert await store.messages("run-1") == [signal("m-1")]
    finally:
        if limited is not None:
            await limited.aclose()
        pgutil.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        pgutil.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# -- tables of version 1 ---------------------------------------------------------------

#: The tables of version 1 (durable before the due index), as it made them.
V1_DDL = [
    "CREATE SCHEMA {schema}",
    "CREATE TABLE {version} (version integer NOT NULL)",
    """CREATE TABLE {runs} (
        run_id text PRIMARY KEY,
        workflow text NOT NULL,
        status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ended')),
        owner text,
        epoch bigint NOT NULL DEFAULT 0,
        lease_expires timestamptz,
        next_index integer NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX durable_runs_open ON {runs} (run_id) WHERE status = 'open'",
    """CREATE TABLE {records} (
        run_id text NOT NULL REFERENCES {runs} (run_id),
        idx integer NOT NULL CHECK (idx >= 0),
        record bytea NOT NULL,
        PRIMARY KEY (run_id, idx)
    )""",
    """CREATE TABLE {inbox} (
        id bigserial PRIMARY KEY,
        run_id text NOT NULL REFERENCES {runs} (run_id),
        message_id text NOT NULL UNIQUE,
        record bytea NOT NULL
    )""",
    "CREATE INDEX durable_inbox_run ON {inbox} (run_id, id)",
    "INSERT INTO {version} (version) VALUES (1)",
]

#: What a version 1 store held: per run, its status, lease owner, creation time and journal.
V1_RUNS: dict[str, tuple[str, str | None, str, list[ev.Event]]] = {
    "old": ("open", None, "2020-01-01 00:00:00+00", [started("old"), step(1)]),
    "older": ("open", None, "2019-06-01 00:00:00+00", [started("older")]),
    "held": ("open", "a-version-1-worker", "2019-01-01 00:00:00+00", [started("held"), step(1)]),
    "done": (
        "ended",
        None,
        "2018-01-01 00:00:00+00",
        [started("done"), ev.RunCompleted(cbor2.dumps(1), 2.0)],
    ),
}


def _v1_names(schema: str) -> dict[str, sql.Identifier]:
    return {
        "schema": sql.Identifier(schema),
        "version": sql.Identifier(schema, "durable_schema_version"),
        "runs": sql.Identifier(schema, "durable_runs"),
        "records": sql.Identifier(schema, "durable_records"),
        "inbox": sql.Identifier(schema, "durable_inbox"),
    }


def make_v1_store(schema: str) -> None:
    """Version 1 tables holding the runs of ``V1_RUNS`` and a message for "old"."""
    names = _v1_names(schema)
    for statement in V1_DDL:
        pgutil.execute(sql.SQL(statement).format(**names))
    insert_run = sql.SQL(
        "INSERT INTO {runs} (run_id, workflow, status, owner, epoch, lease_expires, next_index, created_at)"
        " VALUES (%s, 'wf', %s, %s, 3,"
        " CASE WHEN %s::text IS NULL THEN NULL ELSE now() + interval '1 hour' END, %s, %s)"
    ).format(**names)
    insert_record = sql.SQL("INSERT INTO {records} (run_id, idx, record) VALUES (%s, %s, %s)").format(**names)
    for run_id, (status, owner, created, events) in V1_RUNS.items():
        pgutil.execute(insert_run, [run_id, status, owner, owner, len(events), created])
        for idx, event in enumerate(events):
            pgutil.execute(insert_record, [run_id, idx, _codec.encode_record(event, idx, idx - 1)])
    pgutil.execute(
        sql.SQL("INSERT INTO {inbox} (run_id, message_id, record) VALUES ('old', 'm-1', %s)").format(**names),
        [_codec.encode_record(signal("m-1"), 0, -1)],
    )


def v1_contents(schema: str) -> list[list[tuple[Any, ...]]]:
    """Every row of the version 1 columns of the three tables."""
    names = _v1_names(schema)
    return [
        pgutil.execute(sql.SQL(query).format(**names))
        for query in (
            "SELECT run_id, workflow, status, owner, epoch, lease_expires, next_index, created_at"
            " FROM {runs} ORDER BY run_id",
            "SELECT run_id, idx, record FROM {records} ORDER BY run_id, idx",
            "SELECT id, run_id, message_id, record FROM {inbox} ORDER BY id",
        )
    ]


@pytest.fixture
async def v1_store() -> AsyncIterator[PostgresStore]:
    """A store (of this durable) on a schema holding version 1 tables."""
    schema = pgutil.fresh_schema()
    made = pgutil.fresh_store(schema=schema)
    make_v1_store(schema)
    yield made
    await made.aclose()


def schema_version(store: PostgresStore) -> list[tuple[Any, ...]]:
    return pgutil.execute(sql.SQL("SELECT version FROM {}").format(table(store, "durable_schema_version")))


@postgres
async def test_version_1_tables_are_read_as_they_are(v1_store: PostgresStore) -> None:
    store = v1_store
    assert await store.has_tables()
    assert await store.run_ids() == ["done", "held", "old", "older"]
    for run_id, (_, _, _, events) in V1_RUNS.items():
        assert await store.read(run_id) == events
    assert await store.unfinished() == ["old", "older"]  # "held" has a live lease
    assert await store.messages("old") == [signal("m-1")]
    # No due index yet: every unfinished run is a candidate, as for a store without one.
    assert await store.due_runs(time.time(), 10) == ["old", "older"]
    assert await store.next_due(0.0) is None
    assert schema_version(store) == [(1,)]  # reading changed nothing


@postgres
@pytest.mark.parametrize("first_write", ["create", "open", "post"])
async def test_the_first_write_upgrades_version_1_tables_keeping_every_record(
    v1_store: PostgresStore, first_write: str
) -> None:
    store = v1_store
    before = v1_contents(store.schema)
    if first_write == "create":
        (await create(store, "new")).close()
    elif first_write == "open":
        opened = await store.open("older")
        assert opened is not None
        opened.writer.close()
    else:
        await store.post("old", signal("m-2"))
    assert schema_version(store) == [(SCHEMA_VERSION,)]
    after = v1_contents(store.schema)
    if first_write == "create":
        after[0] = [row for row in after[0] if row[0] != "new"]
        after[1] = [row for row in after[1] if row[0] != "new"]
    elif first_write == "open":  # taking the run moved its lease's epoch
        after[0] = [row if row[0] != "older" else (*row[:4], 3, *row[5:]) for row in after[0]]
    else:
        after[2] = after[2][:1]
    assert after == before  # every run, record and message kept
    due = dict(
        pgutil.execute(
            sql.SQL("SELECT run_id, due_at FROM {} WHERE status = 'open'").format(
                table(store, "durable_runs")
            )
        )
    )
    created = {run_id: datetime.fromisoformat(row[2]).timestamp() for run_id, row in V1_RUNS.items()}
    assert due["held"] == created["held"]  # every open run is due since its creation
    assert due["old"] == created["old"]
    now = time.time()
    # Oldest due first ("new" is due since its RunStarted time, 1.0); "held" waits for
    # its holder's lease to run out.
    assert await store.due_runs(now, 10) == [*(["new"] if first_write == "create" else []), "older", "old"]
    for run_id, (_, _, _, events) in V1_RUNS.items():
        assert await store.read(run_id) == events
    again = pgutil.store_on(store.schema)
    try:  # on tables of this version: no DDL, the same answers
        assert await again.due_runs(now, 10) == await store.due_runs(now, 10)
        (await create(again, "another")).close()
    finally:
        await again.aclose()
    assert schema_version(store) == [(SCHEMA_VERSION,)]


@postgres
async def test_a_role_that_may_not_alter_version_1_tables_is_told_who_must_upgrade_them(
    v1_store: PostgresStore,
) -> None:
    role = f"durable_test_role_{uuid.uuid4().hex[:12]}"
    schema = sql.Identifier(v1_store.schema)
    pgutil.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    limited = None
    try:
        for grant in (
            "GRANT USAGE ON SCHEMA {schema} TO {role}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        ):
            pgutil.execute(sql.SQL(grant).format(schema=schema, role=sql.Identifier(role)))
        limited = PostgresStore(make_conninfo(pgutil.dsn(), user=role), schema=v1_store.schema)
        assert await limited.run_ids() == ["done", "held", "old", "older"]  # reading works
        refused = (
            rf"tables in schema '{v1_store.schema}' .* are version 1, and this durable needs version 2"
            rf".*role '{role}' may not alter them \(.*\)\. Upgrade them once as their owner \('postgres'\)"
            r".*BEGIN; ALTER TABLE .*durable_runs.* ADD COLUMN IF NOT EXISTS due_at .*COMMIT;"
        )
        with pytest.raises(durable.StoreError, match=refused):
            await create(limited, "new")
        with pytest.raises(durable.StoreError, match=refused):
            await limited.post("old", signal("m-2"))
        with pytest.raises(durable.StoreError, match=refused):
            await limited.open("old")
        assert schema_version(v1_store) == [(1,)]
        assert await limited.messages("old") == [signal("m-1")]  # nothing was written

        (await create(v1_store, "by-the-owner")).close()  # the owner's first write upgrades them
        (await create(limited, "new")).close()
        assert await limited.due_runs(time.time(), 10) == ["by-the-owner", "new", "older", "old"]
    finally:
        if limited is not None:
            await limited.aclose()
        pgutil.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        pgutil.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# -- leases and fencing ---------------------------------------------------------------


@postgres
async def test_a_run_held_by_another_worker_is_locked_and_not_listed_as_unfinished(
    store: PostgresStore, other: PostgresStore
) -> None:
    writer = await create(store)
    (await create(store, "free")).close()
    with pytest.raises(durable.RunLockedError, match=r"run 'run-1' is held by another worker .* until"):
        await other.open("run-1")
    assert await other.create(started()) is None
    assert await other.read("run-1") == [started()]  # reading takes no lease
    assert await other.unfinished() == ["free"]
    assert await store.unfinished() == ["free", "run-1"]  # its own runs stay candidates
    writer.close()  # releases the lease at once
    assert await other.unfinished() == ["free", "run-1"]
    opened = await other.open("run-1")
    assert opened is not None
    assert opened.events == [started()]
    opened.writer.close()


@postgres
async def test_a_worker_whose_lease_was_taken_over_is_fenced_off(
    store: PostgresStore, other: PostgresStore
) -> None:
    stalled = await create(store)
    stalled.append(step(1))
    await stalled.sync()
    expire_lease(store, "run-1")  # it stalled: its lease ran out unrenewed

    opened = await other.open("run-1")  # another worker takes the run over
    assert opened is not None
    assert opened.events == [started(), step(1)]

    stalled.append(step(2))  # buffered: appending does no I/O
    with pytest.raises(durable.StoreError, match=r"moved to another worker.*must give the run up"):
        await stalled.sync()
    with pytest.raises(durable.StoreError, match="can no longer be written"):
        stalled.append(step(3))
    stalled.close()  # must not release the new holder's lease
    with pytest.raises(durable.RunLockedError):
        await store.open("run-1")

    opened.writer.append(step(20))
    await opened.writer.sync()
    opened.writer.close()
    assert await store.read("run-1") == [started(), step(1), step(20)]  # nothing of the stalled one
    assert indexes(store, "run-1") == [0, 1, 2]  # no duplicate, no gap


@postgres
async def test_a_fenced_run_does_not_fail_the_others_in_its_group_commit(store: PostgresStore) -> None:
    fenced, fine = await create(store, "fenced"), await create(store, "fine")
    assert isinstance(fenced, PgWriter)
    assert isinstance(fine, PgWriter)
    pgutil.execute(  # another worker took "fenced" over
        sql.SQL("UPDATE {} SET epoch = epoch + 1, owner = 'thief' WHERE run_id = 'fenced'").format(
            table(store, "durable_runs")
        )
    )
    jobs = []
    for writer in (fenced, fine):
        writer.append(step(1))
        first, records, ended = writer.take()
        jobs.append(Job(writer, first, records, ended, release=False))
    # Both in one batch, committed in one transaction.
    await trio.to_thread.run_sync(store._committer.run_batch, jobs, [])
    assert jobs[0].error is not None
    assert "moved to another worker" in jobs[0].error
    assert jobs[1].error is None
    assert await store.read("fine") == [started("fine"), step(1)]
    assert await store.read("fenced") == [started("fenced")]
    fenced.close()
    fine.close()


@postgres
async def test_a_stored_record_is_never_overwritten(store: PostgresStore) -> None:
    writer = await create(store)
    foreign = _codec.encode_record(step(99), 1, 0)
    pgutil.execute(  # record 1 appears behind the writer's back (the run row unchanged)
        sql.SQL("INSERT INTO {} (run_id, idx, record) VALUES ('run-1', 1, %s)").format(
            table(store, "durable_records")
        ),
        [foreign],
    )
    writer.append(step(1))
    with pytest.raises(durable.StoreError, match="duplicate key"):
        await writer.sync()
    writer.close()
    rows = pgutil.execute(
        sql.SQL("SELECT record FROM {} WHERE run_id = 'run-1' AND idx = 1").format(
            table(store, "durable_records")
        )
    )
    assert rows == [(foreign,)]


@postgres
async def test_a_writer_behind_the_stored_journal_writes_nothing(store: PostgresStore) -> None:
    writer = await create(store)
    pgutil.execute(
        sql.SQL("UPDATE {} SET next_index = 5 WHERE run_id = 'run-1'").format(table(store, "durable_runs"))
    )
    writer.append(step(1))
    with pytest.raises(durable.StoreError, match="holds 5 records, but this writer's next record is 1"):
        await writer.sync()
    writer.close()
    assert indexes(store, "run-1") == [0]


@postgres
async def test_leases_are_renewed_while_the_writer_is_open() -> None:
    holder = pgutil.fresh_store(lease_ttl=0.5)
    other = pgutil.store_on(holder.schema)
    try:
        writer = await create(holder)
        await trio.sleep(1.6)  # three lease lifetimes
        with pytest.raises(durable.RunLockedError):
            await other.open("run-1")
        writer.append(step(1))
        await writer.sync()
        writer.close()
        assert await other.read("run-1") == [started(), step(1)]
    finally:
        await other.aclose()
        await holder.aclose()


@postgres
async def test_a_lease_found_lost_by_renewal_fails_the_writer() -> None:
    holder = pgutil.fresh_store(lease_ttl=0.3)
    try:
        writer = await create(holder)
        assert isinstance(writer, PgWriter)
        pgutil.execute(
            sql.SQL("UPDATE {} SET epoch = epoch + 1, owner = 'thief' WHERE run_id = 'run-1'").format(
                table(holder, "durable_runs")
            )
        )
        with trio.fail_after(30):  # a hang guard, not a timing assertion
            while not writer.failed:
                await trio.sleep(0.05)
        with pytest.raises(durable.StoreError, match="moved to another worker"):
            writer.append(step(1))
        writer.close()
        assert indexes(holder, "run-1") == [0]
        assert run_row(holder, "run-1")["owner"] == "thief"
    finally:
        await holder.aclose()


@postgres
async def test_an_ended_run_is_marked_and_its_release_noticed(store: PostgresStore) -> None:
    writer = await create(store)
    assert run_row(store, "run-1")["status"] == "open"
    writer.append(ev.RunCompleted(cbor2.dumps(1), 2.0))
    await writer.sync()
    assert run_row(store, "run-1")["status"] == "ended"
    assert run_row(store, "run-1")["owner"] == store.owner
    writer.close()  # the outcome is committed: the release goes out without waiting for it
    with trio.fail_after(30):  # a hang guard, not a timing assertion
        while run_row(store, "run-1")["owner"] is not None:
            await trio.sleep(0.01)
    assert await store.unfinished() == []


@postgres
async def test_restart_swaps_the_journal_and_keeps_the_lease(
    store: PostgresStore, other: PostgresStore
) -> None:
    writer = await create(store)
    writer.append(step(1))
    writer.append(ev.RunContinuedAsNew(cbor2.dumps([[1], {}]), 2.0))
    await writer.sync()
    fresh = await store.restart(started(workflow="wf2"), writer)
    assert fresh.next_index == 1
    writer.close()  # idempotent, and releases nothing of the fresh journal's lease
    with pytest.raises(durable.RunLockedError):
        await other.open("run-1")
    with pytest.raises(durable.StoreError):
        writer.append(step(2))
    fresh.append(step(5))
    await fresh.sync()
    assert await other.read("run-1") == [started(workflow="wf2"), step(5)]
    assert indexes(store, "run-1") == [0, 1]
    fresh.close()


@postgres
async def test_aclose_releases_leases_and_later_use_is_a_clear_error(
    store: PostgresStore, other: PostgresStore
) -> None:
    second = pgutil.store_on(store.schema)
    writer = await create(second)
    writer.append(step(1))
    await second.aclose()
    assert run_row(store, "run-1")["owner"] is None
    assert await store.read("run-1") == [started(), step(1)]  # what was appended is kept, not synced
    with pytest.raises(durable.StoreError, match="is closed"):
        await second.run_ids()
    with pytest.raises(durable.StoreError):
        await writer.sync()
    await second.aclose()  # idempotent
    opened = await other.open("run-1")
    assert opened is not None
    opened.writer.close()


@postgres
async def test_a_database_error_fails_the_writers_of_the_batch_and_is_not_retried(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await create(store)
    writer.append(step(1))
    calls = []

    def broken(*args: Any) -> Any:
        calls.append(args)
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(store._committer, "transaction", broken)
    monkeypatch.setattr(store._committer.direct, "acquire", lambda: False)  # the committer's path
    with pytest.raises(durable.StoreError, match=r"server closed the connection.*instead of retrying"):
        await writer.sync()
    monkeypatch.undo()
    with pytest.raises(durable.StoreError):
        writer.append(step(2))
    with pytest.raises(durable.StoreError):
        await writer.sync()
    assert len(calls) == 1
    writer.close()
    # The store goes on: the run resumes from what was committed.
    opened = await store.open("run-1")
    assert opened is not None
    assert opened.events == [started()]
    opened.writer.close()


@postgres
async def test_a_sync_cancelled_while_committing_is_waited_for_by_the_next(store: PostgresStore) -> None:
    writer = await create(store)
    writer.append(step(1))
    with trio.CancelScope() as scope:
        scope.cancel()
        await writer.sync()  # cancelled at once: its records may be in flight
    await writer.sync()
    writer.append(step(2))
    await writer.sync()
    writer.close()
    assert await store.read("run-1") == [started(), step(1), step(2)]


# -- group commit -------------------------------------------------------------------


@postgres
async def test_group_commit_serves_many_concurrent_writers_in_fewer_transactions(
    store: PostgresStore,
) -> None:
    writers = [await create(store, f"run-{i:02}") for i in range(50)]
    before = store.commit_transactions
    sync_calls = 0

    async def steps(writer: JournalWriter, task: int) -> None:
        nonlocal sync_calls
        for i in range(3):
            writer.append(step(100 * task + i))
            sync_calls += 1
            await writer.sync()

    async with trio.open_nursery() as nursery:
        for writer in writers:
            for task in (1, 2):
                nursery.start_soon(steps, writer, task)

    transactions = store.commit_transactions - before
    assert sync_calls == 300
    assert 0 < transactions < sync_calls
    for i, writer in enumerate(writers):
        assert writer.next_index == 7
        writer.close()
        events = await store.read(f"run-{i:02}")
        assert events is not None
        assert len(events) == 7
        assert sorted(e.seq for e in events[1:]) == [100, 101, 102, 200, 201, 202]  # type: ignore[union-attr]
        assert indexes(store, f"run-{i:02}") == list(range(7))


# -- commits sent from the event loop (the direct line) --------------------------------


def thread_batches(store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """The records of each batch the committer thread commits from now on."""
    batches: list[list[bytes]] = []
    run_batch = store._committer.run_batch

    def spy(jobs: list[Job], renew: list[PgWriter]) -> None:
        records = [record for job in jobs for record in job.records]
        if records:
            batches.append(records)
        run_batch(jobs, renew)

    monkeypatch.setattr(store._committer, "run_batch", spy)
    return batches


def lock_run_row(store: PostgresStore, run_id: str) -> psycopg.Connection[Any]:
    """Hold the run's row locked in an open transaction (the caller rolls it back)."""
    conn = psycopg.connect(pgutil.dsn())
    query = sql.SQL("SELECT 1 FROM {} WHERE run_id = %s FOR UPDATE").format(table(store, "durable_runs"))
    conn.execute(query, [run_id])
    return conn


@postgres
async def test_a_lone_run_commits_its_steps_from_the_event_loop(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await create(store)
    writer.append(step(1))
    await writer.sync()  # the first connects the line (in a thread)
    batches = thread_batches(store, monkeypatch)
    before = store.commit_transactions
    for seq in (2, 3, 4):
        writer.append(step(seq))
        writer.flush()  # handed to the committer, taken back by the sync
        await writer.sync()
    assert batches == []  # not one record went through the committer thread
    assert store.commit_transactions - before == 3
    writer.close()
    assert await store.read("run-1") == [started(), step(1), step(2), step(3), step(4)]
    assert indexes(store, "run-1") == [0, 1, 2, 3, 4]


@postgres
async def test_a_run_id_beyond_ascii_commits_from_the_event_loop(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = "commande-été-注文"
    writer = await create(store, run_id)
    writer.append(step(1))
    await writer.sync()  # connects the line
    batches = thread_batches(store, monkeypatch)
    writer.append(step(2))
    await writer.sync()
    assert batches == []  # on the direct line
    writer.close()
    assert await store.read(run_id) == [started(run_id), step(1), step(2)]


@postgres
async def test_a_flushed_step_is_committed_soon_for_others_to_see_while_its_activity_runs(
    store: PostgresStore, other: PostgresStore
) -> None:
    writer = await create_with_one_step(store)
    writer.append(step(2))
    writer.flush()  # the activity starts; no sync comes for a while
    with trio.fail_after(5):
        while await other.read("run-1") != [started(), step(1), step(2)]:
            await trio.sleep(0.01)
    writer.append(step(3))
    await writer.sync()
    writer.close()
    assert await store.read("run-1") == [started(), step(1), step(2), step(3)]


@postgres
async def test_a_run_that_finds_the_direct_line_busy_goes_through_the_committer(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await create(store)
    batches = thread_batches(store, monkeypatch)
    line = store._committer.direct
    assert line.acquire()  # another run's statement is on the line
    try:
        writer.append(step(1))
        await writer.sync()
    finally:
        line.release()
    assert len(batches) == 1
    writer.append(step(2))
    await writer.sync()
    assert len(batches) == 1  # the line was free again
    writer.close()
    assert await store.read("run-1") == [started(), step(1), step(2)]


@postgres
async def test_the_committer_serves_while_the_direct_line_cannot_connect(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await create(store)
    batches = thread_batches(store, monkeypatch)
    line = store._committer.direct

    def refused() -> Any:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(line.db, "connect", refused)
    writer.append(step(1))
    await writer.sync()
    writer.append(step(2))
    await writer.sync()  # no new attempt to connect for a while: the committer again
    assert len(batches) == 2
    writer.close()
    assert await store.read("run-1") == [started(), step(1), step(2)]


@postgres
async def test_a_direct_commit_whose_connection_dies_fails_the_writer_and_the_store_goes_on(
    store: PostgresStore,
) -> None:
    writer = await create_with_one_step(store)
    conn = store._committer.direct._conn
    assert conn is not None
    locker = lock_run_row(store, "run-1")  # the next statement waits on the line...
    writer.append(step(2))
    failures: list[str] = []

    async def sync() -> None:
        try:
            await writer.sync()
        except durable.StoreError as exc:
            failures.append(str(exc))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sync)
            await trio.sleep(0.1)
            # ... when its connection dies: whether it committed is unknown.
            pgutil.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
    finally:
        locker.rollback()
        locker.close()
    (failure,) = failures
    assert re.search(r"committing to PostgreSQL.*failed.*instead of retrying", failure), failure
    with pytest.raises(durable.StoreError, match="can no longer be written"):
        writer.append(step(3))
    writer.close()
    opened = await store.open("run-1")  # resumes from what was committed, on a new connection
    assert opened is not None
    assert opened.events == [started(), step(1)]
    opened.writer.append(step(2))
    await opened.writer.sync()
    opened.writer.close()
    assert await store.read("run-1") == [started(), step(1), step(2)]


@postgres
@pytest.mark.parametrize("idle", [False, True], ids=["just-used", "left-idle"])
async def test_a_direct_line_connection_the_server_closed_is_replaced_before_it_is_used(
    store: PostgresStore, idle: bool
) -> None:
    writer = await create_with_one_step(store)
    line = store._committer.direct
    conn = line._conn
    assert conn is not None
    if idle:
        line.max_idle = 0.1
        await trio.sleep(0.2)
        # It died while idle (a server restart, a firewall): unknown to the client.
        pgutil.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
    else:
        # A server restart right after a step (within the line's idle minute): the client
        # is not told, but the socket has the server's last words and its end to read.
        pgutil.execute("SELECT pg_terminate_backend(%s, 5000)", [conn.info.backend_pid])
    writer.append(step(2))
    await writer.sync()  # on a new connection: the run goes on
    assert line._conn is not conn
    writer.close()
    assert await store.read("run-1") == [started(), step(1), step(2)]


@postgres
async def test_a_pooled_connection_the_server_closed_is_replaced_before_a_group_commit(
    store: PostgresStore,
) -> None:
    writer = await create_with_one_step(store)
    pool = store._db._pool
    assert pool is not None
    # Every connection the pool holds now, closed by the server while idle in it.
    held = [pool.getconn() for _ in range(pool.get_stats()["pool_size"])]
    pids = [conn.info.backend_pid for conn in held]
    for conn in held:
        pool.putconn(conn)
    for pid in pids:
        pgutil.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    writer.append(ev.RunCompleted(cbor2.dumps(1), 2.0))  # an end goes through the committer
    await writer.sync()
    writer.close()
    assert await store.read("run-1") == [started(), step(1), ev.RunCompleted(cbor2.dumps(1), 2.0)]


@postgres
async def test_a_direct_commit_without_an_answer_in_time_fails_the_writer(store: PostgresStore) -> None:
    writer = await create(store)
    store._committer.direct.timeout = 0.3
    locker = lock_run_row(store, "run-1")
    try:
        writer.append(step(1))
        with pytest.raises(durable.StoreError, match=r"no answer within 0.3 s.*instead of retrying"):
            await writer.sync()
    finally:
        locker.rollback()
        locker.close()
    writer.close()
    # Whether the statement committed once the row was free is unknown to the writer;
    # either way the journal is whole: the run resumes from it.
    with trio.fail_after(10):
        while True:
            try:
                opened = await store.open("run-1")
            except durable.RunLockedError:  # the release may wait for the statement
                await trio.sleep(0.05)
                continue
            break
    assert opened is not None
    assert opened.events in ([started()], [started(), step(1)])
    opened.writer.close()


@postgres
async def test_a_direct_commit_is_finished_even_if_its_caller_is_cancelled(store: PostgresStore) -> None:
    writer = await create(store)
    writer.append(step(1))
    await writer.sync()  # the line is connected
    locker = lock_run_row(store, "run-1")
    writer.append(step(2))
    returned = trio.Event()
    scope = trio.CancelScope()

    async def sync_then_note() -> None:
        with scope:
            await writer.sync()
            returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sync_then_note)
        await trio.sleep(0.2)
        scope.cancel()  # the statement is on the line, waiting for the row
        await trio.sleep(0.2)
        assert not returned.is_set()  # still waiting for its outcome
        await trio.to_thread.run_sync(locker.rollback)
    locker.close()
    assert returned.is_set()  # shielded: it waited for the outcome, and the outcome was success
    writer.append(step(3))
    await writer.sync()
    writer.close()
    assert await store.read("run-1") == [started(), step(1), step(2), step(3)]


@postgres
async def test_records_flushed_while_the_run_is_on_the_direct_line_wait_their_turn(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await create_with_one_step(store)
    batches = thread_batches(store, monkeypatch)
    locker = lock_run_row(store, "run-1")
    writer.append(step(2))

    async def another_task() -> None:
        await trio.sleep(0.1)  # step 2 is on the line by now
        writer.append(step(3))
        writer.flush()  # must not reach the committer before step 2 is committed
        assert batches == []
        await writer.sync()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.sync)
        nursery.start_soon(another_task)
        await trio.sleep(0.3)
        await trio.to_thread.run_sync(locker.rollback)
    locker.close()
    writer.close()
    assert await store.read("run-1") == [started(), step(1), step(2), step(3)]


@postgres
async def test_a_sync_that_waited_for_a_failed_direct_commit_fails_too(store: PostgresStore) -> None:
    writer = await create(store)
    writer.append(step(1))
    await writer.sync()  # the line is connected
    locker = lock_run_row(store, "run-1")
    writer.append(step(2))
    outcomes: dict[str, str] = {}

    async def sync_as(name: str, delay: float) -> None:
        await trio.sleep(delay)
        try:
            await writer.sync()  # the second covers step 2 as well
            outcomes[name] = "ok"
        except durable.StoreError:
            outcomes[name] = "failed"

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sync_as, "first", 0)
            nursery.start_soon(sync_as, "second", 0.05)  # waits for the first's records
            await trio.sleep(0.1)
            conn = store._committer.direct._conn
            assert conn is not None
            pgutil.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
    finally:
        locker.rollback()
        locker.close()
    assert outcomes == {"first": "failed", "second": "failed"}
    writer.close()
    assert indexes(store, "run-1") == [0, 1]  # step 2 was never claimed durable


@postgres
async def test_the_direct_line_leaves_a_run_to_the_committer_while_it_holds_earlier_records() -> None:
    store = pgutil.fresh_store(pool_size=1)
    try:
        writer = await create(store)
        writer.append(step(1))
        await writer.sync()  # the line is connected
        pool = store._committer.db.prepare()
        held = threading.Event()

        def hold_the_pool() -> None:  # another reader (durable ls, say) has its connection
            with pool.connection():
                held.set()
                time.sleep(0.3)

        holder = threading.Thread(target=hold_the_pool)
        holder.start()
        held.wait()
        writer.append(step(2))
        writer.flush()
        await trio.sleep(0.05)  # the thread took step 2 and waits for a connection
        writer.append(step(3))
        writer.flush()  # still queued: the direct line must not send it before step 2
        writer.append(step(4))
        await writer.sync()
        await trio.to_thread.run_sync(holder.join)
        writer.close()
        assert await store.read("run-1") == [started(), step(1), step(2), step(3), step(4)]
    finally:
        await store.aclose()


@postgres
async def test_a_refusal_on_the_direct_line_reaches_a_cancelled_caller_and_every_later_sync(
    store: PostgresStore,
) -> None:
    writer = await create(store)
    writer.append(step(1))
    await writer.sync()  # the line is connected
    thief = psycopg.connect(pgutil.dsn())  # another worker takes the run, in a transaction
    thief.execute(
        sql.SQL("UPDATE {} SET epoch = epoch + 1 WHERE run_id = 'run-1'").format(table(store, "durable_runs"))
    )
    writer.append(step(2))
    writer.flush()  # taken back by the sync below
    scope = trio.CancelScope()
    heard: list[str] = []

    async def sync_cancelled() -> None:
        with scope:
            try:
                await writer.sync()
            except durable.StoreError as exc:
                heard.append(str(exc))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sync_cancelled)
            await trio.sleep(0.2)  # on the line, waiting for the row
            scope.cancel()
            await trio.sleep(0.1)
            await trio.to_thread.run_sync(thief.commit)  # the lease moved: the fence refuses
    finally:
        thief.close()
    assert len(heard) == 1
    assert "moved to another worker" in heard[0]  # the refusal, not the cancellation
    assert isinstance(writer, PgWriter)
    assert writer.failed
    with trio.fail_after(5), pytest.raises(durable.StoreError, match="moved to another worker"):
        await writer.sync()
    writer.close()
    assert indexes(store, "run-1") == [0, 1]


@postgres
async def test_an_outcome_appended_while_the_line_connects_ends_the_run(store: PostgresStore) -> None:
    writer = await create(store)  # the direct line is not connected yet
    writer.append(step(1))

    async def end_the_run() -> None:
        await trio.sleep(0)  # while the first sync connects the line
        writer.append(ev.RunCompleted(cbor2.dumps(1), 2.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.sync)
        nursery.start_soon(end_the_run)
    await writer.sync()
    writer.close()
    assert indexes(store, "run-1") == [0, 1, 2]
    assert run_row(store, "run-1")["status"] == "ended"
    assert await store.unfinished() == []


# -- the due index --------------------------------------------------------------------


def due_at(store: PostgresStore, run_id: str) -> float:
    rows = pgutil.execute(
        sql.SQL("SELECT due_at FROM {} WHERE run_id = %s").format(table(store, "durable_runs")), [run_id]
    )
    return float(rows[0][0])


@postgres
async def test_letting_a_run_go_gives_its_lease_up_so_another_worker_may_open_it_at_once(
    store: PostgresStore, other: PostgresStore
) -> None:
    writer = await create_with_one_step(store)
    due = time.time() + 3600
    await store.release(writer, due)
    assert run_row(store, "run-1")["owner"] is None
    assert due_at(store, "run-1") == due
    opened = await other.open("run-1")  # no lease to wait for
    assert opened is not None
    assert opened.events == [started(), step(1)]
    opened.writer.close()


@postgres
@pytest.mark.parametrize("how", ["open", "open_many"])
async def test_an_open_in_the_same_store_waits_for_a_release_on_its_way(
    store: PostgresStore, how: str
) -> None:
    """The lease of a run let go is still this store's until the release commits: an
    open of the run meanwhile (a Client's signal, ``recover()``) waits for it, instead
    of taking the lease from under the release (which then failed with "lease moved")."""
    writer = await create_with_one_step(store)
    locker = lock_run_row(store, "run-1")  # the release waits on the row...
    results: dict[str, Any] = {}

    async def let_go() -> None:
        await store.release(writer, time.time() + 3600)
        results["released"] = True

    async def open_it() -> None:
        try:
            if how == "open":
                results["opened"] = await store.open("run-1")
            else:
                (results["opened"],) = await store.open_many(["run-1"])
        except durable.StoreError as error:  # kept for the asserts: the row must be freed first
            results["opened"] = error

    waited: dict[str, Any] = {}
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(let_go)
            await trio.sleep(0.2)
            nursery.start_soon(open_it)  # ...while the run is opened again here
            await trio.sleep(0.2)
            waited.update(results)  # checked once the row is free: a failure must not hang
            await trio.to_thread.run_sync(locker.rollback)
    finally:
        locker.rollback()  # (again, if the nursery failed first)
        locker.close()
    assert waited == {}  # the open waited for the release, which waited for the row
    assert results["released"] is True
    opened = results["opened"]
    assert isinstance(opened, Opened), opened
    assert opened.events == [started(), step(1)]
    opened.writer.close()


@postgres
async def test_a_run_let_go_after_its_lease_moved_is_refused_and_left_as_it_is(
    store: PostgresStore, other: PostgresStore
) -> None:
    writer = await create(store)
    await writer.sync()
    expire_lease(store, "run-1")  # it stalled: its lease ran out unrenewed
    opened = await other.open("run-1")  # another worker takes the run over
    assert opened is not None
    due = due_at(store, "run-1")
    with pytest.raises(durable.StoreError, match=r"moved to another worker.*must give the run up") as caught:
        await store.release(writer, time.time() + 3600)
    assert caught.value.run_id == "run-1"
    assert run_row(store, "run-1")["owner"] == other.owner  # the new holder keeps it
    assert due_at(store, "run-1") == due
    with pytest.raises(durable.RunLockedError):
        await store.open("run-1")
    opened.writer.close()


@postgres
async def test_a_run_whose_holder_died_is_due_once_its_lease_runs_out(
    store: PostgresStore, other: PostgresStore
) -> None:
    writer = await create(store)
    await writer.sync()
    await store.release(writer, math.inf)  # waits for a signal
    opened = await other.open("run-1")  # a runtime takes it back (recovery, or a message)
    assert opened is not None
    assert due_at(store, "run-1") <= time.time()  # taking it made it due
    assert await store.due_runs(time.time(), 10) == []  # held
    expire_lease(store, "run-1")  # its holder died
    assert await store.due_runs(time.time(), 10) == ["run-1"]
    opened.writer.close()


@postgres
async def test_a_message_for_a_held_run_does_not_wait_for_a_transaction_on_its_row(
    store: PostgresStore, other: PostgresStore
) -> None:
    writer = await create(store)
    frozen = psycopg.connect(pgutil.dsn())  # a worker stopped halfway through renewing the lease
    done = trio.Event()

    async def post() -> None:
        await other.post("run-1", signal("m-1"))
        await other.wake("run-1")
        done.set()

    try:
        runs = table(store, "durable_runs")
        frozen.execute(sql.SQL("UPDATE {} SET epoch = epoch WHERE run_id = 'run-1'").format(runs))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(post)
            with trio.move_on_after(30):  # a hang guard: without it this waits for the frozen worker
                await done.wait()
            in_time = done.is_set()
            frozen.rollback()  # lets a post that waited go on
        assert in_time
    finally:
        frozen.rollback()
        frozen.close()
    assert await store.messages("run-1") == [signal("m-1")]
    writer.close()


@postgres
async def test_the_due_queries_read_the_index_not_the_table(store: PostgresStore) -> None:
    (await create(store, "seed")).close()  # the tables exist
    runs = table(store, "durable_runs")
    now = time.time()
    # 100,000 runs: most ended, many waiting, some due, a few of those held.
    pgutil.execute(
        sql.SQL(
            "INSERT INTO {} (run_id, workflow, status, owner, epoch, lease_expires, next_index, due_at)"
            " SELECT 'r' || i, 'wf', CASE WHEN i %% 100 < 80 THEN 'ended' ELSE 'open' END,"
            " CASE WHEN i %% 100 = 99 THEN 'someone' END, 1,"
            " CASE WHEN i %% 100 = 99 THEN now() + interval '1 hour' END, 1,"
            " CASE WHEN i %% 100 < 98 THEN %s + i ELSE %s - i END"
            " FROM generate_series(1, 100000) AS i"
        ).format(runs),
        [now, now],
    )
    pgutil.execute(sql.SQL("VACUUM ANALYZE {}").format(runs))
    from durable._store_postgres import due  # noqa: PLC0415 - the queries themselves

    queries = [
        (due._DUE + due._ORDER, [now, 100]),
        (due._DUE + " AND run_id = ANY(%s)" + due._ORDER, [now, ["r5", "r98", "r99"], 100]),
        (due._NEXT_DUE, [now]),
    ]
    for query, params in queries:
        plan = "\n".join(row[0] for row in pgutil.execute(sql.SQL("EXPLAIN ") + store._db.q(query), params))
        assert "Seq Scan" not in plan, plan
        assert "Index" in plan, plan
    plan = "\n".join(
        row[0] for row in pgutil.execute(sql.SQL("EXPLAIN ") + store._db.q(due._DUE + due._ORDER), [now, 100])
    )
    assert "durable_runs_due" in plan, plan
    assert len(await store.due_runs(now, 100)) == 100
    assert await store.next_due(now) == now + 80


# -- the inbox and notifications ------------------------------------------------------


@postgres
async def test_messages_posted_by_another_worker_wait_for_the_holder(
    store: PostgresStore, other: PostgresStore
) -> None:
    writer = await create(store)
    await other.post("run-1", signal("m-1"))
    await other.post("run-1", signal("m-1"))  # the same message again: no duplicate
    await other.post("run-1", signal("m-2"))
    assert await store.messages("run-1") == [signal("m-1"), signal("m-2")]
    assert await store.runs_with_messages() == {"run-1"}
    await store.remove_messages("run-1", ["m-1", "m-2"])
    assert await other.messages("run-1") == []
    assert await other.runs_with_messages() == set()
    with pytest.raises(durable.UnknownRunError, match="nope"):
        await other.post("nope", signal("m-3"))
    writer.close()


async def _wait_for_change(store: PostgresStore, woke: trio.Event) -> None:
    await store.wait_for_change(3600)
    woke.set()


async def _listening(store: PostgresStore, waiters: int = 1) -> None:
    """Until ``store`` listens and its waiters wait (so nothing that follows can be missed)."""
    with trio.fail_after(60):
        while not (store._listener.listening.is_set() and len(store._listener.waiters) >= waiters):
            await trio.sleep(0.01)


@postgres
@pytest.mark.parametrize("change", ["post", "create", "release", "let go", "wake"])
async def test_wait_for_change_wakes_up_for_a_change_made_by_another_worker(
    store: PostgresStore, other: PostgresStore, change: str
) -> None:
    held = await create(other, "held")
    await store.run_ids()
    woke = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_wait_for_change, store, woke)
        await _listening(store)
        if change == "post":
            await other.post("held", signal("m-1"))
        elif change == "create":
            (await create(other, "new")).close()
        elif change == "let go":
            await other.release(held, time.time() + 3600)
        elif change == "wake":
            await other.wake("held")
        else:
            await trio.to_thread.run_sync(held.close)
        with trio.fail_after(60):  # a hang guard, not a timing assertion
            await woke.wait()
    held.close()


@postgres
async def test_wait_for_change_times_out_and_is_cancellable(store: PostgresStore) -> None:
    await store.wait_for_change(0.05)
    with trio.move_on_after(0.05) as scope:
        await store.wait_for_change(3600)
    assert scope.cancelled_caught
    assert store._listener.waiters == []


@postgres
async def test_stores_on_other_schemas_do_not_wake_each_other(store: PostgresStore) -> None:
    elsewhere = pgutil.fresh_store()
    try:
        (await create(elsewhere)).close()
        woke = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_wait_for_change, store, woke)
            await _listening(store)
            await elsewhere.post("run-1", signal("m-1"))
            await trio.sleep(0.2)  # a wrong wake-up would come within it
            assert not woke.is_set()
            nursery.cancel_scope.cancel()
    finally:
        await elsewhere.aclose()


# -- damage ---------------------------------------------------------------------------


def _flip(store: PostgresStore, run_id: str, idx: int, at: int = 12) -> None:
    """Flip the bits of one byte of a stored record (``at`` 12 is inside the payload)."""
    pgutil.execute(
        sql.SQL(
            "UPDATE {} SET record = set_byte(record, %s, get_byte(record, %s) # 255)"
            " WHERE run_id = %s AND idx = %s"
        ).format(table(store, "durable_records")),
        [at, at, run_id, idx],
    )


@postgres
@pytest.mark.parametrize("idx", [0, 1, 2], ids=["first", "middle", "last"])
async def test_a_damaged_record_is_corruption_never_a_torn_tail(
    store: PostgresStore, other: PostgresStore, idx: int
) -> None:
    writer = await create(store)
    writer.append(step(1))
    writer.append(step(2))
    await writer.sync()
    writer.close()
    _flip(store, "run-1", idx)
    for call in (store.read, other.read):
        with pytest.raises(durable.JournalCorruptError, match=rf"run 'run-1'.*record {idx}") as info:
            await call("run-1")
        assert info.value.record == idx
    epoch = run_row(store, "run-1")["epoch"]
    with pytest.raises(durable.JournalCorruptError):
        await other.open("run-1")
    assert run_row(store, "run-1")["epoch"] == epoch  # the refused open took no lease
    assert run_row(store, "run-1")["owner"] is None


@postgres
@pytest.mark.parametrize("missing", [1, 2], ids=["middle", "last"])
async def test_a_missing_record_is_corruption(store: PostgresStore, missing: int) -> None:
    writer = await create(store)
    writer.append(step(1))
    writer.append(step(2))
    await writer.sync()
    writer.close()
    pgutil.execute(
        sql.SQL("DELETE FROM {} WHERE run_id = 'run-1' AND idx = %s").format(table(store, "durable_records")),
        [missing],
    )
    with pytest.raises(durable.JournalCorruptError, match=f"record {missing}") as info:
        await store.read("run-1")
    assert info.value.record == missing
    with pytest.raises(durable.JournalCorruptError):
        await store.open("run-1")


# -- errors and naming (no server needed) ----------------------------------------------


async def test_an_unreachable_server_is_a_clear_store_error() -> None:
    store = PostgresStore("postgresql://someone:s3cret@127.0.0.1:1/nowhere", connect_timeout=2)
    try:
        with pytest.raises(durable.StoreError) as info:
            await store.run_ids()
        message = str(info.value)
        assert "cannot connect to PostgreSQL at 127.0.0.1:1" in message
        assert "\n" not in message
        assert "s3cret" not in message
        assert info.value.__cause__ is None
    finally:
        await store.aclose()


def test_a_bad_dsn_is_a_clear_store_error() -> None:
    with pytest.raises(durable.StoreError, match="invalid PostgreSQL connection string"):
        PostgresStore("this is not a dsn")


def test_an_option_given_twice_with_two_values_is_refused() -> None:
    # In the DSN and as a keyword: which should win is not for the store to guess.
    dsn = f"{pgutil.DEFAULT_DSN}?schema=one&lease_ttl=5s"
    with pytest.raises(ValueError, match=r"lease_ttl is given twice, lease_ttl='7s' and \?lease_ttl=5s"):
        PostgresStore(dsn, lease_ttl="7s")
    with pytest.raises(ValueError, match=r"schema is given twice, schema='two' and \?schema=one"):
        PostgresStore(dsn, schema="two")
    same = PostgresStore(dsn, schema="one", lease_ttl=5)  # the same values twice: fine
    assert same.schema == "one"


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="lease_ttl"):
        PostgresStore(pgutil.DEFAULT_DSN, lease_ttl="soon")
    with pytest.raises(ValueError, match="lease_ttl must be positive"):
        PostgresStore(pgutil.DEFAULT_DSN, lease_ttl=0)
    with pytest.raises(ValueError, match="pool_size"):
        PostgresStore(pgutil.DEFAULT_DSN, pool_size=0)
    with pytest.raises(ValueError, match="schema"):
        PostgresStore(pgutil.DEFAULT_DSN, schema="")
    assert PostgresStore(pgutil.DEFAULT_DSN, lease_ttl="2m").lease_ttl == 120


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://alice:s3cret@db.example:5433/app", "postgresql://alice:***@db.example:5433/app"),
        ("postgresql://alice@db.example/app?password=s3cret", "password=***"),
        ("host=db.example user=alice password=s3cret dbname=app", "password=***"),
        ("postgresql://db.example/app", "postgresql://db.example/app"),
    ],
)
def test_repr_shows_the_dsn_without_the_password(dsn: str, shown: str) -> None:
    text = repr(PostgresStore(dsn, schema="jobs"))
    assert "s3cret" not in text
    assert shown in text
    assert text.startswith("PostgresStore(") and "schema='jobs'" in text


# -- the runtime on PostgreSQL --------------------------------------------------------

STEPS: list[str] = []


@durable.activity
async def _note(label: str) -> str:
    STEPS.append(durable.activity_info().idempotency_key)
    return label


@durable.workflow(name="tests.postgres.chain")
def _chain(n: int):  # type: ignore[no-untyped-def]
    done = yield _note(f"step {n}")
    if n < 2:
        yield durable.continue_as_new(n + 1)
    decision = yield durable.wait_signal("decision")
    return [done, decision]


@postgres
async def test_a_workflow_runs_on_postgres_and_takes_a_signal_sent_by_another_worker(
    store: PostgresStore, other: PostgresStore
) -> None:
    STEPS.clear()
    async with durable.Runtime(store, poll=0.05) as holder, durable.Runtime(other, poll=0.05) as sender:
        handle = await holder.start(_chain, 0, id="chain")
        with trio.fail_after(60):  # a hang guard
            while not STEPS or len(STEPS) < 3:
                await trio.sleep(0.02)
            with pytest.raises(durable.RunLockedError):
                await other.open("chain")
            await sender.signal("chain", "decision", "yes")
            assert await handle.result() == ["step 2", "yes"]
    assert STEPS == ["chain/0", "chain/1", "chain/2"]
    assert await store.unfinished() == []
    assert await other.runs_with_messages() == set()
    events = await other.read("chain")
    assert events is not None
    assert isinstance(events[-1], ev.RunCompleted)


@postgres
def test_a_dsn_with_store_options_configures_the_store_everywhere_a_store_is_named() -> None:
    pgutil.require()
    schema = pgutil.fresh_schema()
    store = store_from(f"{pgutil.dsn()}?schema={schema}&lease_ttl=2s&connect_timeout=5")
    assert isinstance(store, PostgresStore)
    assert store.schema == schema
    assert store.lease_ttl == 2.0
    assert f"test?connect_timeout=5', schema='{schema}'" in repr(store)
    with pytest.raises(ValueError, match="lease_ttl"):
        store_from(f"{pgutil.dsn()}?lease_ttl=soon")


@durable.activity(name="tests.pg.blocker")
async def _blocker(gate: str) -> str:
    await _GATES[gate].wait()
    return gate


_GATES: dict[str, trio.Event] = {}


@durable.workflow(name="tests.pg.blocked")
def _blocked(gate: str):  # type: ignore[no-untyped-def]
    return (yield _blocker(gate))


async def _events(store: PostgresStore, run_id: str) -> list[ev.Event]:
    return await store.read(run_id) or []


@postgres
async def test_a_step_in_flight_is_visible_to_other_processes_before_it_completes() -> None:
    # So that `durable show` from elsewhere, and the timeline after a SIGKILL, see it.
    store = pgutil.fresh_store()
    reader = pgutil.store_on(store.schema)
    gate = uuid.uuid4().hex
    _GATES[gate] = trio.Event()
    try:
        async with durable.Runtime(store, poll=None) as runtime:
            handle = await runtime.start(_blocked, gate, id="in-flight")
            with trio.fail_after(30):  # a hang guard, not a timing assertion
                while not any(
                    isinstance(e, ev.ActivityScheduled) for e in await reader.read("in-flight") or []
                ):
                    await trio.sleep(0.01)
            _GATES[gate].set()
            assert await handle.result() == gate
    finally:
        del _GATES[gate]
        await reader.aclose()
        await store.aclose()


@postgres
async def test_open_many_claims_free_runs_in_one_go_and_skips_held_ones(
    store: PostgresStore, other: PostgresStore
) -> None:
    for run_id in ("a", "b", "c"):
        (await create(store, run_id)).close()
    held = await other.open("b")
    assert held is not None
    opened = await store.open_many(["a", "b", "c", "nope"])
    assert isinstance(opened[0], durable.lowlevel.Opened) and opened[0].events == [started("a")]
    assert isinstance(opened[1], durable.RunLockedError)
    assert isinstance(opened[2], durable.lowlevel.Opened)
    assert opened[3] is None  # no such run
    for result in (opened[0], opened[2]):
        assert isinstance(result, durable.lowlevel.Opened)
        result.writer.append(step(1))
        await result.writer.sync()
        result.writer.close()
    held.writer.close()
    assert await store.read("a") == [started("a"), step(1)]


@postgres
async def test_a_change_made_between_looking_and_waiting_is_not_missed(
    store: PostgresStore, other: PostgresStore
) -> None:
    await store.wait_for_change(0.01)  # the listener runs from here on
    token = store.change_token()  # a worker takes the token, then looks: nothing to do
    assert await store.unfinished() == []
    (await create(other, "late")).close()  # a run is created before the worker waits
    with trio.fail_after(30):  # a hang guard: without the token this waits out its hour
        await store.wait_for_change(3600, since=token)
    assert await store.unfinished() == ["late"]


@postgres
async def test_a_worker_frozen_in_a_transaction_on_a_run_does_not_stall_others(
    store: PostgresStore, other: PostgresStore
) -> None:
    (await create(store, "frozen")).close()
    runs = sql.Identifier(store.schema, "durable_runs")
    frozen = psycopg.connect(pgutil.dsn())  # a worker stopped halfway through renewing its lease
    try:
        frozen.execute(sql.SQL("UPDATE {} SET epoch = epoch WHERE run_id = 'frozen'").format(runs))
        with trio.fail_after(30):  # a hang guard: without NOWAIT/SKIP LOCKED this waits for ever
            with pytest.raises(durable.RunLockedError, match="frozen"):
                await other.open("frozen")
            [skipped] = await other.open_many(["frozen"])
            assert isinstance(skipped, durable.RunLockedError)
    finally:
        frozen.rollback()
        frozen.close()
    opened = await other.open("frozen")
    assert opened is not None
    opened.writer.close()


@postgres
async def test_the_store_s_sessions_end_a_transaction_left_idle_past_the_lease(store: PostgresStore) -> None:
    (await create(store)).close()  # the tables exist
    setting = await store._db.run(
        "reading a setting",
        lambda conn: conn.execute("SHOW idle_in_transaction_session_timeout").fetchone(),
        missing=None,
    )
    assert setting is not None and setting[0] in ("30s", "30000ms")
