"""PostgreSQL for the tests: where the server is, and stores on fresh schemas.

The server is ``$DURABLE_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
A test that needs it and cannot reach it is skipped, except in CI (``CI=true``),
where PostgreSQL tests must run: there it fails.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

try:
    import psycopg
    from psycopg import sql
except ImportError:  # reported by unreachable_reason()
    psycopg = None  # type: ignore[assignment]

from durable._core import codec as _codec
from durable._store_postgres import PostgresStore

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

_unreachable: list[str | None] = []  # cached: [reason] once checked, reason None if reachable


def dsn() -> str:
    """The DSN of the test server."""
    return os.environ.get("DURABLE_TEST_PG") or DEFAULT_DSN


def unreachable_reason() -> str | None:
    """Why the test server cannot be reached, or None if it can (checked once per process)."""
    if not _unreachable and psycopg is None:
        _unreachable.append("psycopg is not installed (pip install -e '.[test]')")
    if not _unreachable:
        try:
            with psycopg.connect(dsn(), connect_timeout=3):
                pass
        except Exception as exc:
            _unreachable.append(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        else:
            _unreachable.append(None)
    return _unreachable[0]


def available() -> bool:
    """Whether the test server can be reached."""
    return unreachable_reason() is None


def require() -> None:
    """Skip the current test if the server cannot be reached (fail instead in CI)."""
    reason = unreachable_reason()
    if reason is None:
        return
    message = f"PostgreSQL is not reachable at {dsn()}: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run the PostgreSQL tests)")
    pytest.skip(message)


def fresh_schema() -> str:
    """A schema name no other test uses."""
    return f"durable_test_{uuid.uuid4().hex[:16]}"


def execute(query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on the test server (autocommit); its rows, if it returns any."""
    with psycopg.connect(dsn(), autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []


def drop_schema(schema: str) -> None:
    execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


class _FreshStore(PostgresStore):
    """A store on its own schema, dropped when the store is closed."""

    async def aclose(self) -> None:
        closed = self._db.closed
        await super().aclose()
        if not closed:
            drop_schema(self.schema)


def fresh_store(**options: Any) -> PostgresStore:
    """A store on a fresh schema (created on first use, dropped by ``aclose()``).

    Skips the test if the server cannot be reached (fails in CI).
    """
    require()
    schema = options.pop("schema", None) or fresh_schema()
    return _FreshStore(dsn(), schema=schema, **options)


def store_on(schema: str, **options: Any) -> PostgresStore:
    """Another store on an existing test schema (a second worker); its ``aclose`` keeps the schema."""
    require()
    return PostgresStore(dsn(), schema=schema, **options)


def journal_bytes(store: PostgresStore, run_id: str) -> bytes:
    """A run's journal as journal contract v1 bytes: the header, then the stored records in order."""
    rows = execute(
        sql.SQL("SELECT record FROM {} WHERE run_id = %s ORDER BY idx").format(
            sql.Identifier(store.schema, "durable_records")
        ),
        [run_id],
    )
    return _codec.encode_header() + b"".join(bytes(row[0]) for row in rows)
