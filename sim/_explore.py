"""Exploration: which schedules to play, and the public entry points.

``explore`` plays the crash-free reference first and numbers the crash points
it reaches. Then it crashes once at every one of them (the disk damage drawn
from the seed), restarts, and checks the invariants. With ``max_crashes >= 2``
it also crashes a second time at every point of each recovery (the restarted
process's work up to its first live activity), because recovery code is where
a second crash hurts. ``budget`` caps the number of schedules.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import itertools
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

import durable
from durable._core.values import encode_value
from durable.lowlevel import (
    HEADER_SIZE,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    Event,
    SignalReceived,
    StepCancelled,
    TimerFired,
    TimerStarted,
    decode_record,
    payloads_from,
)

from ._check import _history, check
from ._disk import DISK_FAULTS, Point
from ._hashseed import HashSeedReplays, refuse_in_a_hash_seed_child
from ._parallel import play_all, worker_count
from ._plan import ActivityFault, Crash, Recipe, Signal
from ._report import Failure, Report
from ._world import World, counted

#: How often each disk fault is drawn for a crash (kinder faults are common).
_DISK_WEIGHTS = {"kill": 3, "drop": 3, "torn": 2, "zeros": 1, "garbage": 1, "hole": 1, "eio": 2}
_RECOVERY_ENDS = ("activity-returned", "backoff")
#: Up to this many signals, every order of their arrival is explored; beyond it, the
#: order given and its reverse.
ALL_ORDERS_UP_TO = 3
#: The latest arrival explored (in journal records), so a long run's positions stay bounded.
MAX_ARRIVAL = 256
#: Several signals are also sent each at a point of its own when that makes at most this
#: many crash-free runs per order (two signals in a run of up to 21 records).
MAX_STAGGERED = 231


class Explorer:
    """Plays schedules of one workflow call against its crash-free reference."""

    def __init__(
        self,
        simulator: Simulator,
        workflow: durable.Workflow[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        seed: int = 0,
        faults: tuple[ActivityFault, ...] = (),
        run_id: str = "sim",
        signals: tuple[Signal, ...] = (),
    ) -> None:
        if not isinstance(workflow, durable.Workflow):
            raise TypeError(f"sim needs a function decorated with @durable.workflow (got {workflow!r})")
        self.simulator = simulator
        self.workflow = workflow
        self.args = args
        self.kwargs = kwargs
        self.seed = seed
        self.faults = faults
        self.run_id = run_id
        self.reference = self.play(self.base(signals))
        if signals:  # sent where they landed, so that restarted schedules send them there too
            self.reference = self.play(self.base(_as_arrived(signals, self.reference)))
            signals = self.reference.recipe.signals
        #: The crash-free run of each signal plan played, the reference of its schedules.
        self.references = {signals: self.reference}
        #: With signals: the arrivals played without crashes, and the branches they led to
        #: (each crash-tested), for the summary.
        self.arrivals_played = 0
        self.branch_count = 0
        ending = self.reference.ending
        if ending.kind == "failed" and "LoopMismatchError" in str(ending.error):
            raise ValueError(
                f"the crash-free run of {workflow.name!r} failed because an activity is written "
                f"for the other event loop: {ending.error}. Tell the simulator the loop: "
                f"sim.Simulator(loop={'asyncio' if simulator.loop == 'trio' else 'trio'!r}), or "
                "durable sim --loop"
            )
        if ending.kind in ("error", "hung", "crashed"):
            if ending.error is not None:
                raise ending.error
            raise RuntimeError(f"the crash-free run of {workflow.name!r} {ending.kind}")
        problem = self._external_problem()
        if problem is not None:
            raise AssertionError(f"after_each reports a problem after the crash-free run: {problem}")

    def base(self, signals: tuple[Signal, ...] = ()) -> Recipe:
        """The crash-free recipe of a signal plan."""
        return Recipe(self.seed, (), self.faults, run_id=self.run_id, signals=signals)

    def reference_of(self, recipe: Recipe) -> World:
        """The crash-free run with the recipe's signals, which its schedule is checked against."""
        reference = self.references.get(recipe.signals)
        if reference is None:
            reference = self.references[recipe.signals] = self.play(self.base(recipe.signals))
        return reference

    def arrivals(self, signals: Sequence[tuple[str, Any]]) -> tuple[list[Recipe], list[Failure]]:
        """Every arrival of the signals, crash-free, and one recipe per branch to crash-test.

        For each order (all of them for up to ``ALL_ORDERS_UP_TO`` signals, else the
        order given and its reverse), the signals are sent together once the journal
        holds 1, 2, 3... records (or when the run waits for a message only), until the
        run ends before that. Then, if there are at most ``MAX_STAGGERED`` of them, each
        at a point of its own: every non-decreasing choice of points, so that one may come
        while the run waits for the first and the next while it waits for the second.
        Each is played without crashes; arrivals that lead to the same history (signal
        records aside) are one branch, crash-tested once.
        """
        pairs = [tuple(pair) for pair in signals]
        orders: list[tuple[tuple[Any, ...], ...]] = (
            list(itertools.permutations(pairs))
            if len(pairs) <= ALL_ORDERS_UP_TO
            else [tuple(pairs), tuple(reversed(pairs))]
        )
        branches: dict[tuple[Any, ...], Recipe] = {}
        failures: list[Failure] = []
        for order in dict.fromkeys(orders):
            longest = 0
            for after in range(1, MAX_ARRIVAL + 1):
                length = self._arrival(order, (after,) * len(order), branches, failures)
                longest = max(longest, length)
                if after >= length:
                    break  # the run ended before this arrival: later ones are the same
            points = range(1, min(longest, MAX_ARRIVAL) + 1)
            staggered = itertools.combinations_with_replacement(points, len(order))
            if len(order) > 1 and math.comb(len(points) + len(order) - 1, len(order)) <= MAX_STAGGERED:
                for afters in staggered:
                    if len(set(afters)) > 1:
                        self._arrival(order, afters, branches, failures)
        self.branch_count = len(branches)
        return list(branches.values()), failures

    def _arrival(
        self,
        order: tuple[tuple[Any, ...], ...],
        afters: tuple[int, ...],
        branches: dict[tuple[Any, ...], Recipe],
        failures: list[Failure],
    ) -> int:
        """Play one arrival without crashes, noting its branch (or its failure): the journal's length."""
        plan = tuple(
            Signal(name, payload, after) for (name, payload), after in zip(order, afters, strict=True)
        )
        arrived = self.base(_as_arrived(plan, self.play(self.base(plan))))
        self.arrivals_played += 1
        world = self.reference_of(arrived)
        if world.ending.kind in ("error", "hung"):
            failures.append(Failure(arrived, _arrival_problem(world), self._replayer()))
        history = [e for e in _history(world.final_events) if e[0] != "SignalReceived"]
        branches.setdefault((order, repr(history)), arrived)
        return len(world.final_events)

    def play(self, recipe: Recipe) -> World:
        if self.simulator.before_each is not None:
            self.simulator.before_each()
        world = World(
            self.workflow,
            self.args,
            self.kwargs,
            recipe,
            sync=self.simulator.sync,
            loop=self.simulator.loop,
            codec=self.simulator.codec,
        )
        return world.play()

    def _external_problem(self) -> str | None:
        if self.simulator.after_each is None:
            return None
        try:
            return self.simulator.after_each()
        except AssertionError as exc:
            return str(exc) or "AssertionError"

    def hash_seed_replays(self, seeds: tuple[int, ...]) -> HashSeedReplays:
        """Start replaying the reference journal under other string-hash seeds (in child
        interpreters, which run meanwhile); :meth:`hash_seed_failures` reads their verdicts."""
        return HashSeedReplays(self.workflow, self.reference.plain_journal_bytes(), seeds, sim_seed=self.seed)

    def hash_seed_failures(self, replays: HashSeedReplays) -> tuple[list[Failure], str | None]:
        """The failures of the hash-seed replays (waiting for them to end), and a note if
        they could not run."""
        found, note = replays.results()
        failures = [
            Failure(attrs.evolve(self.reference.recipe, hash_seed=seed), divergence, self._replayer())
            for seed, divergence in found.items()
        ]
        return failures, note

    def order_recipes(self, limit: int = 24) -> Iterator[Recipe]:
        """Schedules that complete concurrent steps in other orders: every order of a small
        fan-out, a seeded sample of a large one (at most ``limit`` orders, each played once)."""
        widest = _widest_fan_out(self.reference.final_events)
        if widest < 2:
            return
        wanted = min(math.factorial(widest), limit)
        seen = {_completion_order(self.reference.final_events)}
        for order_seed in range(1, 8 * wanted + 1):
            if len(seen) >= wanted:
                return
            recipe = attrs.evolve(self.reference.recipe, order_seed=order_seed)
            order = _completion_order(self.play(recipe).final_events)
            if order not in seen:
                seen.add(order)
                yield recipe

    def bit_rot_recipes(self) -> list[Recipe]:
        """One bit flip inside each record of the finished reference journal (fault F9)."""
        journal = self.reference.journal_bytes()
        recipes = []
        pos = HEADER_SIZE
        while pos < len(journal):
            _, index, _, end = decode_record(journal, pos)
            offset = random.Random(f"{self.seed}/rot/{index}").randrange(pos, end)
            recipes.append(attrs.evolve(self.reference.recipe, rot_at=offset))
            pos = end
        return recipes

    def failure(self, recipe: Recipe) -> tuple[World, Failure | None]:
        world = self.play(recipe)
        divergence = check(world, self.reference_of(recipe))
        if divergence is None:
            problem = self._external_problem()
            if problem is not None:
                divergence = f"after_each found a problem in the outside world: {problem}{_reruns(world)}"
        if divergence is None:
            return world, None
        return world, Failure(_labelled(recipe, world), divergence, self._replayer())

    def _replayer(self) -> str:
        """How a failure is replayed: a Simulator with options is needed to see it again."""
        return "sim" if self.simulator == Simulator(on_schedule=self.simulator.on_schedule) else "simulator"

    def crash(self, point_number: int, label: str, salt: str) -> Crash:
        """A crash at a point, its disk damage drawn from the seed (fsync errors are not
        drawn: with ``"eio"`` opted in, every fsync gets a schedule of its own)."""
        rng = random.Random(f"{self.seed}/{salt}/{point_number}")
        faults = [d for d in self.simulator.disk_faults if d != "eio"] or ["drop"]
        disk = rng.choices(faults, weights=[_DISK_WEIGHTS[d] for d in faults])[0]
        return Crash(point_number, disk, label)

    def schedules(self, max_crashes: int, base: Recipe | None = None) -> Iterator[Recipe]:
        """Every single crash, then (if allowed) a second crash at every point of each recovery
        (of the crash-free run ``base``, the reference's by default)."""
        base = self.reference.recipe if base is None else base
        groups = equivalent_groups(self.reference_of(base).lifetimes[0].points)
        singles = [attrs.evolve(base, crashes=(self.crash(g[0].number, g[0].label, "1"),)) for g in groups]
        if "eio" in self.simulator.disk_faults:  # every fsync fails once, in its own schedule
            singles += [
                attrs.evolve(base, crashes=(Crash(p.number, "eio", p.label),))
                for group in groups
                for p in group
                if p.kind == "before fsync"
            ]
        yield from singles
        if max_crashes < 2:
            return
        for single in singles:
            recovery = self.play(single).lifetimes[1:2]
            for group in equivalent_groups(recovery[0].points) if recovery else []:
                if group[0].kind in _RECOVERY_ENDS:
                    break
                second = self.crash(group[0].number, group[0].label, f"2/{single.crashes[0].at}")
                yield attrs.evolve(base, crashes=(single.crashes[0], second))


