"""The storage interface: a journal per run, appended in order, made durable on demand.

A store keeps one append-only journal per run. The executor is its only
writer: it opens a run's journal exclusively, appends events, and calls
:meth:`JournalWriter.sync` whenever what it appended must survive a crash
before it acts on it. Every store writes the same journal contract v1 records
(:mod:`durable._core.codec`), so what one store holds another can read.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Literal, TypeVar

import attrs

from ._core import events as ev
from ._core.codec import encode_record
from ._core.errors import DurableError, StoreError
from ._core.payloads import PayloadCodec, Payloads

SYNC_MODES = ("always", "batch", "none")
#: Words every "this writer's lease moved to another worker" message holds (PostgreSQL):
#: how a worker tells a run that goes on elsewhere from one it had to give up.
LEASE_MOVED = "moved to another worker"
#: What :meth:`Store.remove` did: removed the run, found no such run, or left it
#: because it has not ended.
Removal = Literal["removed", "missing", "unfinished"]
_E = TypeVar("_E", bound="ev.Event")


def check_sync_mode(sync: str) -> str:
    if sync not in SYNC_MODES:
        raise ValueError(f"sync must be one of {SYNC_MODES!r} (got {sync!r})")
    return sync


@attrs.frozen
class Holder:
    """Who holds a run, or held it last without letting it go: for ``durable ls``, ``show``
    and a worker's log.

    A FileStore keeps a small record beside the journal's lock (``holders/``), a
    PostgreSQL store the lease's owner. The lock or lease says whether the holder still
    holds the run (``live``); a record left by a holder that is gone is how a run whose
    process died is told from one nobody took yet.
    """

    #: The holding process's id and host name (None where the store does not know them).
    pid: int | None
    host: str | None
    #: When it took the run (epoch seconds; None when the store does not know).
    since: float | None
    #: Whether it holds the run now (its lock, its unexpired lease).
    live: bool
    #: When its lease expires (PostgreSQL; epoch seconds), None for a FileStore.
    lease_expires: float | None = None

    def describe(self) -> str:
        """``pid 123 on host-a`` (``a process`` when the store does not know which)."""
        if self.pid is None:
            return "a process" if self.host is None else f"a process on {self.host}"
        return f"pid {self.pid}" if self.host is None else f"pid {self.pid} on {self.host}"


@attrs.frozen
class Opened:
    """A run's journal opened for writing: its events so far and the writer."""

    events: list[ev.Event]
    writer: JournalWriter
    #: Who held the run before this open without letting it go (a process that died, a
    #: lease that expired): the open took it over. None when the run was free.
    previous: Holder | None = None


class JournalWriter(abc.ABC):
    """Appends events to one run's journal; the only writer of that journal.

    It numbers records and stamps each with the highest index known to be
    durable (journal contract v1, section 15, recovery rule R4). After a failed write or
    sync it refuses every further call: an fsync error leaves the unsynced
    records in an unknown state, and retrying it would prove nothing.
    """

    #: False when :meth:`sync` can make nothing more durable (a store that never
    #: fsyncs): the executor then skips it, and records never claim durability.
    syncs: bool = True
    #: The store's payload codecs (``codec=``): every appended event's payload is
    #: sealed with them (see durable/_core/payloads.py). Set by the store.
    payloads: Payloads | None = None

    def __init__(self, name: str, next_index: int) -> None:
        self.name = name
        self._next = next_index
        self._synced = next_index - 1
        self._failure: str | None = None

    @property
    def next_index(self) -> int:
        """The index the next appended record gets."""
        return self._next

    def append(self, event: ev.Event) -> None:
        """Write one event (durable only after :meth:`sync`)."""
        self._check()
        if self.payloads is not None:
            event = self.payloads.seal(event)
        data = encode_record(event, self._next, self._synced)
        try:
            self._write(data)
        except OSError as exc:
            raise self._fail(f"writing to {self.name} failed: {exc}") from exc
        self._next += 1

    async def sync(self) -> None:
        """Return once every appended event is durable, as the store's sync mode defines."""
        self._check()
        upto = self._next - 1
        if upto <= self._synced:
            return
        try:
            await self._sync()
        except OSError as exc:
            raise self._fail(
                f"fsync of {self.name} failed: {exc}; records not yet on disk may be lost, so "
                "durable stops this run instead of retrying the fsync (it resumes from the "
                "journal on recovery)"
            ) from exc
        self._synced = max(self._synced, upto)

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Start writing what was appended where other processes can read it, without
        waiting (for a store that buffers appends until :meth:`sync`). The executor
        calls it before running an activity, so that ``durable show`` and a crash's
        timeline see the step in flight. An error surfaces at the next sync."""

    def synced_through(self, index: int) -> None:
        """Note that records up to ``index`` are durable (the store made them so itself)."""
        self._synced = max(self._synced, index)

    def _check(self) -> None:
        if self._failure is not None:
            raise StoreError(f"{self.name} can no longer be written: {self._failure}")

    def _fail(self, message: str) -> StoreError:
        self._failure = message
        return StoreError(message)

    @abc.abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def _sync(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Release the journal (and its lock). Idempotent."""


