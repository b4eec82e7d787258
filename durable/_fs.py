"""The file-system operations :class:`~durable.FileStore` needs, behind one small object.

:class:`OsFileSystem` performs them on the real disk. The crash simulator
(``sim``) passes its own implementation with the same methods, which keeps
written-but-unsynced bytes apart from durable ones and can crash at any of
these calls, so the simulator tests the real FileStore code, not a model of it.
"""

from __future__ import annotations

import concurrent.futures
import errno
import fcntl
import os
from collections.abc import Iterable
from typing import Protocol

import trio


class FileSystem(Protocol):
    """What FileStore asks of a file system. Paths are ``str``; files are int descriptors."""

    def create(self, path: str) -> int:
        """Create ``path`` exclusively (mode 0600) for reading and appending; FileExistsError if present."""
        ...

    def open(self, path: str, *, write: bool) -> int:
        """Open an existing file (for appending if ``write``); FileNotFoundError if missing."""
        ...

    def replace_file(self, path: str) -> int:
        """Create or empty ``path`` (mode 0600) for reading and appending."""
        ...

    def rename(self, source: str, target: str) -> None:
        """Rename ``source`` over ``target`` atomically (durable once the directory is fsynced)."""
        ...

    def read(self, fd: int) -> bytes:
        """The whole content of an open file."""
        ...

    def write(self, fd: int, data: bytes) -> None:
        """Append all of ``data``."""
        ...

    def fdatasync(self, fd: int) -> None:
        """Make the file's content durable."""
        ...

    async def fdatasync_many(self, fds: Iterable[int]) -> None:
        """Make several files durable, concurrently where that is faster (group commit)."""
        ...

    def truncate(self, fd: int, size: int) -> None: ...

    def lock(self, fd: int) -> bool:
        """Take an exclusive lock on an open file without waiting; False if someone holds it."""
        ...

    def close(self, fd: int) -> None: ...

    def unlink(self, path: str) -> None: ...

    def makedirs(self, path: str) -> None:
        """Create a directory (mode 0700) and its missing parents, fsyncing each new entry."""
        ...

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (files created or removed in it) durable."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in a directory; [] if it does not exist."""
        ...

    def size(self, path: str) -> int:
        """The size of a file in bytes (0 if it does not exist)."""
        ...


class OsFileSystem:
    """The real file system, through ``os``."""

    def __init__(self, sync_threads: int = 16) -> None:
        self._threads = sync_threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def create(self, path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)

    def open(self, path: str, *, write: bool) -> int:
        return os.open(path, os.O_RDWR | os.O_APPEND if write else os.O_RDONLY)

    def replace_file(self, path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)

    def rename(self, source: str, target: str) -> None:
        os.replace(source, target)

    def read(self, fd: int) -> bytes:
        chunks = []
        offset = 0
        while chunk := os.pread(fd, 1 << 20, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def write(self, fd: int, data: bytes) -> None:
        written = os.write(fd, data)
        if written < len(data):  # a short write: rare, so only then the loop
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(fd, view) :]

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    async def fdatasync_many(self, fds: Iterable[int]) -> None:
        # fdatasyncs of different files issued at once are grouped by the file
        # system: about 20,000/s from 16 threads against 3,000/s from one. One
        # hop to a worker thread fans them out to a pool of threads.
        fds = list(fds)
        if len(fds) == 1:
            await trio.to_thread.run_sync(os.fdatasync, fds[0])
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, "durable-fsync")
        pool = self._pool
        await trio.to_thread.run_sync(lambda: list(pool.map(os.fdatasync, fds)))

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def lock(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        return True

    def close(self, fd: int) -> None:
        os.close(fd)  # also releases the flock

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def makedirs(self, path: str) -> None:
        missing = []
        current = os.path.abspath(path)
        while not os.path.isdir(current):
            missing.append(current)
            current = os.path.dirname(current)
        for directory in reversed(missing):
            os.mkdir(directory, 0o700)
            self.fsync_dir(os.path.dirname(directory))

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def size(self, path: str) -> int:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return 0