_STARTS = (ActivityScheduled, TimerStarted)
_ENDS = (ActivityCompleted, ActivityFailed, TimerFired, StepCancelled)


def _as_arrived(plan: tuple[Signal, ...], world: World) -> tuple[Signal, ...]:
    """The plan with each signal's ``after`` where it landed in the run's journal: a signal
    is journaled at the sender's next turn, a few records past its nominal ``after``, and
    a schedule that crashes and restarts before then must send it at the same place."""
    landed = []
    records = 0
    for event in world.final_events:
        if isinstance(event, SignalReceived):
            landed.append(records)
        records += counted([event])
    return tuple(
        attrs.evolve(signal, after=max(1, landed[i])) if i < len(landed) else signal
        for i, signal in enumerate(plan)
    )


def _arrival_problem(world: World) -> str:
    sent = ", ".join(repr(s) for s in world.recipe.signals)
    return f"with the signals {sent} and no crash, the run {world.ending.result_text()}" + (
        f": {world.ending.error}" if world.ending.kind == "error" else ""
    )


def _widest_fan_out(events: list[Event]) -> int:
    """The most steps a run had in flight at once (the width of its widest gather or race)."""
    widest = in_flight = 0
    for event in events:
        if isinstance(event, _STARTS):
            in_flight += 1
            widest = max(widest, in_flight)
        elif isinstance(event, _ENDS):
            in_flight = max(0, in_flight - 1)
    return widest


