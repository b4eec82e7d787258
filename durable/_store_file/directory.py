"""The store's directory: ``runs/`` and ``inbox/`` in it, made on first use.

Nothing in a store is trusted blindly, starting with its directories: each must
be owned by the user running durable and writable by nobody else, or a planted
journal or message would be read (and a planted cancel request journaled). The
store's directory and ``runs/`` are checked the first time a journal is created
or opened, ``inbox/`` the first time a message is posted or found (``inbox.py``).
"""

from __future__ import annotations

import os

from .._core.errors import StoreError, UnsafeStoreError
from .._core.ids import check_run_id
from .._fs import FileSystem
from .names import _file_name


class Directory:
    """A store's directory, and the paths of its journals."""

    def __init__(self, path: str, fs: FileSystem) -> None:
        self.path = path
        self.fs = fs
        self.runs = os.path.join(path, "runs")
        self.inbox = os.path.join(path, "inbox")
        self._ready = False

    def journal_path(self, run_id: str) -> str:
        """Where the journal of ``run_id`` lives."""
        return os.path.join(self.runs, _file_name(check_run_id(run_id)))

    def prepare(self) -> None:
        """Make the store's directory and ``runs/`` (once), and check that they are private."""
        if self._ready:
            return
        try:
            self.fs.makedirs(self.runs)
        except FileExistsError:
            raise StoreError(
                f"cannot use {self.path!r} as a durable store: it (or a part of the path) is a "
                "file, not a directory",
                path=self.path,
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot use {self.path!r} as a durable store: {exc}", path=self.path) from None
        self.check_private(self.path)
        self.check_private(self.runs)
        self._ready = True

    def check_private(self, directory: str) -> None:
        """Refuse a store directory that another user owns or that group or others may write."""
        try:
            owner, mode = self.fs.owner_and_mode(directory)
        except OSError as exc:
            raise StoreError(f"cannot use {self.path!r} as a durable store: {exc}", path=self.path) from None
        me = os.geteuid()
        if owner != me:
            raise UnsafeStoreError(
                directory,
                self.path,
                owner,
                mode,
                f"is owned by another user than the one running durable (uid {me})",
                f"Give it to this user (`chown {me} {directory}`), or use a directory of its own.",
            )
        if mode & 0o022:
            who = "group and others" if mode & 0o022 == 0o022 else "group" if mode & 0o020 else "others"
            raise UnsafeStoreError(
                directory,
                self.path,
                owner,
                mode,
                f"is writable by its {who}",
                f"Make it private: `chmod 700 {directory}`.",
            )


def read_whole(fs: FileSystem, path: str) -> bytes:
    """The content of a cache's file (the starts log, the ends log), b"" if it cannot
    be read: a cache that is missing or unreadable is only a slower listing."""
    try:
        fd = fs.open(path, write=False)
    except OSError:
        return b""
    try:
        return fs.read(fd)
    except OSError:
        return b""
    finally:
        fs.close(fd)
