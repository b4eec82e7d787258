"""A simulated disk with the crash semantics of a real one.

Theory of operation
-------------------
:class:`SimDisk` implements :class:`durable.lowlevel.FileSystem`, so the real
``durable.FileStore`` runs on it unchanged. Each file keeps two contents:
``data``, what the running process sees (the page cache), and ``synced``, what
the last completed fdatasync made durable. A directory entry (a created or
removed file) is durable only after an fsync of its directory.

Every operation is a *crash point*: the shared :class:`Crasher` counts them and
raises :class:`SimulatedCrash` at the chosen one, abandoning the process
mid-flight. :meth:`SimDisk.crash` then decides what survived, following the
fault model of the journal contract (``docs/journal-v1.md`` section 15):

* ``kill``: the process died, the OS did not: everything written survives.
* ``drop`` (F1): unsynced writes are lost.
* ``torn`` (F4): the unsynced tail survives up to a byte; the rest is lost.
* ``zeros`` / ``garbage`` (F2, F3): the file grew, but part of the new region
  reads as zeros or random bytes.
* ``hole`` (F5): a later unsynced write persisted while an earlier one did not.

A file created since its directory's last fsync may vanish in every mode but
``kill`` (F6); an unsynced truncate is lost with probability 1/2 (F7). Synced
bytes never change (F8). Bit rot (F9) is :meth:`SimDisk.rot`, used on purpose
by tests, never by a default exploration.

A descriptor refers to a file, not to a path, as on a real disk: a file renamed
over or unlinked stays readable, writable and lockable through the descriptors
open on it, but nobody opening the path finds it again. Locks belong to files,
so a lock taken on such a stale descriptor excludes nobody;
:meth:`SimDisk.same_file` is how the store tells. Writes that land in a file no
path leads to any more are kept in :attr:`SimDisk.stale_writes`.
"""

from __future__ import annotations

import errno
import functools
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import overload

import attrs

from durable._fs import NotRegularFileError
from durable.lowlevel import HEADER_SIZE, decode_record, encode_header

#: Disk damage a crash can leave, from kindest to cruellest.
DISK_FAULTS = ("kill", "drop", "torn", "zeros", "garbage", "hole")
#: Opt-in fault classes: ``eio`` fails an fsync with EIO (then the process is
#: restarted and the unsynced data is gone, as Linux drops it after reporting).
OPT_IN_FAULTS = ("eio",)


class SimulatedCrash(BaseException):
    """The simulated process dies here. A BaseException, so nothing in durable catches it."""


@attrs.define
class Point:
    """One crash point reached: its number in this process lifetime and what was happening.

    Attributes:
        number: 1 for the first point a process reaches.
        kind: e.g. ``"before write"``, ``"after fsync"``, ``"activity-returned"``.
        target: the file (or run id) concerned.
        data: the bytes being written, for ``write`` points.
    """

    number: int
    kind: str
    target: str
    data: bytes | None = None
    version: int = 0

    @property
    def label(self) -> str:
        """A readable description: ``before write of ActivityCompleted(seq=1) to r.journal``."""
        if self.data is not None:
            return f"{self.kind} of {describe_write(self.data)} to {self.target}"
        return f"{self.kind} {self.target}"


class Points(Sequence[Point]):
    """The crash points a process lifetime reached, each made a :class:`Point` when first read.

    A schedule reaches hundreds of points and reads few of them (the one it crashed at;
    the reference's, to group them): until it is read, a point is a tuple of plain
    values, which the garbage collector stops tracking at its first pass. A point read
    twice is the same :class:`Point`.
    """

    __slots__ = ("_made", "reached")

    def __init__(self) -> None:
        #: ``(kind, target, data, version)`` of each point reached, in order.
        self.reached: list[tuple[str, str, bytes | None, int]] = []
        self._made: dict[int, Point] = {}

    def __len__(self) -> int:
        return len(self.reached)

    @overload
    def __getitem__(self, index: int) -> Point: ...

    @overload
    def __getitem__(self, index: slice) -> list[Point]: ...

    def __getitem__(self, index: int | slice) -> Point | list[Point]:
        if isinstance(index, slice):
            return [self[at] for at in range(*index.indices(len(self)))]
        at = index + len(self) if index < 0 else index
        if not 0 <= at < len(self):
            raise IndexError(f"point index {index} out of range (reached {len(self)})")
        point = self._made.get(at)
        if point is None:
            point = Point(at + 1, *self.reached[at])
            self._made[at] = point
        return point

    def __iter__(self) -> Iterator[Point]:
        return (self[at] for at in range(len(self)))

    def __repr__(self) -> str:
        return repr(list(self))