def _completion_order(events: list[Event]) -> tuple[int, ...]:
    return tuple(
        e.seq
        for e in events
        if isinstance(e, ActivityCompleted | ActivityFailed | TimerFired | StepCancelled)
    )


def _reruns(world: World) -> str:
    """Which steps ran more than once in this schedule (the usual suspects of a double effect)."""
    lifetimes: dict[tuple[int, str], list[int]] = {}
    for execution in world.executions:
        lifetimes.setdefault((execution.seq, execution.activity), []).append(execution.lifetime)
    lines = [
        f"\n  step {seq} ({activity}, idempotency key {world.run_id}/{seq}) ran {len(seen)} times, in "
        f"processes {', '.join(map(str, seen))}"
        for (seq, activity), seen in sorted(lifetimes.items())
        if len(seen) > 1
    ]
    if not lines:
        return ""
    return "".join(lines) + (
        "\n  An activity runs again when a crash hits after its effect and before its completion is "
        "journaled; pass durable.activity_info().idempotency_key to the service so it applies the "
        "effect once."
    )


def equivalent_groups(points: Sequence[Point]) -> list[list[Point]]:
    """Points grouped by the world they leave: a point that changed nothing since the
    previous one (``before fsync`` right after ``after write``) joins its group, and a
    crash anywhere in a group is the same crash, so each group is crashed at once."""
    groups: list[list[Point]] = []
    for point in points:
        if groups and point.version == groups[-1][0].version:
            groups[-1].append(point)
        else:
            groups.append([point])
    return groups