async def open_each(
    run_ids: Sequence[str], limit: int | None, open_one: Callable[[str], Awaitable[Opened | None]]
) -> list[Opened | DurableError | None]:
    """``open_one`` each run until ``limit`` are open; a store error in its run's place."""
    results: list[Opened | DurableError | None] = []
    opened = 0
    for run_id in run_ids:
        if limit is not None and opened >= limit:
            results.append(None)
            continue
        try:
            result = await open_one(run_id)
        except StoreError as exc:
            results.append(exc)
            continue
        results.append(result)
        opened += result is not None
    return results


def page(ids: list[str], limit: int | None, before: str | None) -> list[str]:
    """The ``limit`` ids after ``before`` in ``ids`` (see Store.newest_first)."""
    if before is not None:
        if before not in ids:
            return []
        ids = ids[ids.index(before) + 1 :]
    return ids if limit is None else ids[:limit]


#: What a store's ``codec=`` takes: one payload codec, or a list applied in order.
CodecOption = PayloadCodec | Sequence[PayloadCodec] | None


#: The states of ``durable ls`` that a :class:`StateIndex` can answer for; the others
#: (``corrupt``, ``unreadable``) are those of journals damaged, maybe after they ended.
INDEXED_STATES = frozenset(
    {"queued", "running", "waiting", "stalled", "completed", "failed", "cancelled", "continued"}
)
#: The states of a run's end that a store may note (``failed`` only by its runtime:
#: a retry makes a failed run run again).
ENDED_STATES = frozenset({"completed", "failed", "cancelled"})


@attrs.frozen
class StateIndex:
    """What a store knows of its runs' states without reading their journals.

    ``unfinished``: every run that has not ended (and maybe some that ended since).
    ``ended``: how runs ended, for those the store noted, by run id; a run in neither
    is unknown. A run in ``ended`` and not in ``unfinished`` ended so for good: only a
    retry changes it, and a retried run is unfinished again before it is written to.
    The journal stays the truth: this only spares reading the journals of the runs
    that certainly are in another state.
    """

    unfinished: frozenset[str]
    ended: Mapping[str, str]

    def knows(self, run_id: str) -> bool:
        """Whether the store noted the run as unfinished or as ended."""
        return run_id in self.unfinished or run_id in self.ended

    def ruled_out(self, states: Collection[str]) -> set[str]:
        """The runs that certainly are in none of ``states``: those noted as ended in
        another state and not unfinished. Nothing is ruled out when a state asked for is
        not one the index answers for (a journal may have been damaged after it ended)."""
        if not INDEXED_STATES.issuperset(states):
            return set()
        wanted = set(states)
        return {run_id for run_id, end in self.ended.items() if end not in wanted} - self.unfinished


