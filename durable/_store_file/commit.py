"""Writing a journal and making it durable: the writer and the group commit.

A :class:`_FileWriter` appends each record with one ``write`` on its journal's
descriptor. What :meth:`~durable.lowlevel.JournalWriter.sync` costs is the
store's ``sync`` mode: ``"always"`` calls fdatasync on the journal right away,
``"batch"`` joins a :class:`_GroupCommit`, which fsyncs every journal with
queued records in one round (issued in parallel from worker threads, which the
filesystem groups), ``"none"`` only writes. An fsync error is fatal for the
journal, never retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .._fs import FileSystem
from .._store import JournalWriter

if TYPE_CHECKING:
    import trio

# trio is imported where a round needs it, not at the top: the CLI's reading verbs
# open a FileStore without importing trio (most of a short verb's start-up).


class _FileWriter(JournalWriter):
    def __init__(
        self,
        fs: FileSystem,
        sync: str,
        group: _GroupCommit,
        path: str,
        fd: int,
        next_index: int,
        run_id: str,
    ) -> None:
        super().__init__(path, next_index)
        self.fd = fd
        self.run_id = run_id
        self._fs = fs
        self._sync_mode = sync
        self._group = group
        self.syncs = sync != "none"
        #: Called once when the writer closes, before its lock goes (the store notes
        #: that this process let the run go: holders.py).
        self.on_close: Callable[[], None] | None = None

    def _write(self, data: bytes) -> None:
        self._fs.write(self.fd, data)

    async def _sync(self) -> None:
        if self._sync_mode == "always":
            self._fs.fdatasync(self.fd)
        elif self._sync_mode == "batch":
            await self._group.sync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            if self.on_close is not None:
                self.on_close()
            fd, self.fd = self.fd, -1
            self._group.release(fd, self._fs.close)


class _Round:
    """The journals one group-commit round fsyncs, and whether it finished."""

    def __init__(self) -> None:
        self.fds: set[int] = set()
        self.synced = False
        self._done: trio.Event | None = None

    @property
    def done(self) -> trio.Event:
        """Set when the round's fsyncs finished (or its leader gave it up)."""
        if self._done is None:
            import trio  # noqa: PLC0415 - see the top of the module

            self._done = trio.Event()
        return self._done

    def wake(self) -> None:
        """Wake whoever waits for the round (made its Event by waiting; if no one did,
        no one will: a caller waits as soon as it queues behind a leader)."""
        if self._done is not None:
            self._done.set()


class _GroupCommit:
    """Group commit: one round of fdatasyncs covers every journal queued meanwhile.

    Callers queue their journal in the open round. If no round is being
    flushed, the caller becomes the leader and flushes rounds until none is
    queued; callers arriving meanwhile queue in the next round. A caller
    returns only once a round that holds its journal has completed its
    fsyncs: if a leader is cancelled mid-round, its round does not count and
    its callers queue again. An fsync error fails every later sync (rule R6 of the
    journal contract, section 15).
    """

    def __init__(self, fs: FileSystem) -> None:
        self._fs = fs
        self._open = _Round()
        self._flushing: set[int] = set()
        self._closing: dict[int, Callable[[int], None]] = {}
        self._leading = False
        self._error: OSError | None = None

    def release(self, fd: int, close: Callable[[int], None]) -> None:
        """Close ``fd`` once no round still holds it (its number must not be reused mid-fsync)."""
        self._open.fds.discard(fd)
        if fd in self._flushing:
            self._closing[fd] = close
        else:
            close(fd)

    async def sync(self, fd: int) -> None:
        while True:
            self._check()
            round_ = self._open
            round_.fds.add(fd)
            if self._leading:
                await round_.done.wait()
            else:
                await self._lead()
            if round_.synced:
                return

    def _check(self) -> None:
        if self._error is not None:
            raise OSError(self._error.errno, f"an earlier group fsync failed: {self._error}")

    async def _lead(self) -> None:
        self._leading = True
        try:
            import trio  # noqa: PLC0415 - see the top of the module

            # Let the other runs that are ready right now queue in this round first.
            await trio.lowlevel.cancel_shielded_checkpoint()
            while self._open.fds and self._error is None:
                round_, self._open = self._open, _Round()
                self._flushing = round_.fds
                try:
                    await self._fs.fdatasync_many(round_.fds)
                    round_.synced = True
                except OSError as exc:
                    self._error = exc
                except BaseExceptionGroup as group:
                    errors = group.subgroup(OSError)
                    if errors is None:
                        raise
                    first = errors.exceptions[0]
                    self._error = first if isinstance(first, OSError) else OSError(str(first))
                finally:
                    self._flushing = set()
                    for fd, close in self._closing.items():
                        close(fd)
                    self._closing.clear()
                    round_.wake()
        finally:
            self._leading = False
            # Whoever waits in the open round now needs a leader (or to see the error):
            # wake them; they queue again and one of them leads.
            waiting, self._open = self._open, _Round()
            waiting.wake()