def _labelled(recipe: Recipe, world: World) -> Recipe:
    """The recipe with each crash labelled by what was happening at its point."""
    crashes = []
    for crash, lifetime in zip(recipe.crashes, world.lifetimes, strict=False):
        label = lifetime.crashed_at.label if lifetime.crashed_at is not None else "(never reached)"
        crashes.append(Crash(crash.at, crash.disk, label))
    return attrs.evolve(recipe, crashes=tuple(crashes))


@attrs.frozen
class Simulator:
    """Exploration options beyond a workflow call: activity faults, durability, the outside world.

    ``sim.explore(...)`` is ``sim.Simulator().explore(...)``.

    Attributes:
        faults: activity faults applied in every schedule, the reference included
            (``sim.ActivityFault("charge", attempt=1)`` makes every first attempt of
            ``charge`` raise): the workflow's documented behaviour must hold under them.
        sync: the FileStore sync mode to simulate (``"always"``, ``"batch"``, ``"none"``).
        before_each: called before every schedule (the reference too): reset your fake
            services here, so each schedule starts from the same outside world.
        after_each: called after every schedule: inspect your fake services and return a
            description of what is wrong (or raise ``AssertionError``), or None. This is how
            an effect applied twice is caught.
        hash_seeds: string-hash seeds under which the crash-free journal is replayed in a
            child interpreter, to catch workflows that iterate sets of strings; () skips it.
        disk_faults: the disk damage crashes draw from; add ``"eio"`` (``sim.OPT_IN_FAULTS``)
            to also fail fsyncs with EIO, which durable must treat as fatal.
        bit_rot: also flip one bit in each record of the finished journal (fault F9) and
            check that durable refuses it with JournalCorruptError, never misreads it.
        on_schedule: called after each schedule with the number played so far, its recipe
            and its failure (None if it passed): for progress bars.
        loop: the event loop the workflow's ``async def`` activities are written for:
            ``"trio"`` (default) or ``"asyncio"``. With ``"asyncio"`` each attempt runs to
            its end on an asyncio loop of the simulator's own, as a sync activity runs:
            in no virtual time, so the simulator keeps its virtual clock either way.
        codec: payload codecs for the simulated store, as ``FileStore(codec=...)`` takes
            them: every schedule runs with its journals sealed by them, and every check
            reads them unsealed.
        workers: how many processes play the schedules of one exploration: 1 (default)
            plays them all in this process; None plays them in one forked copy of this
            process per core (when there are enough schedules to be worth it and this
            process runs no other thread). Each schedule still starts with ``before_each``
            and ends with ``after_each`` in the process that plays it, and the report is the
            same, provided the outside world the activities touch lives in this process's
            memory: forked copies share files, databases and services, so schedules played
            at the same time would see each other's effects.
    """

    faults: tuple[ActivityFault, ...] = attrs.field(default=(), converter=tuple)
    sync: str = "always"
    before_each: Callable[[], None] | None = None
    after_each: Callable[[], str | None] | None = None
    hash_seeds: tuple[int, ...] = attrs.field(default=(1, 2), converter=tuple)
    disk_faults: tuple[str, ...] = attrs.field(default=DISK_FAULTS, converter=tuple)
    bit_rot: bool = False
    on_schedule: Callable[[int, Recipe, Failure | None], None] | None = None
    loop: str = attrs.field(default="trio", validator=lambda _, __, value: _check_loop(value))
    codec: Any = None
    workers: int | None = attrs.field(default=1, eq=False)

    def __attrs_post_init__(self) -> None:
        payloads_from(self.codec)  # a codec that is not one fails here, not in a schedule
        unknown = [d for d in self.disk_faults if d not in _DISK_WEIGHTS]
        if unknown or not self.disk_faults:
            raise ValueError(
                f"disk_faults must be taken from {tuple(_DISK_WEIGHTS)} (got {self.disk_faults!r})"
            )

    def explore(
        self,
        workflow: durable.Workflow[..., Any],
        *args: Any,
        seed: int = 0,
        max_crashes: int = 2,
        budget: int | None = None,
        signals: Sequence[tuple[str, Any]] = (),
        run_id: str | None = None,
        **kwargs: Any,
    ) -> Report:
        """Crash-test a workflow call at every crash point and check every schedule.

        Args:
            workflow: a ``@durable.workflow`` function; ``args`` and ``kwargs`` go to it.
            seed: decides the disk damage of each crash and the order of ready tasks.
            max_crashes: 1 for single crashes only; 2 (default) adds a second crash at
                every point of each recovery.
            budget: the most schedules to play (None: all of them).
            signals: ``(name, payload)`` pairs the outside world sends the run. Their
                arrival is played at every point of the run (before its first step,
                between any two, while it waits, after a timeout), in every order, and
                each branch this leads to is crash-tested against the crash-free run
                with the same arrival (see :meth:`Explorer.arrivals`).
            run_id: the run's id (default: one of this exploration's own, ``sim-`` and
                12 hex digits, so idempotency keys never collide with another
                exploration's). Failure recipes keep it.

        Returns:
            A :class:`Report`; ``report.ok`` is True when every schedule matched the reference.
        """
        refuse_in_a_hash_seed_child()
        check_arguments(workflow, args, kwargs)
        if max_crashes < 1:
            raise ValueError(f"max_crashes must be at least 1 (got {max_crashes!r})")
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be a positive number of schedules (got {budget!r})")
        started = time.perf_counter()
        pairs = _signal_pairs(signals)
        explorer = Explorer(
            self,
            workflow,
            args,
            kwargs,
            seed=seed,
            faults=self.faults,
            run_id=run_id if run_id is not None else f"sim-{uuid.uuid4().hex[:12]}",
            signals=tuple(Signal(name, payload) for name, payload in pairs),
        )
        # The hash-seed replays run in child interpreters while the schedules are played.
        replays = explorer.hash_seed_replays(self.hash_seeds)
        try:
            played, failures = self._play_schedules(explorer, max_crashes, budget, pairs)
        except BaseException:
            replays.stop()
            raise
        seeded, note = explorer.hash_seed_failures(replays)
        failures = seeded + failures
        return Report(
            workflow=workflow.name,
            reference=explorer.reference,
            schedules=played,
            crash_points=len(explorer.reference.lifetimes[0].points),
            failures=failures,
            seconds=time.perf_counter() - started,
            explorer=explorer,
            notes=[note] if note else [],
        )

    def _play_schedules(
        self, explorer: Explorer, max_crashes: int, budget: int | None, signals: list[tuple[str, Any]]
    ) -> tuple[int, list[Failure]]:
        """Play and check every schedule (up to ``budget``): how many, and their failures."""
        rot = explorer.bit_rot_recipes() if self.bit_rot else []
        orders = explorer.order_recipes()
        branches, arrival_failures = explorer.arrivals(signals) if signals else ([], [])
        others = [b for b in branches if b != explorer.reference.recipe]
        crashed = itertools.chain(
            explorer.schedules(max_crashes), *(explorer.schedules(max_crashes, b) for b in others)
        )
        recipes = list(itertools.islice(itertools.chain(orders, crashed, rot), budget))
        workers = worker_count(self.workers, len(recipes))
        failures = list(arrival_failures)
        with _collector_tuned():
            verdicts = play_all(recipes, functools.partial(_verdict, explorer), workers)
            for played, (recipe, failure) in enumerate(zip(recipes, verdicts, strict=True), start=1):
                if failure is not None:
                    failures.append(failure)
                if self.on_schedule is not None:
                    self.on_schedule(played, recipe, failure)
        return len(recipes), failures

    def replay_recipe(
        self, workflow: durable.Workflow[..., Any], *args: Any, recipe: Recipe, **kwargs: Any
    ) -> Report:
        """Play exactly one schedule again (from a failure's ``recipe``) and check it."""
        refuse_in_a_hash_seed_child()
        check_arguments(workflow, args, kwargs)
        started = time.perf_counter()
        explorer = Explorer(
            self,
            workflow,
            args,
            kwargs,
            seed=recipe.seed,
            faults=recipe.faults,
            run_id=recipe.run_id,
            signals=recipe.signals,
        )
        # Each signal is sent where it lands in the crash-free run (as an exploration's
        # recipes already say), so that a crash before then sends it at the same place.
        landed = explorer.reference.recipe.signals
        notes = _moved_signals(recipe.signals, landed)
        recipe = attrs.evolve(recipe, signals=landed)
        if recipe.hash_seed is not None:
            found, note = explorer.hash_seed_failures(explorer.hash_seed_replays((recipe.hash_seed,)))
            failure = found[0] if found else None
            notes += [note] if note else []
        else:
            world, failure = explorer.failure(recipe)
            notes += _unreached_crashes(recipe, world)
        return Report(
            workflow=workflow.name,
            reference=explorer.reference,
            schedules=1,
            crash_points=len(explorer.reference.lifetimes[0].points),
            failures=[failure] if failure is not None else [],
            seconds=time.perf_counter() - started,
            explorer=explorer,
            recipe=recipe,
            notes=notes,
        )

    def assert_crash_safe(self, workflow: durable.Workflow[..., Any], *args: Any, **kwargs: Any) -> Report:
        """``explore``, raising ``AssertionError`` with the first failure's recipe and divergence.

        Accepts ``explore``'s own options (``seed``, ``max_crashes``, ``budget``); every
        other argument goes to the workflow. Returns the report when every schedule passed.
        """
        report = self.explore(workflow, *args, **kwargs)
        if not report.ok:
            raise AssertionError(report.failure_text())
        return report


