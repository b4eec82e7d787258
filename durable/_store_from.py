"""Which store a path, a PostgreSQL DSN or nothing names: :func:`store_from`.

Apart from the runtime so that the CLI's reading verbs can open a store without
importing trio and the executor (most of a short verb's start-up).
"""

from __future__ import annotations

import os

from ._core.errors import StoreError
from ._store import CodecOption, Store
from ._store_file import FileStore
from ._store_postgres import PostgresStore, looks_like_dsn, mistyped_url

#: The embedded default store's directory, relative to the working directory.
DEFAULT_STORE_PATH = ".durable"


def default_store() -> Store:
    """The embedded default: a FileStore in ``$DURABLE_STORE`` or ``./.durable``."""
    return store_from(os.environ.get("DURABLE_STORE") or DEFAULT_STORE_PATH)


def store_from(store: Store | str | os.PathLike[str] | None, *, codec: CodecOption = None) -> Store:
    """A :class:`Store` from a store, a directory path, a PostgreSQL DSN
    (``postgresql://user@host/db``, optionally with ``?schema=...&lease_ttl=30s``
    for the store's options, or a libpq ``host=db dbname=app`` string), or None
    (the default store). ``codec`` is the payload codecs of a store made from a path
    or a DSN."""
    if codec is not None and (store is None or isinstance(store, Store)):
        raise TypeError("codec= goes with a store path or DSN; pass it to the store you make instead")
    if store is None:
        return default_store()
    if isinstance(store, Store):
        return store
    if isinstance(store, str | os.PathLike):
        text = os.fspath(store)
        mistyped = mistyped_url(text)
        if mistyped is not None:  # never a directory named after a password
            raise StoreError(mistyped)
        if looks_like_dsn(text):  # a URL or a libpq key=value string: never a directory name
            try:
                return PostgresStore(text, codec=codec)
            except ImportError as exc:  # psycopg is an optional dependency
                raise StoreError(str(exc)) from None
        return FileStore(text, codec=codec)
    raise TypeError(f"store must be a durable store or a directory path (got {store!r})")