class Store(abc.ABC):
    """Where journals live. See :class:`~durable.FileStore` and :class:`~durable.MemoryStore`.

    A store with payload codecs (``codec=``) seals the payloads of what it writes and
    unseals what it reads, at its public methods (the helpers below), so what is
    inside a store only ever sees plain events.
    """

    #: The payload codecs of ``codec=`` (None: payloads are written as they are).
    payloads: Payloads | None = None

    def _sealed(self, event: _E) -> _E:
        return event if self.payloads is None else self.payloads.seal(event)

    def _unsealed(self, events: list[_E], run_id: str) -> list[_E]:
        return events if self.payloads is None else self.payloads.unseal_all(events, run_id)

    def _attach(self, writer: JournalWriter) -> JournalWriter:
        """``writer``, sealing what it appends with this store's codecs."""
        writer.payloads = self.payloads
        return writer

    def _attach_opened(self, opened: Opened | None, run_id: str) -> Opened | None:
        """An opened journal with its events unsealed and its writer sealing; a payload
        that cannot be unsealed closes the writer (the run is not taken) and raises."""
        if opened is None or self.payloads is None:
            return opened
        try:
            events = self.payloads.unseal_all(opened.events, run_id)
        except BaseException:
            opened.writer.close()
            raise
        return Opened(events, self._attach(opened.writer), opened.previous)

    def _attach_each(
        self, run_ids: Sequence[str], results: list[Opened | DurableError | None]
    ) -> list[Opened | DurableError | None]:
        """:meth:`_attach_opened` for :meth:`open_many`: a failure in its run's place."""
        if self.payloads is None:
            return results
        attached: list[Opened | DurableError | None] = []
        for run_id, result in zip(run_ids, results, strict=True):
            try:
                attached.append(self._attach_opened(result, run_id) if isinstance(result, Opened) else result)
            except StoreError as exc:
                attached.append(exc)
        return attached

    @abc.abstractmethod
    async def create(self, started: ev.RunStarted) -> JournalWriter | None:
        """Create the journal of a new run with its first event, durably.

        Returns None when the run already exists (the caller then opens it).
        """

    @abc.abstractmethod
    async def open(self, run_id: str) -> Opened | None:
        """Open an existing run for writing, exclusively; None if there is no such run.

        Recovers a torn tail (truncating it durably) before returning.

        Raises:
            RunLockedError: another process or runtime has it open.
            JournalCorruptError: the journal is damaged before its tail.
        """

    async def open_many(
        self, run_ids: Sequence[str], *, limit: int | None = None
    ) -> list[Opened | DurableError | None]:
        """:meth:`open` each run, for recovery: an error opening one run (locked,
        damaged) is returned in its place instead of raised. A store may make the
        opened journals durable together (FileStore: one parallel round of fsyncs).

        Args:
            limit: open at most this many; the runs after that are left alone (None
                in their place). A shared store may pick which of the runs it opens.
        """
        return await open_each(run_ids, limit, self.open)

    @abc.abstractmethod
    async def restart(self, started: ev.RunStarted, writer: JournalWriter) -> JournalWriter:
        """Replace a run's journal with a fresh one holding ``started``, durably and atomically.

        ``writer`` is the old journal's writer (its holder continues the run as new);
        it is closed, and the new journal's writer returned. A crash before the new
        journal is in place leaves the old one, which ends with ``RunContinuedAsNew``
        so that recovery carries the continuation out again.
        """

    @abc.abstractmethod
    async def read(self, run_id: str) -> list[ev.Event] | None:
        """The events of a run, without locking or repairing anything; None if no such run."""

    @abc.abstractmethod
    async def run_ids(self) -> list[str]:
        """Every run id in the store, sorted."""

    async def newest_first(self, limit: int | None = None, before: str | None = None) -> list[str]:
        """Run ids, the newest run first (by its start; ids break ties): at most
        ``limit``, and only those after the run ``before`` in that order (none if
        there is no such run).

        For listings that page (``durable ls --limit``): a store answers without
        reading its journals where it can (FileStore: its log of starts; PostgreSQL:
        a column), so that the cost follows the runs shown, not the history. This
        default reads every journal's first record.
        """
        return page(await self._all_newest_first(), limit, before)

    async def _all_newest_first(self) -> list[str]:
        starts = []
        for run_id in await self.run_ids():
            try:
                events = await self.read(run_id)
            except StoreError:
                events = None
            first = events[0] if events else None
            starts.append((first.t if isinstance(first, ev.RunStarted) else 0.0, run_id))
        return [run_id for _, run_id in sorted(starts, reverse=True)]

    async def unfinished(self) -> list[str]:
        """Ids of the runs that have not ended, sorted: the candidates for recovery.

        A store that records run status (PostgreSQL) answers without reading
        journals, and may leave out runs that a live holder keeps open. A journal
        that cannot be read (damaged, not a journal file, permission denied...)
        counts as unfinished: opening it reports what is wrong with that run alone.
        """
        ids = []
        for run_id in await self.run_ids():
            try:
                events = await self.read(run_id)
            except StoreError:
                ids.append(run_id)  # recovery reports it, and goes on with the others
                continue
            if events and not isinstance(events[-1], ev.TERMINAL):
                ids.append(run_id)
        return ids

    # -- the due index: which unfinished runs to take, and when ------------------
    #
    # Every unfinished run has a due time: when it was created (a run nobody has
    # taken yet is due at once), or the time its holder let it go for (a timer, a
    # retry backoff; math.inf: only a message wakes it). A message posted to a run
    # makes it due at once. A run held by a live process may be listed as due: taking
    # it then fails (RunLockedError), and a holder that died leaves it due, so a
    # crashed run is found like any other. The journal is the truth: a due time that
    # is too early only costs a replay (the run is let go again), never a lost step.
    # A store without an index lists every unfinished run (correct, and slower).

    async def due_runs(self, now: float, limit: int, *, among: Collection[str] | None = None) -> list[str]:
        """Up to ``limit`` unfinished runs due at ``now`` (epoch seconds) that no live
        process holds, oldest due first (``among``: only these runs).

        A run's holder may die, or take it, between this answer and the caller's
        open: the open decides (RunLockedError).
        """
        ids = [*await self.unfinished(), *sorted(await self.runs_with_messages())]
        if among is not None:
            ids = [run_id for run_id in ids if run_id in among]
        return list(dict.fromkeys(ids))[:limit]

    async def next_due(self, now: float) -> float | None:
        """The earliest due time after ``now`` (for a timer that wakes a worker); None if
        no run is due later (or the store cannot tell)."""
        return None

    async def release(self, writer: JournalWriter, due: float) -> None:
        """Let go of a run that waits until ``due`` (math.inf: until a message comes).

        The holder has made its journal durable. The due time is recorded durably,
        and only then is ``writer`` closed (with it, the lock or lease), so that a
        crash in between leaves the run held by nobody and due (a replay, no loss).
        """
        writer.close()

    async def held(self, run_ids: Collection[str]) -> set[str]:
        """Which of the runs a live process holds now (its lock, its lease), for tools
        that tell a run being executed from one that waits. A store that cannot tell
        answers all of them."""
        return set(run_ids)

    async def holders(self, run_ids: Collection[str]) -> dict[str, Holder]:
        """Who holds each of the runs now (``live``), or held it last without letting it
        go (a process that died, a lease that expired: not ``live``); a run nobody holds
        is left out. For ``durable ls`` and ``show``: how a run held by a live process is
        told from a stalled one. A store that cannot tell who answers :meth:`held`'s
        runs, holders unknown."""
        return {run_id: Holder(None, None, None, live=True) for run_id in await self.held(run_ids)}

    # -- retention: removing runs -------------------------------------------------

    async def remove(self, run_id: str, *, unfinished: bool = False) -> Removal:
        """Remove a run and all the store keeps for it (journal, messages, index
        entries), durably, if it has ended; a run that has not ended (or whose journal
        is damaged, so that its end cannot be told) only with ``unfinished``.

        Returns ``"removed"``, ``"missing"`` (no such run) or ``"unfinished"`` (nothing
        was removed).

        Raises:
            RunLockedError: a live process holds the run (even with ``unfinished``:
                stop it first).
        """
        raise StoreError(f"{type(self).__name__} cannot remove runs")

    async def finished_before(self, t: float) -> list[str]:
        """Ids of the runs that ended before ``t`` (epoch seconds), oldest first: what
        ``durable prune`` removes. A store answers from what it knows of each run's
        start where it can (a run that ended before ``t`` started before it); this
        default reads every journal."""
        return [run_id for run_id, _ in await self._ends_before(await self.run_ids(), t)]

    async def started_before(self, t: float) -> list[str]:
        """Ids of the runs that started before ``t``, oldest first (``prune --force``
        looks at unfinished runs among them). This default reads every journal."""
        found = []
        for run_id in await self.run_ids():
            with contextlib.suppress(StoreError):
                events = await self.read(run_id)
                if events and isinstance(events[0], ev.RunStarted) and events[0].t < t:
                    found.append((events[0].t, run_id))
        return [run_id for _, run_id in sorted(found)]

    async def _ends_before(self, run_ids: Sequence[str], t: float) -> list[tuple[str, float]]:
        """``(run id, end)`` of each of the runs that ended before ``t``, oldest end first."""
        ends = []
        for run_id in run_ids:
            try:
                events = await self.read(run_id)
            except StoreError:
                continue  # damaged: its end cannot be told, so it is not pruned
            last = events[-1] if events else None
            if isinstance(last, ev.TERMINAL) and last.t < t:
                ends.append((last.t, run_id))
        return [(run_id, end) for end, run_id in sorted(ends)]

    async def wake(self, run_id: str) -> None:  # noqa: B027 - optional hook
        """Make the run due now: a message was journaled into it while nobody held it."""

    async def ended(self, run_id: str, status: str | None = None) -> None:  # noqa: B027 - optional hook
        """The run's terminal record is durable: it is due never again. ``status``: how
        it ended (``completed``, ``failed`` or ``cancelled``; None if not known), for a
        store that keeps an index of ends (see :meth:`state_index`)."""

    async def state_index(self) -> StateIndex | None:
        """What this store knows of its runs' states without reading their journals,
        for listings by state (``durable ls --status``, the dashboard's filters); None
        if it knows nothing (every journal is read)."""
        return None

    async def note_end(self, run_id: str, status: str, started: float) -> None:  # noqa: B027 - optional hook
        """A reader found that the journal of ``run_id`` (which started at ``started``)
        ends in ``status``: a store that keeps an index of ends (:meth:`state_index`)
        may note it, if it lacks it."""

    async def retrying(self, run_id: str, started: float) -> None:  # noqa: B027 - optional hook
        """The failed run ``run_id`` (which started at ``started``) is about to be retried,
        and nothing is written to it yet: a store that keeps an index of ends makes its
        end unknown, durably, so that the noted failure never stands for the new end."""

    # -- the inbox: messages for a run that someone else may hold open --------

    @abc.abstractmethod
    async def post(self, run_id: str, message: ev.Message) -> None:
        """Leave ``message`` (with a unique ``message_id``) for the run, durably, without opening it.

        The holder of the run (or whoever opens it next) journals it and then
        removes it with :meth:`remove_messages`; a message already journaled
        (same ``message_id``) is removed without journaling it again.
        """

    @abc.abstractmethod
    async def messages(self, run_id: str) -> list[ev.Message]:
        """The messages waiting for the run, in the order they were posted."""

    @abc.abstractmethod
    async def remove_messages(self, run_id: str, message_ids: Collection[str]) -> None:
        """Forget the given messages of the run (they are journaled)."""

    @abc.abstractmethod
    async def runs_with_messages(self) -> set[str]:
        """The ids of the runs that have messages waiting."""

    def change_token(self) -> int:
        """A token to pass to :meth:`wait_for_change` as ``since``: take it before
        looking at the store, so that a change made while looking is not missed."""
        return 0

    async def wait_for_change(self, timeout: float, *, since: int | None = None) -> None:
        """Return when there may be new work (a run created or released, a message
        posted) since ``since`` (a :meth:`change_token`; default: since this call),
        or after ``timeout`` seconds. Stores without notifications just wait."""
        import trio  # noqa: PLC0415 - the CLI reads a FileStore without trio (start-up)

        await trio.sleep(timeout)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources held by the store."""