@attrs.define
class Crasher:
    """Counts crash points and crashes at the chosen one.

    Attributes:
        crash_at: the point number to crash at (None: never).
        points: every point reached so far in this process lifetime.
    """

    crash_at: int | None = None
    points: Points = attrs.Factory(Points)
    crashed: Point | None = None
    on_crash: Callable[[], None] | None = None
    #: Called with every point reached (before a crash there): how the simulated
    #: outside world (a signal sender) watches the run's progress.
    on_point: Callable[[Point], None] | None = None
    #: Bumped by every change a crash could tell apart (a write, an fsync, an execution);
    #: consecutive points with the same version leave the same world behind.
    version: int = 0

    def changed(self) -> None:
        self.version += 1

    #: At the chosen point, if it is an fsync, fail the fsync with EIO instead of crashing.
    fail_fsync: bool = False
    failed_fsync: Point | None = None

    def hit(self, kind: str, target: str, data: bytes | None = None) -> None:
        if self.crashed is not None:
            raise SimulatedCrash(self.crashed.label)
        reached = self.points.reached
        reached.append((kind, target, data, self.version))
        if self.on_point is not None:
            self.on_point(self.points[-1])
        if len(reached) != self.crash_at:
            return
        point = self.points[-1]
        if self.fail_fsync and kind == "before fsync":
            self.failed_fsync = point
            raise OSError(errno.EIO, f"Input/output error (simulated, fsync of {target})")
        self.crashed = point
        if self.on_crash is not None:
            self.on_crash()
        raise SimulatedCrash(point.label)


@attrs.define(eq=False)  # compared by identity: a file is an inode, not its content
class _File:
    """A file's content as the process sees it, and how much of it is durable.

    Files are appended to and truncated, so the durable content is kept as a
    length into ``data`` (an fsync costs nothing), unless a truncate cut below
    it before the next fsync: then ``synced_copy`` keeps the durable bytes.
    """

    data: bytearray = attrs.Factory(bytearray)
    synced_len: int = 0
    synced_copy: bytes | None = None
    entry_durable: bool = False

    @property
    def synced(self) -> bytes:
        if self.synced_copy is not None:
            return self.synced_copy
        return bytes(self.data[: self.synced_len])

    def sync(self) -> None:
        self.synced_len = len(self.data)
        self.synced_copy = None

    def reset(self, content: bytes) -> None:
        self.data = bytearray(content)
        self.sync()


@attrs.define
class _Handle:
    """An open descriptor: the file it refers to, and the path it was last known by (for labels)."""

    file: _File
    path: str
    #: The path's file name, which its crash points name (kept: two points per write).
    name: str


@attrs.define
class Damage:
    """What a crash did to one file, for reports."""

    path: str
    kept: int
    lost: int
    how: str


