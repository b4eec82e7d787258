"""The inbox: messages (signals, cancel requests) for runs another process holds.

A message waits in ``<store>/inbox/<journal stem>.<time>-<message id>.message``,
a small file in the journal format holding the one event. It is written whole
under a staged name, fsynced, then renamed into place and the directory
fsynced, so a message is there whole or not at all; a re-post of a message id
that is still waiting is a no-op. Posting to a run that does not exist raises
:class:`~durable.UnknownRunError`. The holder of the run journals the messages,
then removes them (``durable/_inbox.py`` holds that protocol, the same for every
store).

The inbox is checked private like the store's other directories, when reading
as when posting: a message found there is journaled, so an inbox others may
write would let them plant a cancel request.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Collection

from .._core import events as ev
from .._core.codec import encode_header, encode_record, scan
from .._core.errors import JournalCorruptError, StoreError, UnknownRunError
from .._core.ids import check_run_id
from .._fs import NotRegularFileError
from .._store import Store
from .directory import Directory
from .names import _MESSAGE, _MIN_JOURNAL, _STAGED, _SUFFIX, _file_name, _is_hashed
from .reading import Reader, unreadable


class Inbox:
    """The messages of one store's runs."""

    def __init__(self, directory: Directory, reader: Reader, store: Store) -> None:
        self.dir = directory
        self.fs = directory.fs
        self.reader = reader
        #: The store, for :class:`~durable.UnknownRunError`.
        self.store = store
        self._ready = False

    async def post(self, run_id: str, message: ev.Message) -> None:
        self.dir.prepare()
        fs = self.fs
        inbox = self.dir.inbox
        if self.reader.size(self.dir.journal_path(run_id)) <= _MIN_JOURNAL:
            raise UnknownRunError(run_id, self.store)
        if any(message.message_id == found for found, _ in self._message_files(run_id)):
            return
        self._prepare()
        stem = _file_name(run_id)[: -len(_SUFFIX)]
        name = f"{stem}.{time.time_ns():020d}-{message.message_id}{_MESSAGE}"
        staged = os.path.join(inbox, _STAGED + message.message_id)
        try:
            fd = fs.replace_file(staged)  # unique to this message; O_EXCL, no link followed
            try:
                fs.write(fd, encode_header() + encode_record(message, 0, -1))
                fs.fdatasync(fd)
            finally:
                fs.close(fd)
            fs.rename(staged, os.path.join(inbox, name))
            fs.fsync_dir(inbox)
        except OSError as exc:
            raise StoreError(
                f"leaving a message for run {run_id!r} in {inbox} failed: {exc}",
                run_id=run_id,
                path=inbox,
            ) from exc

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            self.fs.makedirs(self.dir.inbox)
        except OSError as exc:
            raise StoreError(f"cannot make the inbox of the durable store {self.dir.path!r}: {exc}") from None
        self.dir.check_private(self.dir.inbox)
        self._ready = True

    async def messages(self, run_id: str) -> list[ev.Message]:
        found = []
        for _, name in self._message_files(run_id):
            path = os.path.join(self.dir.inbox, name)
            try:
                fd = self.fs.open(path, write=False)
            except (FileNotFoundError, NotRegularFileError):
                continue  # taken meanwhile; or no message durable wrote (never followed)
            except OSError as exc:
                raise unreadable(exc, path, run_id) from None
            try:
                events = scan(self.fs.read(fd), path).events
            except OSError as exc:
                raise unreadable(exc, path, run_id) from None
            except JournalCorruptError:
                continue  # garbage in a message's name: not a message (see below)
            finally:
                self.fs.close(fd)
            if len(events) != 1 or not isinstance(events[0], ev.Message):
                # Not a message durable wrote (it writes each one whole, then renames it
                # into place): skipped, so that it does not keep the run from its others.
                continue
            found.append(events[0])
        return found

    async def remove_messages(self, run_id: str, message_ids: Collection[str]) -> None:
        # No directory fsync: a removal that a crash undoes makes the message be
        # found again, and skipped, since its id is in the journal.
        gone = set(message_ids)
        for message_id, name in self._message_files(run_id):
            if message_id in gone:
                path = os.path.join(self.dir.inbox, name)
                try:
                    self.fs.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise StoreError(
                        f"cannot remove the message {path} for run {run_id!r}: {exc}",
                        run_id=run_id,
                        path=path,
                    ) from exc

    async def runs_with_messages(self) -> set[str]:
        stems = {name.rpartition(".")[0] for name in self._message_names()}
        ids = set()
        for stem in stems:
            if _is_hashed(stem):
                run_id = self.reader.first_run_id(os.path.join(self.dir.runs, stem + _SUFFIX))
            else:
                run_id = urllib.parse.unquote(stem)
            if run_id is not None:
                ids.add(run_id)
        return ids

    def _message_names(self) -> list[str]:
        """The inbox's message files, oldest first (without the suffix)."""
        inbox = self.dir.inbox
        try:
            names = self.fs.listdir(inbox)
        except OSError as exc:
            raise StoreError(f"cannot list the messages in {inbox}: {exc}", path=inbox) from None
        messages = sorted(n[: -len(_MESSAGE)] for n in names if n.endswith(_MESSAGE))
        if messages and not self._ready:
            # Messages are read, and journaled, from here: an inbox others may write
            # is refused when reading as when posting (a planted cancel request).
            # Checked once, as a store that posts checks it once.
            self.dir.check_private(inbox)
            self._ready = True
        return messages

    def _message_files(self, run_id: str) -> list[tuple[str, str]]:
        """``(message id, file name)`` of each message waiting for the run, oldest first."""
        stem = _file_name(check_run_id(run_id))[: -len(_SUFFIX)]
        found = []
        for name in self._message_names():
            owner, _, stamp = name.rpartition(".")
            if owner == stem:
                found.append((stamp.partition("-")[2], name + _MESSAGE))
        return found
