"""The file-system operations :class:`~durable.FileStore` needs, behind one small object.

:class:`OsFileSystem` performs them on the real disk. The crash simulator
(``sim``) passes its own implementation with the same methods, which keeps
written-but-unsynced bytes apart from durable ones and can crash at any of
these calls, so the simulator tests the real FileStore code, not a model of it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator
from typing import Protocol


class NotRegularFileError(OSError):
    """Something other than a regular file (a directory, a symbolic link, a FIFO, a
    device...) is where a file should be: durable neither follows nor reads it.

    Attributes:
        path: the entry.
        kind: what it is (``"a directory"``, ``"a symbolic link"``...).
    """

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{kind}, not a regular file", path)
        self.path = path
        self.kind = kind


def entry_kind(mode: int) -> str:
    """What a file mode (``st_mode``) describes, for messages: ``"a directory"``..."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "a special file"


_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class FileSystem(Protocol):
    """What FileStore asks of a file system. Paths are ``str``; files are int descriptors.

    No call follows a symbolic link to a file: :meth:`create` and :meth:`open` refuse
    anything but a regular file, so a link planted in the store can neither make
    durable write elsewhere nor make a reader hang on a FIFO or read ``/dev/zero``.
    """

    def create(self, path: str) -> int:
        """Create ``path`` exclusively (mode 0600) for reading and appending; FileExistsError
        if anything is there, a dangling symbolic link included."""
        ...

    def open(self, path: str, *, write: bool) -> int:
        """Open an existing regular file (for appending if ``write``).

        Raises:
            FileNotFoundError: nothing is there.
            NotRegularFileError: a directory, symbolic link, FIFO... is there (not followed).
        """
        ...

    def replace_file(self, path: str) -> int:
        """Create ``path`` afresh (mode 0600) for reading and appending, removing first
        whatever entry is there (a symbolic link itself, not its target)."""
        ...

    def same_file(self, fd: int, path: str) -> bool:
        """Whether ``fd`` is the file at ``path`` now (the same device and inode): False
        once another file was renamed over it or it was unlinked."""
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

    def append(self, path: str, data: bytes) -> None:
        """Append ``data`` to the file at ``path`` (made, mode 0600, if missing; never
        through a symbolic link), never fsynced: for caches that a crash may cut
        short, which their readers tolerate (the simulator makes it no crash point)."""
        ...

    def discard(self, path: str) -> None:
        """Remove a cache's file (one that :meth:`append` writes), if it is there: nothing
        durable depends on it, so the simulator makes it no crash point either."""
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

    def rmdir(self, path: str) -> None:
        """Remove an empty directory (OSError if it is not empty, or not there)."""
        ...

    def makedirs(self, path: str) -> None:
        """Create a directory (mode 0700) and its missing parents, fsyncing each new entry."""
        ...

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (files created or removed in it) durable."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in a directory (files and directories); [] if it does not exist."""
        ...

    def dir_stamp(self, path: str) -> int:
        """A number that changes whenever an entry is made, renamed or removed in the
        directory ``path`` (FileNotFoundError if there is none), for caches of what it
        holds. On a real disk its modification time in nanoseconds since the epoch,
        which a coarse clock may leave unchanged by a change made soon after: trust it
        only for a directory last changed some seconds ago, as git does its index. The
        simulator's is a count of changes, below any such time (so always trusted)."""
        ...

    def size(self, path: str) -> int:
        """The size of a regular file in bytes: 0 if nothing is there, -1 if something
        other than a regular file is (a directory, a symbolic link: never followed)."""
        ...

    def owner_and_mode(self, path: str) -> tuple[int, int]:
        """The owner's uid and the permission bits of a directory (following links)."""
        ...


class OsFileSystem:
    """The real file system, through ``os``."""

    def __init__(self, sync_threads: int = 16) -> None:
        self._threads = sync_threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def create(self, path: str) -> int:
        return os.open(path, _CREATE, 0o600)

    def open(self, path: str, *, write: bool) -> int:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
        flags = (os.O_RDWR | os.O_APPEND if write else os.O_RDONLY) | _NO_FOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise NotRegularFileError(path, self._kind(path)) from None
            raise
        try:
            _check_regular(fd, path)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _kind(self, path: str) -> str:
        try:
            return entry_kind(os.lstat(path).st_mode)
        except OSError:
            return "not a regular file"

    def replace_file(self, path: str) -> int:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return os.open(path, _CREATE, 0o600)

    def same_file(self, fd: int, path: str) -> bool:
        try:
            there = os.lstat(path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)

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

    def append(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NO_FOLLOW, 0o600)
        try:
            self.write(fd, data)
        finally:
            os.close(fd)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    async def fdatasync_many(self, fds: Iterable[int]) -> None:
        # fdatasyncs of different files issued at once are grouped by the file
        # system: about 20,000/s from 16 threads against 3,000/s from one. One
        # hop to a worker thread fans them out to a pool of threads.
        import trio  # noqa: PLC0415 - the CLI reads a FileStore without trio (start-up)

        fds = list(fds)
        if len(fds) == 1:
            await trio.to_thread.run_sync(os.fdatasync, fds[0])
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, "durable-fsync")
        pool = self._pool
        # Each thread takes the next file from one shared iterator until none is left,
        # rather than one pool task per file: a task per file costs about 25 us of
        # Python per fdatasync, under the GIL the trio thread needs for the steps,
        # and cut the rate of a 100-file round by about a third (bench/README).
        remaining = iter(fds)
        await trio.to_thread.run_sync(_drain, pool, remaining, min(self._threads, len(fds)))

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

    def discard(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def makedirs(self, path: str) -> None:
        missing = []
        current = os.path.abspath(path)
        while not os.path.isdir(current):
            missing.append(current)
            current = os.path.dirname(current)
        for directory in reversed(missing):
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                if os.path.isdir(directory):
                    continue  # another process made it meanwhile
                raise
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

    def dir_stamp(self, path: str) -> int:
        return os.stat(path).st_mtime_ns

    def size(self, path: str) -> int:
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            return 0
        return found.st_size if stat.S_ISREG(found.st_mode) else -1

    def owner_and_mode(self, path: str) -> tuple[int, int]:
        found = os.stat(path)
        return found.st_uid, stat.S_IMODE(found.st_mode)


def _check_regular(fd: int, path: str) -> None:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(path, entry_kind(mode))


_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
# O_EXCL never follows a symbolic link (a dangling one included): it fails instead.
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | _NO_FOLLOW


def _drain(pool: concurrent.futures.ThreadPoolExecutor, fds: Iterator[int], threads: int) -> None:
    """fdatasync every file of ``fds`` from ``threads`` threads of ``pool``; raise the
    first failure only once every thread is done, so that no fdatasync still runs on a
    descriptor that the caller may close once this returns."""
    futures = [pool.submit(_fdatasync_each, fds) for _ in range(threads)]
    concurrent.futures.wait(futures)
    for future in futures:
        future.result()


def _fdatasync_each(fds: Iterator[int]) -> None:
    """fdatasync each file ``fds`` yields. Several threads share one list iterator: its
    next() runs under the GIL, so each file is taken by exactly one of them."""
    for fd in fds:
        os.fdatasync(fd)