#: While the schedules are played, the collector's youngest generation is collected after
#: each schedule, and otherwise only when this many objects have piled up in it.
_YOUNG_THRESHOLD = 100_000


def _verdict(explorer: Explorer, recipe: Recipe) -> Failure | None:
    """Play and check one schedule; then collect what it left (see :func:`_collector_tuned`)."""
    failure = explorer.failure(recipe)[1]
    if gc.isenabled():
        gc.collect(0)
    return failure


@contextlib.contextmanager
def _collector_tuned() -> Iterator[None]:
    """Collect each schedule's garbage once, when the schedule is over, while they are played.

    A schedule's world is cyclic garbage once played (a crash's traceback holds the
    frames that hold it), and so are trio's runners and tasks: left to the collector's
    thresholds, it ran in the middle of schedules, went through each one's live objects
    (its journals, points and executions) and promoted them, to go through them again
    in older generations: about 6% of the time of an exploration of steps(100). Now the
    youngest generation is collected after each schedule (:func:`_verdict`), when all of
    it but the garbage is gone, and otherwise only when ``_YOUNG_THRESHOLD`` objects have
    piled up in it (a schedule that makes more garbage than that is still collected while
    it runs). The thresholds are put back at the end.

    The objects that exist before the schedules (the modules, the reference run, the
    recipes) are also kept out of the full passes (``gc.freeze``), unless something else
    has frozen objects already: unfreezing at the end would undo that.
    """
    thresholds = gc.get_threshold()
    frozen = not gc.get_freeze_count()
    if frozen:
        gc.freeze()
    gc.set_threshold(max(thresholds[0], _YOUNG_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if frozen:
            gc.unfreeze()


def _moved_signals(given: Sequence[Signal], landed: Sequence[Signal]) -> list[str]:
    """A note for each signal of a recipe that is sent elsewhere than its ``after`` says
    (where it landed in the crash-free run): a recipe is never changed without a word."""
    return [
        f"signal {mine.name!r}: sent after record {there.after} (where it lands in the crash-free "
        f"run), not {mine.after} as the recipe says"
        for mine, there in zip(given, landed, strict=False)
        if mine.after != there.after
    ]


def _unreached_crashes(recipe: Recipe, world: World) -> list[str]:
    """A note for each crash of a recipe that the schedule never reached: it played fewer
    crashes than the recipe asks for, and a pass says nothing about the crash missed."""
    notes = []
    for number, crash in enumerate(recipe.crashes, start=1):
        lifetime = world.lifetimes[number - 1] if number <= len(world.lifetimes) else None
        if lifetime is None or lifetime.crashed_at is None:
            reached = len(lifetime.points) if lifetime is not None else 0
            notes.append(
                f"crash {number} (at point {crash.at}) never happened: "
                + (
                    f"that lifetime reached {reached} crash points"
                    if lifetime is not None
                    else "the run ended before that lifetime"
                )
            )
    return notes


def _signal_pairs(signals: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    pairs = []
    for pair in signals:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) and pair[0]):
            raise TypeError(
                f"signals must be (name, payload) pairs, e.g. signals=[('approved', True)] (got {pair!r})"
            )
        encode_value(pair[1], what=f"the payload of signal {pair[0]!r}")  # fails here, not in a schedule
        pairs.append(pair)
    return pairs


def _check_loop(loop: object) -> None:
    if loop not in ("trio", "asyncio"):
        raise ValueError(f"loop must be 'trio' or 'asyncio' (got {loop!r})")


_DEFAULT = Simulator()


def check_arguments(workflow: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse arguments the workflow's signature does not take: its crash-free run would
    fail at once, every schedule would fail the same way, and the exploration would pass."""
    fn = getattr(workflow, "fn", None)
    if fn is None:
        return  # not a workflow: the exploration says so
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable Python cannot describe
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"the arguments given do not fit workflow {workflow.name!r}{signature}: {exc}"
        ) from None


def explore(
    workflow: durable.Workflow[..., Any],
    *args: Any,
    seed: int = 0,
    max_crashes: int = 2,
    budget: int | None = None,
    signals: Sequence[tuple[str, Any]] = (),
    run_id: str | None = None,
    **kwargs: Any,
) -> Report:
    """Crash-test a workflow call at every crash point; see :meth:`Simulator.explore`."""
    return _DEFAULT.explore(
        workflow,
        *args,
        seed=seed,
        max_crashes=max_crashes,
        budget=budget,
        signals=signals,
        run_id=run_id,
        **kwargs,
    )


def replay_recipe(workflow: durable.Workflow[..., Any], *args: Any, recipe: Recipe, **kwargs: Any) -> Report:
    """Play one schedule again from a failure's ``recipe``; see :meth:`Simulator.replay_recipe`."""
    return _DEFAULT.replay_recipe(workflow, *args, recipe=recipe, **kwargs)


def assert_crash_safe(workflow: durable.Workflow[..., Any], *args: Any, **kwargs: Any) -> Report:
    """``explore`` and raise ``AssertionError`` with the first failure's recipe and divergence.

    Accepts ``explore``'s own options (``seed``, ``max_crashes``, ``budget``); every
    other argument goes to the workflow. Returns the report when every schedule passed.
    """
    return _DEFAULT.assert_crash_safe(workflow, *args, **kwargs)