class SimDisk:
    """An in-memory file system with crash semantics; see the module docstring."""

    def __init__(self, crasher: Crasher | None = None) -> None:
        self.crasher = crasher if crasher is not None else Crasher()
        self.files: dict[str, _File] = {}
        self.dirs: set[str] = {"/"}
        self.removed: dict[str, _File] = {}  # unlinked, but the unlink is not durable yet
        self._fds: dict[int, _Handle] = {}
        self._locks: dict[_File, int] = {}
        #: Paths (as last known) of the writes made through a descriptor whose file no
        #: path leads to any more (renamed over or unlinked): nobody will read them.
        self.stale_writes: list[str] = []
        #: Files whose fsync failed in this process lifetime, and fsyncs tried on them after.
        self.fsync_failed: set[str] = set()
        self.fsync_retried: list[str] = []
        self._next_fd = 3
        #: FileSystem.dir_stamp: per directory, the count of entry changes when it last changed.
        self._changes = 0
        self._stamps: dict[str, int] = {}

    # --- the FileSystem interface ------------------------------------------------

    def create(self, path: str) -> int:
        self._point("create", path)
        if path in self.files:
            raise FileExistsError(path)
        self._need_dir(_parent(path))
        self.files[path] = _File()
        self.removed.pop(path, None)
        self._entry_changed(path)
        self.crasher.changed()
        return self._new_fd(path)

    def _alive(self) -> None:
        """A crashed process can do nothing more (close() stays harmless for cleanup code)."""
        if self.crasher.crashed is not None:
            raise SimulatedCrash(self.crasher.crashed.label)

    def replace_file(self, path: str) -> int:
        self._point("create", path)
        self._need_dir(_parent(path))
        old = self.files.get(path)
        if old is not None and old.entry_durable:
            self.removed.setdefault(path, old)
        self.files[path] = _File()
        self._entry_changed(path)
        self.crasher.changed()
        return self._new_fd(path)

    def same_file(self, fd: int, path: str) -> bool:
        self._alive()
        return self.files.get(path) is self._handle(fd).file

    def rename(self, source: str, target: str) -> None:
        self._point("before rename", target)
        moved = self.files.pop(source)
        old = self.files.get(target)
        if old is not None and old.entry_durable and target not in self.removed:
            self.removed[target] = old  # until the directory is fsynced, a crash brings it back
        moved.entry_durable = False
        self.files[target] = moved
        for handle in self._fds.values():
            if handle.file is moved:
                handle.path, handle.name = target, _name(target)
        self._entry_changed(source)
        self._entry_changed(target)
        self.crasher.changed()
        self._point("after rename", target)

    def open(self, path: str, *, write: bool) -> int:
        self._alive()
        if path not in self.files:
            if path in self.dirs:
                raise NotRegularFileError(path, "a directory")
            raise FileNotFoundError(path)
        return self._new_fd(path)

    def read(self, fd: int) -> bytes:
        self._alive()
        return bytes(self._handle(fd).file.data)

    def write(self, fd: int, data: bytes) -> None:
        # Two points per journal record, the hot path: the crasher is called directly, and
        # its version bumped here (what changed() does).
        handle = self._fds.get(fd) or self._handle(fd)
        crasher, name = self.crasher, handle.name
        crasher.hit("before write", name, data)
        handle.file.data += data
        if self.files.get(handle.path) is not handle.file:
            self.stale_writes.append(handle.path)
        crasher.version += 1
        crasher.hit("after write", name, data)

    def append(self, path: str, data: bytes) -> None:
        """A cache's append (FileSystem.append): no crash point, since nothing durable
        depends on it; a crash still loses what was not synced, as for any file."""
        self._alive()
        file = self.files.get(path)
        if file is None:
            self._need_dir(_parent(path))
            file = self.files[path] = _File()
            self.removed.pop(path, None)
            self._entry_changed(path)
        file.data += data

    def discard(self, path: str) -> None:
        """A cache's removal (FileSystem.discard): no crash point, as for its appends;
        a crash may bring the file back (its removal was not made durable)."""
        self._alive()
        file = self.files.pop(path, None)
        if file is not None:
            self._entry_changed(path)
            if file.entry_durable:
                self.removed[path] = file

    def fdatasync(self, fd: int) -> None:
        handle = self._fds.get(fd) or self._handle(fd)
        path = handle.path
        if path in self.fsync_failed:
            self.fsync_retried.append(path)  # fsyncgate: a retried fsync proves nothing
        crasher, name = self.crasher, handle.name
        try:
            crasher.hit("before fsync", name)
        except OSError:
            self.fsync_failed.add(path)
            raise
        handle.file.sync()
        crasher.version += 1
        crasher.hit("after fsync", name)

    async def fdatasync_many(self, fds: Iterable[int]) -> None:
        for fd in sorted(fds):
            self.fdatasync(fd)

    def truncate(self, fd: int, size: int) -> None:
        handle = self._handle(fd)
        self._point("before truncate", handle.path)
        file = handle.file
        if size < file.synced_len and file.synced_copy is None:
            file.synced_copy = bytes(file.data[: file.synced_len])
        del file.data[size:]
        self.crasher.changed()

    def lock(self, fd: int) -> bool:
        self._alive()
        file = self._handle(fd).file
        holder = self._locks.get(file)
        if holder is not None and holder != fd:
            return False
        self._locks[file] = fd
        return True

    def close(self, fd: int) -> None:
        handle = self._fds.pop(fd, None)
        if handle is not None and self._locks.get(handle.file) == fd:
            del self._locks[handle.file]

    def unlink(self, path: str) -> None:
        self._point("before unlink", path)
        file = self.files.pop(path)
        if file.entry_durable:
            self.removed[path] = file
        self._entry_changed(path)
        self.crasher.changed()

    def rmdir(self, path: str) -> None:
        self._alive()
        if path not in self.dirs:
            raise FileNotFoundError(path)
        if self.listdir(path):
            raise OSError(errno.ENOTEMPTY, "Directory not empty (simulated)", path)
        # Directories themselves are durable at once on this disk: only file entries
        # need their directory fsynced.
        self.dirs.discard(path)
        self._entry_changed(path)

    def makedirs(self, path: str) -> None:
        self._alive()
        parts = [p for p in path.split("/") if p]
        for depth in range(1, len(parts) + 1):
            directory = "/" + "/".join(parts[:depth])
            if directory in self.files:
                raise FileExistsError(errno.EEXIST, "File exists (simulated)", directory)
            if directory not in self.dirs:
                self.dirs.add(directory)
                self._entry_changed(directory)

    def fsync_dir(self, path: str) -> None:
        self._point("before fsync of directory", path)
        for name, file in self.files.items():
            if _parent(name) == path:
                file.entry_durable = True
        for name in [n for n in self.removed if _parent(n) == path]:
            del self.removed[name]
        self.crasher.changed()
        self._point("after fsync of directory", path)

    def listdir(self, path: str) -> list[str]:
        self._alive()
        names = {_base(n) for n in self.files if _parent(n) == path}
        names.update(_base(d) for d in self.dirs if d != path and _parent(d) == path)
        return sorted(names)

    def dir_stamp(self, path: str) -> int:
        self._alive()
        self._need_dir(path)
        return self._stamps.get(path, 0)

    def size(self, path: str) -> int:
        self._alive()
        file = self.files.get(path)
        if file is None:
            return -1 if path in self.dirs else 0
        return len(file.data)

    def owner_and_mode(self, path: str) -> tuple[int, int]:
        self._alive()
        self._need_dir(path)
        return os.geteuid(), 0o700  # the simulated process owns its private disk

    # --- crashes -----------------------------------------------------------------

    def crash(self, how: str, rng: random.Random) -> list[Damage]:
        """Apply a crash of kind ``how`` (one of :data:`DISK_FAULTS`) and reset process state."""
        if how not in DISK_FAULTS:
            raise ValueError(f"disk fault must be one of {DISK_FAULTS} (got {how!r})")
        self._fds.clear()
        self._locks.clear()
        self.fsync_failed.clear()
        if how == "kill":
            return []
        damage = []
        for path, file in list(self.files.items()):
            if not file.entry_durable:
                del self.files[path]  # F6: a new (or renamed) file needs its directory fsynced
                damage.append(Damage(path, 0, len(file.data), "file vanished (directory not fsynced)"))
                continue
            survived, how_text = _survivor(file, how, rng)
            if survived != file.data:
                damage.append(Damage(path, len(survived), len(file.data) - len(survived), how_text))
            file.reset(survived)
        for path, file in self.removed.items():  # an unlink not yet made durable comes back
            revived = _File(entry_durable=True)
            revived.reset(file.synced)
            self.files[path] = revived
        self.removed.clear()
        for directory in self.dirs:  # entries vanished or came back
            self._entry_changed(os.path.join(directory, "-"))
        return damage

    def rot(self, path: str, offset: int, rng: random.Random) -> None:
        """Flip one bit of a file's durable content at ``offset`` (fault F9, bit rot)."""
        file = self.files[path]
        if offset >= len(file.synced):
            raise ValueError(f"offset {offset} is past the durable content of {path}")
        file.data[offset] ^= 1 << rng.randrange(8)
        if file.synced_copy is not None:
            copy = bytearray(file.synced_copy)
            copy[offset] = file.data[offset]
            file.synced_copy = bytes(copy)

    # --- helpers -----------------------------------------------------------------

    def _point(self, kind: str, path: str, data: bytes | None = None) -> None:
        self.crasher.hit(kind, _name(path), data)

    def _entry_changed(self, path: str) -> None:
        self._changes += 1
        self._stamps[_parent(path)] = self._changes

    def _new_fd(self, path: str) -> int:
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = _Handle(self.files[path], path, _name(path))
        return fd

    def _handle(self, fd: int) -> _Handle:
        try:
            return self._fds[fd]
        except KeyError:
            raise OSError(errno.EBADF, "Bad file descriptor (simulated)") from None

    def _need_dir(self, path: str) -> None:
        if path not in self.dirs:
            raise FileNotFoundError(path)


