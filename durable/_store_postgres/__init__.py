"""A store in PostgreSQL, shared by many worker processes on many machines.

One module per concern, each with its own theory of operation:

- ``store.py``: :class:`PostgresStore`, the facade that composes the others;
- ``dsn.py``: connection strings, the store's options in them, passwords kept out of sight;
- ``schema.py``: the tables, making them on the first write (reads create nothing), versions;
- ``connection.py``: the connection pool, and database calls from trio in threads;
- ``journal.py``: reading journals, checked exactly like a file's, and listing runs;
- ``leases.py``: taking runs under a lease, renewing it, fencing every write on its epoch;
- ``writer.py``: one run's journal writer, buffering appends;
- ``committer.py``: the group-commit thread that writes what all the writers queued;
- ``listener.py``: the ``LISTEN`` thread that wakes workers when something changed;
- ``inbox.py``: messages for runs another worker holds;
- ``due.py``: the due index, which runs are due now and when the next one is.

``import durable`` imports only this file, ``store.py`` and ``dsn.py``: psycopg and the
other modules load when the first :class:`PostgresStore` is made.
"""

from .dsn import looks_like_dsn as looks_like_dsn
from .dsn import mistyped_url as mistyped_url
from .store import PostgresStore as PostgresStore
