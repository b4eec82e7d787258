"""The embedded default store: one journal file per run in a directory.

Layout: ``<path>/runs/<run id>.journal``, run ids percent-encoded to stay safe
file names; messages for runs held by another process (signals, cancel
requests) wait in ``<path>/inbox/<run id>.<time>-<message id>.message``, each
a small file in the journal format holding the one event.

Durability follows the recovery rules of journal contract v1:

* a journal is created with ``O_EXCL`` and mode 0600, its header and first
  record fsynced, then the directory fsynced, so a run that ``start`` reported
  can never vanish (a new file is not durable until its directory is);
* a run is appended to by one process at a time, enforced with ``flock``. A
  lock is taken on a descriptor, so after taking it durable checks that the
  descriptor is still the file at the journal's path (``continue_as_new``
  renames a fresh journal over it), and opens again if not. Whoever renames or
  unlinks a journal holds the lock of the file at that path;
* opening a run truncates a torn tail and fsyncs the truncation before the
  first new append, so stale bytes can never come back behind new records;
* an fsync error is fatal for the journal, never retried.

``sync`` picks what :meth:`JournalWriter.sync` costs: ``"always"`` calls
fdatasync on the journal right away, ``"batch"`` joins a group commit that
fsyncs every journal with queued records in one round (issued in parallel from
worker threads, which the filesystem groups), ``"none"`` only writes.

Nothing in the store is trusted blindly: files are opened without following
symbolic links and must be regular files, a journal must name the run its file
is named after, and the store's directories must be private to the user running
durable (a directory other users may write is refused). What is wrong with one
run's entry is that run's error (:class:`JournalUnreadableError`, a
:class:`~durable.JournalCorruptError`); every other run goes on.

All file-system calls go through a :class:`~durable._fs.FileSystem`, so the
crash simulator can run this very code on a simulated disk.

One module per concern, each with its own theory of operation:

- ``store.py``: :class:`FileStore`, the facade that composes the others;
- ``names.py``: run ids to safe file names and back;
- ``directory.py``: the store's directories, made on first use and checked private;
- ``journals.py``: creating, opening (and recovering) and restarting journals, each under its lock;
- ``commit.py``: one journal's writer, and the group commit of the ``"batch"`` sync mode;
- ``reading.py``: reading journals without locking them, listing runs, the error of an unreadable one;
- ``inbox.py``: messages for runs held by another process.
"""

from .store import FileStore as FileStore
