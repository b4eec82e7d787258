"""The simulated world: one schedule, played out as a series of process lifetimes.

Theory of operation
-------------------
A :class:`World` plays one :class:`~sim.Recipe`. Each *lifetime* is a fresh
``trio.run`` on a ``MockClock`` (virtual time, autojump) with a fresh
``durable.Runtime`` over a ``durable.FileStore`` whose file system is the
world's :class:`~sim._disk.SimDisk`. The lifetime starts (or attaches to) the
run, exactly as a restarted program would, and either finishes or crashes at
the recipe's crash point. A crash abandons everything in memory; the disk
applies the crash's damage, and the next lifetime starts on what survived.

What lives outside the lifetimes, as it would outside a real process: the disk,
the virtual wall clock (it keeps running across a crash), and the user's own
activity functions and the fake services they talk to.

Determinism: every choice comes from the recipe's seed (trio's scheduler is
seeded and put in its deterministic mode, the disk damage is drawn from a
seeded generator). Lifetimes after the first run with a shifted ``time.time``
and a reseeded ``random``, so workflow code that reads them directly behaves
differently on replay and is caught as a divergence.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import attrs
import sniffio
import trio
import trio.testing

import durable
from durable._core.values import encode_value
from durable._inbox import send
from durable.lowlevel import (
    HEADER_SIZE,
    Event,
    Hooks,
    RunResumed,
    SignalReceived,
    decode_record,
    encode_header,
    encode_record,
    payloads_from,
    scan,
)

from ._disk import Crasher, Damage, Point, SimDisk, SimulatedCrash
from ._plan import ActivityFault, Crash, InjectedFault, Recipe, Signal

RUN_ID = "sim"
ROOT = "/sim"
#: The virtual wall clock starts here (2023-11-14T22:13:20Z), the same in every schedule.
EPOCH = 1_700_000_000.0
#: A lifetime that runs longer than this in virtual time is reported as hung.
TIME_LIMIT = 10 * 365 * 86400.0
#: How often (virtual seconds) a lifetime's runtime looks at the store for messages: no
#: other process sends any; a run it let go is taken back at its due time regardless.
_POLL = 86400.0


@attrs.define
class Execution:
    """One activity attempt that really ran (the user's function was called)."""

    lifetime: int
    seq: int
    attempt: int
    activity: str
    max_attempts: int
    outcome: str = "did not return (crash)"
    #: The run the step belongs to (a child run's id for its activities).
    run_id: str = RUN_ID


@attrs.define
class Ending:
    """How a lifetime ended: ``returned``, ``failed`` (the workflow raised), ``cancelled``,
    ``error`` (durable refused to continue: divergence...), ``crashed`` or ``hung``."""

    kind: str
    value: Any = None
    error: BaseException | None = None

    def result_text(self) -> str:
        if self.kind == "returned":
            return f"returned {_short(self.value)}"
        if self.kind in ("failed", "cancelled", "error"):
            verb = {"failed": "failed", "cancelled": "was cancelled", "error": "stopped"}[self.kind]
            return f"{verb}: {self.error}"
        return self.kind


@attrs.define
class Lifetime:
    """One simulated process lifetime and what it left behind."""

    number: int
    crash: Crash | None
    journal_at_start: list[Event]
    points: Sequence[Point] = attrs.Factory(list)
    crashed_at: Point | None = None
    ending: Ending = attrs.Factory(lambda: Ending("crashed"))
    durable_at_crash: list[Event] = attrs.Factory(list)
    #: The run's journal as written at the crash, fsynced or not (what the process believed).
    written_at_crash: list[Event] = attrs.Factory(list)
    surviving: list[Event] = attrs.Factory(list)
    #: Every run's journal (the run's and its child runs') as durable at the crash,
    #: and as the next process found it, by run id.
    durable_runs_at_crash: dict[str, list[Event]] = attrs.Factory(dict)
    surviving_runs: dict[str, list[Event]] = attrs.Factory(dict)
    damage: list[Damage] = attrs.Factory(list)
    #: The fsync that failed with EIO (opt-in fault), after which the process was restarted.
    failed_fsync: Point | None = None
    #: Files fsynced again after their fsync had failed (never allowed).
    fsync_retried: list[str] = attrs.Factory(list)
    #: Files written through a descriptor whose file no path leads to any more
    #: (renamed over or removed): work nobody will ever read (never allowed).
    stale_writes: list[str] = attrs.Factory(list)


class SimHooks(Hooks):
    """Executor hooks of a simulated lifetime: record executions, inject faults, crash."""

    sync_activities_in_thread = False

    def __init__(self, world: World, lifetime: int, crasher: Crasher) -> None:
        self.world = world
        self.lifetime = lifetime
        self.crasher = crasher
        #: When the heartbeats of an attempt with a "silent" fault stop arriving (virtual
        #: time), by run, step and attempt.
        self._silent_from: dict[tuple[str, int, int], float] = {}

    async def run_attempt(self, info: durable.ActivityInfo, call: Callable[[], Awaitable[Any]]) -> Any:
        execution = Execution(
            self.lifetime, info.seq, info.attempt, info.activity, info.max_attempts, run_id=info.run_id
        )
        world = self.world
        world.executions.append(execution)
        self.crasher.version += 1  # Crasher.changed(), inline: once per attempt
        recipe = world.recipe
        fault = _matching_fault(recipe.faults, info) if recipe.faults else None
        if fault is not None and fault.kind == "silent":
            self._silent_from[_attempt_key(info)] = trio.current_time() + fault.seconds
        try:
            if recipe.order_seed is not None:  # a tie-breaker: another order among ready activities
                draw = random.Random(f"{recipe.order_seed}/{info.seq}/{info.attempt}")
                await trio.sleep(draw.random() * 1e-6)
            if fault is not None:
                await _misbehave(fault, info)
            value = await (call() if world.loop == "trio" else world.attempt(call))
        except trio.Cancelled:
            execution.outcome = "cancelled (its timeout expired)"
            raise
        except Exception as exc:
            execution.outcome = f"raised {type(exc).__name__}: {exc}"
            raise
        finally:
            if self._silent_from:  # only attempts with a "silent" fault are in it
                self._silent_from.pop(_attempt_key(info), None)
        execution.outcome = f"returned {_short(value)}"
        return value

    def heartbeat(self, info: durable.ActivityInfo) -> bool:
        # Activities run on the simulator's thread (inline, or nested on its asyncio loop).
        silent_from = self._silent_from.get(_attempt_key(info))
        return silent_from is None or trio.current_time() < silent_from

    async def point(self, name: str, run_id: str, seq: int | None) -> None:
        self.crasher.hit(name, f"step {seq}" if seq is not None else f"run {run_id!r}")

    def produce(self, name: str, run_id: str, seq: int, make: Callable[[], Any]) -> Any:
        # durable.random() and uuid4() draw the same value for the same step in every
        # lifetime, so a value lost in a crash is drawn again identically and the
        # crash-free run stays a valid reference. (Reading random directly in
        # workflow code still differs per lifetime, and is caught.)
        # Drawn by the run id relative to the exploration's own, so that two explorations
        # (with run ids of their own) draw the same values.
        own = self.world.run_id
        relative = RUN_ID + run_id[len(own) :] if run_id.startswith(own) else run_id
        draw = random.Random(f"{self.world.recipe.seed}/{relative}/{seq}/{name}")
        if name == "durable.random":
            return draw.random()
        if name == "durable.uuid4":
            return uuid.UUID(int=draw.getrandbits(128), version=4)
        return make()


async def _coroutine(call: Callable[[], Awaitable[Any]]) -> Any:
    return await call()


async def _ready(value: Any) -> Any:
    return value


def _attempt_key(info: durable.ActivityInfo) -> tuple[str, int, int]:
    return (info.run_id, info.seq, info.attempt)


def _matching_fault(faults: tuple[ActivityFault, ...], info: durable.ActivityInfo) -> ActivityFault | None:
    for fault in faults:
        if fault.matches(info.activity, info.seq, info.attempt):
            return fault
    return None


async def _misbehave(fault: ActivityFault, info: durable.ActivityInfo) -> None:
    if fault.kind == "raise":
        raise InjectedFault(f"injected fault: {info.activity} attempt {info.attempt} raises")
    if fault.kind == "hang":
        await trio.sleep_forever()
    if fault.kind == "slow":
        await trio.sleep(fault.seconds)


class World:
    """Plays one recipe for one workflow call; see the module docstring."""

    def __init__(
        self,
        workflow: durable.Workflow[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recipe: Recipe,
        *,
        sync: str = "always",
        run_id: str | None = None,
        loop: str = "trio",
        codec: Any = None,
    ) -> None:
        self.workflow = workflow
        self.args = args
        self.kwargs = kwargs
        self.recipe = recipe
        self.sync = sync
        self.run_id = run_id if run_id is not None else recipe.run_id
        #: The loop async activities are written for (Simulator.loop), and the asyncio
        #: loop that runs them when it is asyncio (made at the first, closed at the end).
        self.loop = loop
        self._asyncio_loop: asyncio.AbstractEventLoop | None = None
        #: The store's payload codecs (Simulator.codec): the journals on the simulated disk
        #: are sealed with them, and every check reads them unsealed.
        self.codec = codec
        self.payloads = payloads_from(codec)
        self.disk = SimDisk()
        self.wall = EPOCH
        self.executions: list[Execution] = []
        self.lifetimes: list[Lifetime] = []
        #: The recipe's signals that the run got (sent, and journaled), in order.
        self.signals_sent: list[Signal] = []
        #: The run's journal once the schedule is played, as a next process would read it.
        self.final_events: list[Event] = []
        self._journal = _journal_path(self.run_id)

    def play(self) -> World:
        """Run lifetimes until one ends without crashing (at most one per crash, plus one)."""
        try:
            return self._play()
        finally:
            if self._asyncio_loop is not None:
                self._asyncio_loop.close()

    def attempt(self, call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        """An activity attempt, on trio, or run to its end on asyncio (Simulator.loop)."""
        if self.loop == "trio":
            return call()
        if self._asyncio_loop is None:
            self._asyncio_loop = asyncio.new_event_loop()
        # Inside it, sniffio must say asyncio (trio marks the whole thread as its own).
        library, sniffio.thread_local.name = sniffio.thread_local.name, None
        try:
            value = self._asyncio_loop.run_until_complete(_coroutine(call))
        finally:
            sniffio.thread_local.name = library
        return _ready(value)

    def _play(self) -> World:
        journal: list[Event] = []
        for number in range(1, len(self.recipe.crashes) + 2):
            crashes = self.recipe.crashes
            crash = crashes[number - 1] if number <= len(crashes) else None
            lifetime = self._lifetime(number, crash, journal)
            self.lifetimes.append(lifetime)
            if lifetime.ending.kind != "crashed" and lifetime.failed_fsync is None:
                break
            journal = lifetime.surviving
        if self.recipe.rot_at is not None:
            self._rot(self.recipe.rot_at)
        self.final_events = self.journal_events()
        return self

    def _rot(self, offset: int) -> None:
        """Flip a bit of the finished journal, then let one more process attach to the run."""
        rng = random.Random(f"{self.recipe.seed}/rot/{offset}")
        self.disk.rot(self._journal, offset, rng)
        self.lifetimes.append(self._lifetime(len(self.lifetimes) + 1, None, []))

    @property
    def ending(self) -> Ending:
        return self.lifetimes[-1].ending

    def journal_events(self) -> list[Event]:
        """The run's journal as the next process would read it ([] if it is unreadable)."""
        file = self.disk.files.get(self._journal)
        if file is None:
            return []
        try:
            return self._events(bytes(file.data), self._journal)
        except durable.JournalCorruptError:
            return []

    def _events(self, data: bytes, path: str) -> list[Event]:
        """The events of journal bytes, with their payloads unsealed (Simulator.codec)."""
        events = _scanned(data, path)
        return events if self.payloads is None else self.payloads.unseal_all(events, self.run_id)

    def journal_bytes(self) -> bytes:
        file = self.disk.files.get(self._journal)
        return b"" if file is None else bytes(file.data)

    def plain_journal_bytes(self) -> bytes:
        """The run's journal with its payloads unsealed, for a replay without the codec."""
        data = self.journal_bytes()
        if self.payloads is None or not data:
            return data
        records = (encode_record(event, at, at) for at, event in enumerate(self._events(data, self._journal)))
        return encode_header() + b"".join(records)

    def _lifetime(self, number: int, crash: Crash | None, journal: list[Event]) -> Lifetime:
        crasher = Crasher(crash.at if crash is not None else None)
        crasher.fail_fsync = crash is not None and crash.disk == "eio"
        self.disk.crasher = crasher
        lifetime = Lifetime(number, crash, journal, crasher.points)
        hooks = SimHooks(self, number, crasher)
        start_wall = self.wall
        crash_time = [0.0]
        sender = SignalSender(self, journal, crasher) if self.recipe.signals else None

        async def main() -> None:
            crasher.on_crash = lambda: crash_time.__setitem__(0, trio.current_time())
            store = durable.FileStore(ROOT, sync=self.sync, fs=self.disk, codec=self.codec)
            if sender is not None:
                await sender.look()
            with trio.move_on_after(TIME_LIMIT) as scope:
                # Every run that waits is let go and taken back by replay, as a worker
                # does: its crash points are explored with the rest.
                async with (
                    durable.Runtime(
                        store, hooks=hooks, poll=_POLL, waiting_cache=0, clock_anchor=start_wall
                    ) as runtime,
                    trio.open_nursery() as outside,
                ):
                    if sender is not None:
                        outside.start_soon(sender.send, runtime)
                    lifetime.ending = await self._start_and_wait(runtime)
                    outside.cancel_scope.cancel()
            if scope.cancelled_caught:
                lifetime.ending = Ending("hung")
            self.wall = start_wall + trio.current_time()

        with perturbed(self.recipe.seed, number):
            try:
                trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
            except BaseException as exc:
                if not _is_crash(exc):
                    raise
                self._after_crash(lifetime, crasher.crashed, crash)
                self.wall = start_wall + crash_time[0]
        lifetime.fsync_retried = list(self.disk.fsync_retried)
        self.disk.fsync_retried.clear()
        lifetime.stale_writes = list(self.disk.stale_writes)
        self.disk.stale_writes.clear()
        if crasher.failed_fsync is not None:
            # The process is restarted after the fsync error; what was not synced is gone.
            lifetime.failed_fsync = crasher.failed_fsync
            self._after_crash(lifetime, crasher.failed_fsync, crash)
        return lifetime

    async def _start_and_wait(self, runtime: durable.Runtime) -> Ending:
        try:
            handle = await runtime.start(self.workflow, *self.args, id=self.run_id, **self.kwargs)
            return Ending("returned", await handle.result())
        except durable.WorkflowFailed as exc:
            return Ending("failed", error=exc)
        except durable.Cancelled as exc:
            return Ending("cancelled", error=exc)
        except Exception as exc:
            return Ending("error", error=exc)

    def _after_crash(self, lifetime: Lifetime, point: Point | None, crash: Crash | None) -> None:
        assert crash is not None
        lifetime.crashed_at = point
        file = self.disk.files.get(self._journal)
        if file is not None:
            lifetime.durable_at_crash = self._events(bytes(file.synced), self._journal)
            lifetime.written_at_crash = self._events(bytes(file.data), self._journal)
        lifetime.durable_runs_at_crash = self._journals(synced=True)
        rng = random.Random(f"{self.recipe.seed}/{lifetime.number}/{crash.at}/{crash.disk}")
        lifetime.damage = self.disk.crash("drop" if crash.disk == "eio" else crash.disk, rng)
        lifetime.surviving = self.journal_events()
        lifetime.surviving_runs = self._journals(synced=False)

    def final_runs(self) -> dict[str, list[Event]]:
        """Every run's journal once the schedule is played (the run's and its child runs')."""
        return self._journals(synced=False)

    def _journals(self, *, synced: bool) -> dict[str, list[Event]]:
        """Every readable journal on the disk (the run's and its child runs'), by run id."""
        found = {}
        for path, file in sorted(self.disk.files.items()):
            if not path.endswith(".journal"):
                continue
            try:
                events = self._events(bytes(file.synced if synced else file.data), path)
            except durable.JournalCorruptError:
                continue
            first = events[0] if events else None
            if isinstance(first, durable.lowlevel.RunStarted):
                found[first.run_id] = events
        return found


class SignalSender:
    """The outside world that sends the recipe's signals, in one process lifetime.

    It sends each :class:`~sim.Signal` once it is due (the run's journal holds
    ``after`` records, or the run waits with only a message to wake it) with a
    ``durable.Client`` of its own, on a store of its own over the same disk, as
    another process would: to a run the simulated process holds, the signal is
    posted to the store's inbox (a crash may hit while it sits there), and the
    runtime journals it at once (its watch would within its poll); a run let go
    while it waits gets it in its journal, and is taken back at once.

    The signals a lifetime finds in the journal or the inbox were sent before the
    crash and are not sent again; a signal that a crash lost is sent again, as a
    client that got no answer retries.
    """

    def __init__(self, world: World, journal: list[Event], crasher: Crasher) -> None:
        self.world = world
        self.journal_name = world._journal.rpartition("/")[2]
        self.journaled = {e.message_id for e in journal if isinstance(e, SignalReceived)}
        self.store = durable.FileStore(ROOT, sync=world.sync, fs=world.disk, codec=world.codec)
        self.pending = list(world.recipe.signals[len(self.journaled) :])
        self.records = counted(journal)
        self.changed = trio.Event()
        crasher.on_point = self._seen

    def _seen(self, point: Point) -> None:
        if point.kind == "after write" and point.target == self.journal_name and point.data:
            self.records += _record_count(point.data)
        self.changed.set()

    def _due(self, runtime: durable.Runtime) -> bool:
        if self.records >= self.pending[0].after:
            return True
        return runtime._watch.let_go.get(self.world.run_id) == math.inf  # waits for a message only

    async def _until_due(self, runtime: durable.Runtime) -> None:
        """Wait for the next signal's time: a change on disk, or the world at rest (once per
        change: the run let go waiting for a message only does nothing more on disk)."""
        idle_ok = True
        while not self._due(runtime):
            self.changed = trio.Event()
            async with trio.open_nursery() as nursery:
                if idle_ok:
                    nursery.start_soon(_cancel_when_idle, nursery.cancel_scope)
                await self.changed.wait()
                nursery.cancel_scope.cancel()
            idle_ok = self.changed.is_set()

    async def look(self) -> None:
        """Count the signals waiting in the inbox as sent (before the runtime journals them)."""
        world = self.world
        waiting = [m for m in await self.store.messages(world.run_id) if isinstance(m, SignalReceived)]
        del self.pending[: len([m for m in waiting if m.message_id not in self.journaled])]

    async def send(self, runtime: durable.Runtime) -> None:
        world, run_id = self.world, self.world.run_id
        while self.pending:
            await self._until_due(runtime)
            signal = self.pending[0]
            # What durable.Client.signal sends, but stamped with the simulation's wall clock
            # (the client's time.time() would be this machine's, years from the virtual one).
            payload = encode_value(signal.payload, what=f"the payload of signal {signal.name!r}")
            message = SignalReceived(signal.name, payload, runtime._running()[1]())
            try:
                await send(self.store, run_id, message)
            except (durable.RunConflictError, durable.UnknownRunError):
                return  # the run ended (or is gone) before it was due: it never gets the rest
            self.pending.pop(0)
            world.signals_sent.append(signal)
            # The runtime's watch would see it within its poll (0.2 s by default): at once.
            if run_id in runtime._watch.let_go:  # it is due now: take it back
                await runtime._watch._take_back(runtime._running()[1]())
            else:  # journal what waits in the inbox
                await runtime._take_messages(run_id)


async def _cancel_when_idle(scope: trio.CancelScope) -> None:
    # Before the virtual clock jumps (wait_all_tasks_blocked wakes before the autojump).
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


def _record_count(data: bytes) -> int:
    """How many journal records a write carries."""
    count = 0
    pos = HEADER_SIZE if data.startswith(encode_header()) else 0
    while pos < len(data):
        try:
            event, _, _, pos = decode_record(data, pos)
        except ValueError:
            break
        count += not isinstance(event, RunResumed)
    return count


def counted(events: list[Event]) -> int:
    """The records that count for a signal's ``after`` (a recovery's RunResumed does not:
    a run recovered from a journal is as far as the run that wrote it)."""
    return sum(not isinstance(event, RunResumed) for event in events)


#: Journals decoded lately, by path and content, with the prefix of each that ends at its
#: last valid record: a schedule reads the same bytes several times (the durable journal at
#: a crash is what survives a "drop", and what the checks read), schedules that crash
#: between two fsyncs find the same durable journal, and each journal a schedule reads
#: begins with one read just before (the journal at the crash, the one it recovered from).
_SCANS: collections.OrderedDict[tuple[str, bytes], tuple[list[Event], bytes]] = collections.OrderedDict()
_SCANS_KEPT = 16


def _scanned(data: bytes, path: str) -> list[Event]:
    """``scan(data, path).events``, decoded once per content (events are frozen values:
    the same bytes decode to equal events, so a copy of the list is as good as a scan)."""
    key = (path, data)
    found = _SCANS.get(key)
    if found is None:
        found = _SCANS[key] = _decoded(data, path)  # a corrupt journal raises, and is not kept
        if len(_SCANS) > _SCANS_KEPT:
            _SCANS.popitem(last=False)
    else:
        _SCANS.move_to_end(key)
    return list(found[0])


def _decoded(data: bytes, path: str) -> tuple[list[Event], bytes]:
    """The events of a journal, and its bytes up to the end of its last valid record.

    When the journal extends one decoded lately by whole valid records, only those are
    decoded; anything else (a torn tail, damage, another journal) is left to ``scan``,
    so the events are always what ``scan`` gives.
    """
    events, clean = _known_prefix(data, path)
    if clean:
        rest = _records_after(data, len(clean), len(events))
        if rest is not None:
            return events + rest, data
    found = scan(data, path)
    return found.events, data if found.end == len(data) else data[: found.end]


def _known_prefix(data: bytes, path: str) -> tuple[list[Event], bytes]:
    """The longest journal decoded lately (up to its last valid record) that ``data`` begins with."""
    best: tuple[list[Event], bytes] = ([], b"")
    for (known_path, _), (events, clean) in _SCANS.items():
        if known_path == path and len(clean) > len(best[1]) and data.startswith(clean):
            best = (events, clean)
    return best if len(best[1]) >= HEADER_SIZE else ([], b"")


def _records_after(data: bytes, pos: int, index: int) -> list[Event] | None:
    """The records from ``pos`` to the end, numbered from ``index``; None unless every one
    is valid and in sequence (then ``scan`` decides what the rest is)."""
    events = []
    while pos < len(data):
        try:
            event, got, _, pos = decode_record(data, pos)
        except ValueError:
            return None
        if got != index:
            return None
        events.append(event)
        index += 1
    return events


@functools.lru_cache(maxsize=64)
def _journal_path(run_id: str) -> str:
    """Where the store of every lifetime keeps the run's journal (made once per run id:
    a store is many objects to make for one path)."""
    return durable.FileStore(ROOT, fs=SimDisk()).journal_path(run_id)


def _is_crash(exc: BaseException) -> bool:
    if isinstance(exc, SimulatedCrash):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_crash(e) for e in exc.exceptions)
    return False


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def perturbed(seed: int, lifetime: int) -> Iterator[None]:
    """Make a lifetime's inputs follow the seed, and differ from one lifetime to the next.

    ``random``, ``uuid.uuid4`` and trio's scheduler follow the seed and the
    lifetime number, ``os.getpid`` names the lifetime, and after the first
    lifetime ``time.time`` runs 17 days ahead per restart. Workflow code that
    reads any of them directly therefore sees other values on replay, as it
    would in real life, and the simulator catches it.
    """
    saved = (random.getstate(), time.time, time.time_ns, uuid.uuid4, os.getpid)
    real_time, real_time_ns = time.time, time.time_ns
    ids: list[random.Random] = []  # seeded at the first uuid4(): most lifetimes never call it

    def uuid4() -> uuid.UUID:
        if not ids:
            ids.append(random.Random(f"uuid/{seed}/{lifetime}"))
        return uuid.UUID(int=ids[0].getrandbits(128), version=4)

    random.setstate(_seeded(seed * 7919 + lifetime))
    _seed_trio(seed * 104729 + lifetime)
    uuid.uuid4 = uuid4
    os.getpid = lambda: 1000 + lifetime
    if lifetime > 1:
        shift = 17 * 86400.0 * (lifetime - 1) + 0.125
        time.time = lambda: real_time() + shift
        time.time_ns = lambda: real_time_ns() + int(shift * 1e9)
    try:
        yield
    finally:
        state, time.time, time.time_ns, uuid.uuid4, os.getpid = saved
        random.setstate(state)


def _seed_trio(seed: int) -> None:
    """Make trio's choice among ready tasks follow ``seed`` (private trio API, pinned by a test)."""
    run_module: Any = trio._core._run
    run_module._ALLOW_DETERMINISTIC_SCHEDULING = True
    run_module._r.setstate(_seeded(seed))


@functools.lru_cache(maxsize=256)
def _seeded(seed: int) -> tuple[Any, ...]:
    """The state of a ``random.Random`` seeded with ``seed``: the same generator as
    ``.seed(seed)`` makes, and setting a state costs less than seeding (three times a
    schedule, the same few seeds in every schedule)."""
    return random.Random(seed).getstate()


__all__ = [
    "EPOCH",
    "RUN_ID",
    "Ending",
    "Execution",
    "InjectedFault",
    "Lifetime",
    "SignalSender",
    "World",
    "counted",
]