@functools.lru_cache(maxsize=4096)
def _parent(path: str) -> str:
    """``os.path.dirname(path)``, remembered: the disk asks it of the same few paths
    (a store's files and directories) over and over, in every process lifetime."""
    return os.path.dirname(path)


@functools.lru_cache(maxsize=4096)
def _base(path: str) -> str:
    """``os.path.basename(path)``, remembered (see :func:`_parent`)."""
    return os.path.basename(path)


def _name(path: str) -> str:
    """What a crash point names: the file's name without its directory."""
    return path.rpartition("/")[2] or path


def describe_write(data: bytes) -> str:
    """Name what a write to a journal carries (``ActivityCompleted(seq=3)``), for crash labels."""
    names = []
    pos = 0
    if data.startswith(encode_header()):
        names.append("header")
        pos = HEADER_SIZE
    while pos < len(data):
        try:
            event, _, _, pos = decode_record(data, pos)
        except ValueError:
            names.append(f"{len(data) - pos} bytes")
            break
        names.append(_event_label(event))
    return " + ".join(names) if names else "0 bytes"


def _event_label(event: object) -> str:
    seq = getattr(event, "seq", None)
    name = type(event).__name__
    return f"{name}(seq={seq})" if seq is not None else name


def _survivor(file: _File, how: str, rng: random.Random) -> tuple[bytes, str]:
    """The content a power loss leaves of one file."""
    synced, data = bytes(file.synced), bytes(file.data)
    if len(data) < len(synced) and data == synced[: len(data)]:
        # An unsynced truncate: it may or may not have reached the disk (F7).
        return (data, "unsynced truncate kept") if rng.random() < 0.5 else (synced, "unsynced truncate lost")
    common = _common_prefix(synced, data)
    tail = data[common:]
    base = synced[:common]
    if not tail or how == "drop":
        return synced, f"dropped {len(tail)} unsynced bytes"
    cut = rng.randrange(len(tail))
    if how == "torn":
        return base + tail[:cut], f"torn: kept {cut} of {len(tail)} unsynced bytes"
    if how == "zeros":
        return base + tail[:cut] + bytes(len(tail) - cut), f"zero-filled after {cut} unsynced bytes"
    if how == "garbage":
        junk = rng.randbytes(len(tail) - cut)
        return base + tail[:cut] + junk, f"garbage after {cut} unsynced bytes"
    # hole: an earlier unsynced region is lost (zeros) while a later one persisted
    start = rng.randrange(len(tail))
    end = rng.randrange(start, len(tail)) + 1
    holed = tail[:start] + bytes(end - start) + tail[end:]
    return base + holed, f"hole of {end - start} bytes in {len(tail)} unsynced bytes"


def _common_prefix(a: bytes, b: bytes) -> int:
    if b.startswith(a):
        return len(a)
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index
