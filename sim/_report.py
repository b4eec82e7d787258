"""Reports of an exploration, and the narrated trace of one schedule (``explain``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from durable.lowlevel import ActivityCompleted, ActivityFailed, ActivityScheduled, Event, loads_shown

from ._plan import Recipe
from ._world import Lifetime, World

if TYPE_CHECKING:
    from ._explore import Explorer


@attrs.frozen
class Failure:
    """A schedule that broke an invariant.

    Attributes:
        recipe: pass it to ``sim.replay_recipe(wf, *args, recipe=...)`` to play it again.
        divergence: what differed from the crash-free reference (expected vs got).
    """

    recipe: Recipe
    divergence: str
    #: What replays it: ``"sim"``, or ``"simulator"`` when the exploration had options
    #: (faults, checks of the outside world...) that a replay needs too.
    replayer: str = "sim"

    def __str__(self) -> str:
        return (
            f"{self.divergence}\nReproduce with:\n"
            f"  {self.replayer}.replay_recipe(wf, ..., recipe={self.recipe!r})"
        )


@attrs.define
class Report:
    """What an exploration found.

    Attributes:
        ok: True when every schedule matched the crash-free reference.
        result: the reference's result (the ``WorkflowFailed`` error if the workflow raised).
        schedules: how many crash schedules were played.
        crash_points: how many crash points the crash-free run reached.
        failures: the schedules that broke an invariant.
        seconds: how long the exploration took (wall time).
    """

    workflow: str
    reference: World = attrs.field(repr=False)
    schedules: int
    crash_points: int
    failures: list[Failure]
    seconds: float
    explorer: Explorer = attrs.field(repr=False)
    recipe: Recipe | None = None
    #: Checks that could not run, and why.
    notes: list[str] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def result(self) -> Any:
        ending = self.reference.ending
        return ending.value if ending.kind == "returned" else ending.error

    def __str__(self) -> str:
        verdict = "all matched the crash-free run" if self.ok else f"{len(self.failures)} failed"
        schedules = "schedule" if self.schedules == 1 else "schedules"
        return (
            f"sim: {self.workflow}: {self.schedules} {schedules} over {self.crash_points} crash "
            f"points in {self.seconds:.2f}s: {verdict}"
        )

    def failure_text(self) -> str:
        """The summary line and the first failure with its recipe."""
        if self.ok:
            return str(self)
        return f"{self}\nFirst failure:\n{self.failures[0]}"

    def explain(self, recipe: Recipe | None = None) -> str:
        """Narrate one schedule step by step, as a lesson in how recovery works.

        Without ``recipe``: the first failure if there is one, else the schedule
        that crashes right after the first activity returned (the at-least-once
        window), else the replayed recipe.
        """
        if recipe is None and self.failures and self.failures[0].recipe.hash_seed is not None:
            return f"Replayed the crash-free journal in another interpreter:\n{self.failures[0].divergence}"
        chosen = recipe or self._representative()
        world, failure = self.explorer.failure(chosen)
        return narrate(world, self.reference, chosen, failure.divergence if failure else None)

    def _representative(self) -> Recipe:
        if self.failures and not self.failures[0].recipe.hash_seed:
            return self.failures[0].recipe
        if self.recipe is not None:
            return self.recipe
        # The at-least-once window of the second activity tells the whole lesson: replay
        # feeds the first step from the journal, the second runs again with its key.
        points = self.reference.lifetimes[0].points
        windows = [p for p in points if p.kind == "activity-returned"]
        point = windows[min(1, len(windows) - 1)] if windows else (points[-1] if points else None)
        crashes = () if point is None else (self.explorer.crash(point.number, point.label, "explain"),)
        return Recipe(self.explorer.seed, crashes, self.explorer.faults)


_POINT_MEANING = {
    "activity-returned": "the activity returned, but its completion is not journaled yet: the "
    "at-least-once window, where the effect happened and the journal does not know it",
    "backoff": "a failed attempt is journaled and the retry backoff is running",
    "timer": "a timer's deadline is journaled and the wait is running",
    "recovering": "the restarted process has opened the run's journal and is about to replay it",
    "before write": "the record is about to be written",
    "after write": "the record is written but not yet fsynced: a power loss may lose or tear it",
    "before fsync": "the journal is about to be fsynced",
    "after fsync": "the fsync returned: everything written so far is durable",
    "create": "the journal file is being created",
    "before fsync of directory": "the new journal file exists but its directory entry is not durable",
    "after fsync of directory": "the new journal file is durable",
    "before truncate": "recovery is about to cut a torn tail off the journal",
}

_DISK_MEANING = {
    "kill": "the process was killed; the operating system kept everything it had written",
    "drop": "power loss: every write not yet fsynced was lost",
    "torn": "power loss: the unsynced tail was torn off at an arbitrary byte",
    "zeros": "power loss: the file grew, but part of its unsynced tail reads as zeros",
    "garbage": "power loss: part of the unsynced tail holds random garbage",
    "hole": "power loss: a later write persisted while an earlier one did not",
    "eio": "the fsync failed with EIO; durable stopped the run, the process was restarted, and "
    "the data that was not yet synced is gone",
}


def narrate(world: World, reference: World, recipe: Recipe, divergence: str | None) -> str:
    """The trace of one played schedule, in sentences, ending with its verdict."""
    lines = [f"Schedule {recipe!r}", f"Without crashes the run {reference.ending.result_text()}.", ""]
    for lifetime in world.lifetimes:
        lines += _narrate_lifetime(world, lifetime)
    lines.append("")
    if divergence is None:
        lines.append(
            f"Same result as the run without crashes: {world.ending.result_text()}. Invariants hold."
        )
    else:
        lines.append(f"DIVERGENCE: {divergence}")
    return "\n".join(lines)


def _narrate_lifetime(world: World, lifetime: Lifetime) -> list[str]:
    lines = []
    if lifetime.number == 1:
        lines.append(f"Process 1 starts run {world.run_id!r} of workflow {world.workflow.name}.")
    else:
        lines.append(f"Process {lifetime.number} starts and attaches to run {world.run_id!r}.")
        lines += ["  " + line for line in _replayed(lifetime.journal_at_start)]
    for execution in world.executions:
        if execution.lifetime != lifetime.number:
            continue
        again = any(
            e.run_id == execution.run_id
            and e.seq == execution.seq
            and e.attempt == execution.attempt
            and e.lifetime < lifetime.number
            for e in world.executions
        )
        note = " (again, with the same idempotency key)" if again else ""
        child = "" if execution.run_id == world.run_id else f" of child run {execution.run_id!r}"
        lines.append(
            f"  step {execution.seq}{child}: runs activity {execution.activity}, "
            f"attempt {execution.attempt}, idempotency key {execution.run_id}/{execution.seq}{note}: "
            f"{execution.outcome}"
        )
    if lifetime.crashed_at is not None and lifetime.crash is not None:
        point = lifetime.crashed_at
        meaning = _POINT_MEANING.get(point.kind, point.kind)
        disk = lifetime.crash.disk
        if lifetime.failed_fsync is not None:
            ending = lifetime.ending.result_text()
            lines.append(f"  FSYNC ERROR at crash point {point.number}: {point.label}; the run {ending}.")
        else:
            lines.append(f"  CRASH at crash point {point.number}: {point.label}.")
            disk = "drop" if disk == "eio" else disk
        lines.append(f"    Here {meaning}.")
        text = _DISK_MEANING[disk]
        lines.append(f"    {text[0].upper()}{text[1:]}.")
        for damage in lifetime.damage:
            lines.append(f"    {damage.path.rsplit('/', 1)[-1]}: {damage.how}.")
        lines.append(f"    The journal now holds: {_holding(lifetime.surviving)}.")
    else:
        lines.append(f"  The run {lifetime.ending.result_text()}.")
    return lines


def _replayed(events: list[Event]) -> list[str]:
    done = [e for e in events if isinstance(e, ActivityCompleted | ActivityFailed)]
    if not done:
        return ["Nothing had completed, so replay feeds nothing; the workflow starts over."]
    names = {e.seq: e.name for e in events if isinstance(e, ActivityScheduled)}
    lines = ["Replay re-runs the workflow from the top, feeding recorded outcomes instead of executing:"]
    for event in done:
        if isinstance(event, ActivityCompleted):
            outcome = f"result {_value(event.result)}"
        else:
            outcome = f"error {event.error}"
        lines.append(f"  step {event.seq} ({names.get(event.seq, '?')}): {outcome} from the journal")
    return lines


def _holding(events: list[Event]) -> str:
    if not events:
        return "nothing (the run's journal did not survive; the run never started as far as the disk knows)"
    return ", ".join(_event_text(e) for e in events)


def _event_text(event: Event) -> str:
    seq = getattr(event, "seq", None)
    return f"{type(event).__name__}(step {seq})" if seq is not None else type(event).__name__


def _value(data: bytes) -> str:
    text = repr(loads_shown(data))
    return text if len(text) <= 40 else text[:37] + "..."
