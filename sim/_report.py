"""Reports of an exploration, and the narrated trace of one schedule (``explain``)."""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from durable._core.durations import format_duration
from durable.lowlevel import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    AttemptFailed,
    AttemptHeartbeat,
    CancelRequested,
    ChildCompleted,
    ChildStarted,
    Event,
    PatchRecorded,
    RunCancelled,
    RunCompleted,
    RunContinuedAsNew,
    RunFailed,
    RunResumed,
    RunRetried,
    RunStarted,
    SideEffectRecorded,
    SignalAwaited,
    SignalReceived,
    StepCancelled,
    TimerFired,
    TimerStarted,
    loads_shown,
)

from ._plan import Recipe
from ._world import Ending, Lifetime, World

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

    @property
    def kind(self) -> str:
        """What broke, without the facts of this schedule: failures of one kind share a cause
        (the input isolated for a non-deterministic workflow, else the broken invariant)."""
        isolated = re.search(r"Likely cause \(isolated\): the ([a-z ]+)\.", self.divergence)
        if isolated:
            return f"non-deterministic workflow code: the {isolated.group(1)}"
        if "Likely cause" in self.divergence:
            return "non-deterministic workflow code (no single input isolated)"
        first = self.divergence.strip().splitlines()[0] if self.divergence.strip() else ""
        # The facts of a schedule (step numbers, processes, values) vary; the invariant does not.
        return re.sub(r"'[^']*'|\d+(\.\d+)?", "…", first)

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
    #: What the reader should know: checks that could not run, and why; a replayed
    #: recipe that was not played as written (a crash never reached, a signal moved).
    notes: list[str] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failing_schedules(self) -> list[Failure]:
        """The failures of played schedules (at most :attr:`schedules` of them)."""
        return [f for f in self.failures if f.recipe.hash_seed is None]

    @property
    def hash_seed_failures(self) -> list[Failure]:
        """The failures of the replays under other hash seeds, which are not schedules: they
        replay the crash-free run in another interpreter (one failure per hash seed)."""
        return [f for f in self.failures if f.recipe.hash_seed is not None]

    def kinds(self) -> list[list[Failure]]:
        """The failures grouped by :attr:`Failure.kind` (one group per underlying cause), in
        the order each kind was first found."""
        groups: dict[str, list[Failure]] = {}
        for failure in self.failures:
            groups.setdefault(failure.kind, []).append(failure)
        return list(groups.values())

    @property
    def result(self) -> Any:
        ending = self.reference.ending
        return ending.value if ending.kind == "returned" else ending.error

    def __str__(self) -> str:
        verdict = "all matched the crash-free run" if self.ok else self.failures_text()
        schedules = "schedule" if self.schedules == 1 else "schedules"
        # A replayed recipe's notes say what was not played as written: part of its verdict.
        # (An exploration's notes, about checks that could not run, are in `notes` and
        # printed by `durable sim`.)
        notes = "".join(f"\nnote: {note}" for note in self.notes) if self.recipe is not None else ""
        return (
            f"sim: {self.workflow}: {self.schedules} {schedules} over {self.crash_points} crash "
            f"points in {self.seconds:.2f}s: {verdict}{notes}"
        )

    def failures_text(self) -> str:
        """How many schedules failed, the hash-seed replays that failed, and how many kinds
        of failure (causes) that makes: ``"24 failing schedules of 24 played, and the replay
        under 2 other hash seeds failed; 1 kind of failure"``."""
        failing = len(self.failing_schedules)
        parts = [f"{failing} failing schedule{'' if failing == 1 else 's'} of {self.schedules} played"]
        seeds = len(self.hash_seed_failures)
        if seeds:
            parts.append(f"the replay under {seeds} other hash seed{'s' if seeds > 1 else ''} failed")
        kinds = len(self.kinds())
        return f"{', and '.join(parts)}; {kinds} kind{'s' if kinds != 1 else ''} of failure"

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
        # The reference's own recipe (its run id, its signals...), crashed at that point.
        return attrs.evolve(self.reference.recipe, crashes=crashes)


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
    """The trace of one played schedule, in sentences, ending with its verdict: every
    process lifetime, what replay fed back from the journal (every record, none skipped),
    what ran live, and each crash with what the disk kept."""
    lines = [f"Schedule {recipe!r}", f"Without crashes the run {_ended(reference.ending)}.", ""]
    for lifetime in world.lifetimes:
        lines += _narrate_lifetime(world, lifetime)
    lines.append("")
    if divergence is None:
        lines.append(f"Same result as the run without crashes: {_ended(world.ending)}. Invariants hold.")
    else:
        lines.append(f"DIVERGENCE: {divergence}")
    return "\n".join(lines)


def _narrate_lifetime(world: World, lifetime: Lifetime) -> list[str]:
    start = lifetime.journal_at_start
    crashed = lifetime.crashed_at is not None or lifetime.failed_fsync is not None
    # A crashed lifetime is told as it wrote its journal, so that the records a power
    # loss takes away are told too (each marked lost), not silently skipped.
    end = (lifetime.written_at_crash or lifetime.surviving) if crashed else world.final_events
    new = end[len(start) :] if end[: len(start)] == start else end
    kept = _common_prefix(end, lifetime.surviving) if crashed else len(end)
    story = _Story(world, start or end)
    lines = []
    if lifetime.number == 1:
        lines.append(f"Process 1 starts run {world.run_id!r} of workflow {world.workflow.name}.")
    else:
        resumed = next((e.t for e in new if isinstance(e, RunResumed)), None)
        at = "" if resumed is None else f" at {story.at(resumed)}"
        lines.append(f"Process {lifetime.number} starts{at} and attaches to run {world.run_id!r}.")
        story.restart = resumed
        lines += ["  " + line for line in _replayed(story, start)]
        lines.append("  Then, live (each record is journaled before the workflow sees it):")
    executions = [e for e in world.executions if e.lifetime == lifetime.number]
    told = new if lifetime.number > 1 else end
    for index, event in enumerate(told, start=len(end) - len(told)):
        lines += ["  " + line for line in _executions_before(world, story, event, executions)]
        lines += ["  " + line for line in story.tell(event, replaying=False)]
        if index >= kept:
            lines.append("    (written, but the crash lost this record: it was not fsynced yet)")
    lines += ["  " + line for line in _executions_before(world, story, None, executions)]
    lines += _ending(lifetime)
    return lines


def _common_prefix(written: list[Event], surviving: list[Event]) -> int:
    """How many of the records written are still there, in order, after the crash."""
    kept = 0
    for mine, found in zip(written, surviving, strict=False):
        if mine != found:
            break
        kept += 1
    return kept


def _replayed(story: _Story, events: list[Event]) -> list[str]:
    if not events:
        return ["Nothing of the run survived, so there is nothing to replay; the run starts over."]
    if len(events) == 1:
        return ["Only the run's start survived, so replay feeds nothing; the workflow starts over."]
    lines = ["Replay re-runs the workflow from the top, feeding it the journal record by record; "]
    lines[0] += "nothing fed from the journal runs again:"
    for event in events:
        lines += ["  " + line for line in story.tell(event, replaying=True)]
    return lines


def _executions_before(world: World, story: _Story, event: Event | None, executions: list[Any]) -> list[str]:
    """The activity attempts that ran (the user's function was called) and end with
    ``event``'s record (all that are left when ``event`` is None), taken from ``executions``."""
    if event is None:
        due = list(executions)
    elif isinstance(event, ActivityCompleted | ActivityFailed | AttemptFailed):
        attempt = getattr(event, "attempt", None) or getattr(event, "attempts", None)
        due = [
            e
            for e in executions
            if e.run_id == world.run_id and e.seq == event.seq and (attempt is None or e.attempt <= attempt)
        ]
    elif isinstance(event, ChildCompleted):
        child = story.children.get(event.seq)
        due = [e for e in executions if e.run_id == child]
    else:
        return []
    lines = []
    for execution in due:
        executions.remove(execution)
        again = any(
            e.run_id == execution.run_id
            and e.seq == execution.seq
            and e.attempt == execution.attempt
            and e.lifetime < execution.lifetime
            for e in world.executions
        )
        note = " (again, with the same idempotency key)" if again else ""
        child = "" if execution.run_id == world.run_id else f" of child run {execution.run_id!r}"
        outcome = execution.outcome
        if isinstance(event, ActivityCompleted) and outcome.startswith("returned "):
            outcome = f"returned {_value(event.result)}"  # whole, from the journal
        lines.append(
            f"step {execution.seq}{child}: runs activity {execution.activity}, "
            f"attempt {execution.attempt}, idempotency key {execution.run_id}/{execution.seq}{note}: "
            f"{outcome}"
        )
    return lines


def _ending(lifetime: Lifetime) -> list[str]:
    if lifetime.crashed_at is None or lifetime.crash is None:
        return [f"  The run {_ended(lifetime.ending)}."]
    lines = []
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
    return lines


class _Story:
    """Tells a run's journal records one by one, keeping what the next ones need: what
    each step is, which waits are open, which signals are kept for a later wait."""

    def __init__(self, world: World, events: list[Event]) -> None:
        first = events[0] if events else None
        self.t0 = first.t if isinstance(first, RunStarted) else 0.0
        self.restart: float | None = None
        #: What each step is, by seq: ("activity", name), ("sleep", ...), ("signal", name)...
        self.steps: dict[int, tuple[str, str]] = {}
        self.children: dict[int, str] = {}
        self.waiting: dict[str, list[int]] = {}
        self.kept: dict[str, list[float]] = {}
        #: When each timer is due, by seq.
        self.deadlines: dict[int, float] = {}
        #: The step number the next new step gets.
        self.next_seq = getattr(first, "first_seq", 0)

    def at(self, t: float) -> str:
        """A wall-clock time as virtual time since the run started."""
        since = t - self.t0
        return "+0s" if since < 0.0005 else f"+{format_duration(since, precise=True)}"

    def tell(self, event: Event, *, replaying: bool) -> list[str]:
        """What ``event`` means, as one or a few lines (every record gets one)."""
        teller = _TELLERS.get(type(event))
        lines = self._unrecorded(event)
        if teller is None:
            return [*lines, f"{type(event).__name__}{_of_step(event)}"]
        return [*lines, teller(self, event, replaying)]

    def _unrecorded(self, event: Event) -> list[str]:
        """The steps before ``event``'s that left no record of their own: a wait_signal
        answered at once by a signal the journal kept (its answer is that signal's record)."""
        seq = getattr(event, "seq", None)
        if seq is None or not isinstance(event, _STEP_STARTS) or seq < self.next_seq:
            return []
        lines = []
        for missing in range(self.next_seq, seq):
            kept = min(((t, name) for name, times in self.kept.items() for t in times[:1]), default=None)
            if kept is None:
                lines.append(f"step {missing}: a step that left no record of its own")
                continue
            self.kept[kept[1]].pop(0)
            lines.append(
                f"step {missing}: wait_signal({kept[1]!r}) takes at once the signal kept since "
                f"{self.at(kept[0])} (no record of its own: replay hands it that signal again)"
            )
        self.next_seq = seq + 1
        return lines

    def name(self, seq: int) -> str:
        return self.steps.get(seq, ("step", "?"))[1]


#: The records that start a step (a new step number first appears in one of them).
_STEP_STARTS = (ActivityScheduled, TimerStarted, SideEffectRecorded, ChildStarted, SignalAwaited)


def _of_step(event: Event) -> str:
    seq = getattr(event, "seq", None)
    return "" if seq is None else f" (step {seq})"


def _from_journal(replaying: bool) -> str:
    return ", from the journal" if replaying else ""


def _tell_started(story: _Story, e: RunStarted, replaying: bool) -> str:
    return f"RunStarted: {e.workflow}{_call_text(e.args)} at {story.at(e.t)}{_from_journal(replaying)}"


def _tell_scheduled(story: _Story, e: ActivityScheduled, replaying: bool) -> str:
    story.steps[e.seq] = ("activity", e.name)
    return f"step {e.seq}: activity {e.name}{_call_text(e.args)} scheduled{_from_journal(replaying)}"


def _tell_attempt_failed(story: _Story, e: AttemptFailed, replaying: bool) -> str:
    return (
        f"step {e.seq} ({story.name(e.seq)}): attempt {e.attempt} failed ({e.error.type}: "
        f"{_cut(e.error.message)}); the next attempt is due at {story.at(e.retry_at)}"
        + _from_journal(replaying)
    )


def _tell_completed(story: _Story, e: ActivityCompleted, replaying: bool) -> str:
    if replaying:
        return (
            f"step {e.seq} ({story.name(e.seq)}): result {_value(e.result)} from the journal, fed back "
            "to the workflow; the activity does not run again"
        )
    return f"step {e.seq} ({story.name(e.seq)}): completed with {_value(e.result)}, journaled"


def _tell_failed(story: _Story, e: ActivityFailed, replaying: bool) -> str:
    error = f"{e.error.type}: {_cut(e.error.message)}"
    if replaying:
        return f"step {e.seq} ({story.name(e.seq)}): failed for good ({error}), from the journal: " + (
            "ActivityError is raised at the yield again, without running it"
        )
    return (
        f"step {e.seq} ({story.name(e.seq)}): failed for good after {e.attempts} attempt(s) ({error}): "
        "ActivityError is raised at the yield"
    )


def _tell_timer_started(story: _Story, e: TimerStarted, replaying: bool) -> str:
    kind, name = story.steps.get(e.seq, ("sleep", ""))
    if kind == "signal":
        story.steps[e.seq] = ("signal timeout", name)
        at = story.at(e.fire_at)
        return f"step {e.seq}: wait_signal({name!r}) times out at {at}{_from_journal(replaying)}"
    story.steps[e.seq] = ("sleep", format_duration(e.seconds))
    story.deadlines[e.seq] = e.fire_at
    text = f"step {e.seq}: durable.sleep({format_duration(e.seconds)!r}) until {story.at(e.fire_at)}"
    if replaying:
        left = "" if story.restart is None else f" ({_left(e.fire_at - story.restart)} left)"
        return f"{text}, its deadline from the journal: the restarted process waits only what is left{left}"
    return f"{text}; the deadline is journaled, so a restart waits only what is left"


def _left(seconds: float) -> str:
    return "nothing" if seconds <= 0 else format_duration(seconds, precise=True)


def _tell_timer_fired(story: _Story, e: TimerFired, replaying: bool) -> str:
    kind, name = story.steps.get(e.seq, ("sleep", "?"))
    if kind == "signal timeout":
        for seqs in story.waiting.values():
            if e.seq in seqs:
                seqs.remove(e.seq)
        if replaying:
            return (
                f"step {e.seq}: wait_signal({name!r}) timed out at {story.at(e.t)}, from the journal: "
                "replay raises SignalTimeout at the yield again"
            )
        return (
            f"step {e.seq}: no signal {name!r} came in time: SignalTimeout is raised at the yield "
            f"at {story.at(e.t)}"
        )
    if replaying:
        return (
            f"step {e.seq}: the {name} timer fired at {story.at(e.t)}, from the journal: replay goes "
            "past it at once"
        )
    late = e.t - story.deadlines.get(e.seq, e.t)
    if late >= 1.0:  # taken back after its deadline (a run let go while waiting, a restart)
        return (
            f"step {e.seq}: the {name} timer fired at {story.at(e.t)}: the {name} passed, in virtual "
            f"time, and {format_duration(late, precise=True)} more before a process took the run back"
        )
    return f"step {e.seq}: the {name} timer fired at {story.at(e.t)}: the {name} passed, in virtual time"


def _tell_value(story: _Story, e: SideEffectRecorded, replaying: bool) -> str:
    what = f"{e.name}()" if e.name.startswith("durable.") else f"side effect {e.name}"
    story.steps[e.seq] = ("value", what)
    got = _value(e.value) if e.error is None else f"an error ({e.error.type}: {_cut(e.error.message)})"
    if replaying:
        return (
            f"step {e.seq}: {what} gets {got} back from the journal: the value recorded at "
            f"{story.at(e.t)}, not a new one"
        )
    return f"step {e.seq}: {what} recorded {got} at {story.at(e.t)}; replay will feed back this value"


def _tell_awaited(story: _Story, e: SignalAwaited, replaying: bool) -> str:
    story.steps[e.seq] = ("signal", e.name)
    kept = story.kept.get(e.name)
    if kept:
        return f"step {e.seq}: wait_signal({e.name!r}) takes the signal kept since {story.at(kept.pop(0))}"
    story.waiting.setdefault(e.name, []).append(e.seq)
    return f"step {e.seq}: wait_signal({e.name!r}) waits for the signal{_from_journal(replaying)}"


def _tell_signal(story: _Story, e: SignalReceived, replaying: bool) -> str:
    payload = _value(e.payload)
    text = f"signal {e.name!r} arrived at {story.at(e.t)} with payload {payload}{_from_journal(replaying)}"
    waiting = story.waiting.get(e.name)
    if waiting:
        return f"{text}: step {waiting.pop(0)} resumes with it"
    story.kept.setdefault(e.name, []).append(e.t)
    return f"{text}: kept in the journal until a wait_signal({e.name!r}) takes it"


def _tell_child_started(story: _Story, e: ChildStarted, replaying: bool) -> str:
    story.steps[e.seq] = ("child", e.workflow)
    story.children[e.seq] = e.run_id
    call = f"{e.workflow}{_call_text(e.args)}"
    return f"step {e.seq}: child run {e.run_id!r} of {call} starts{_from_journal(replaying)}"


def _tell_child_completed(story: _Story, e: ChildCompleted, replaying: bool) -> str:
    outcome = (
        f"returned {_value(e.result)}"
        if e.error is None
        else f"failed ({e.error.type}: {_cut(e.error.message)}): ChildWorkflowError is raised at the yield"
    )
    return f"step {e.seq}: child run {story.children.get(e.seq, '?')!r} {outcome}{_from_journal(replaying)}"


def _tell_patch(story: _Story, e: PatchRecorded, replaying: bool) -> str:
    return f"patched({e.change_id!r}) answers True{_from_journal(replaying)}: the run takes the new code path"


def _tell_cancel(story: _Story, e: CancelRequested, replaying: bool) -> str:
    return (
        f"a cancel request arrived at {story.at(e.t)} ({e.reason}){_from_journal(replaying)}: "
        "durable.Cancelled is raised at the yield, and the open steps are cancelled"
    )


def _tell_step_cancelled(story: _Story, e: StepCancelled, replaying: bool) -> str:
    return (
        f"step {e.seq} ({story.name(e.seq)}) is cancelled: it lost a race, its gather failed, or a "
        f"cancel request stopped it{_from_journal(replaying)}"
    )


def _tell_resumed(story: _Story, e: RunResumed, replaying: bool) -> str:
    return (
        f"RunResumed at {story.at(e.t)}: a process took the run back and replayed it (a restart, or a "
        f"run let go while it waited and taken back when due){_from_journal(replaying)}"
    )


def _tell_heartbeat(story: _Story, e: AttemptHeartbeat, replaying: bool) -> str:
    return f"step {e.seq}: attempt {e.attempt} heartbeats with details {_value(e.details)}"


def _tell_end(story: _Story, e: Event, replaying: bool) -> str:
    if isinstance(e, RunCompleted):
        what = f"returned {_value(e.result)}"
    elif isinstance(e, RunFailed):
        what = f"failed ({e.error.type}: {_cut(e.error.message)})"
    elif isinstance(e, RunCancelled):
        what = f"was cancelled ({e.reason})"
    elif isinstance(e, RunContinuedAsNew):
        what = f"continued as new with {_call_text(e.args)}"
    else:
        what = f"was retried ({getattr(e, 'reason', '')})"
    return f"the run {what} at {story.at(e.t)}, journaled{_from_journal(replaying)}"


_TELLERS: dict[type[Any], Callable[[_Story, Any, bool], str]] = {
    RunStarted: _tell_started,
    ActivityScheduled: _tell_scheduled,
    AttemptFailed: _tell_attempt_failed,
    ActivityCompleted: _tell_completed,
    ActivityFailed: _tell_failed,
    TimerStarted: _tell_timer_started,
    TimerFired: _tell_timer_fired,
    SideEffectRecorded: _tell_value,
    SignalAwaited: _tell_awaited,
    SignalReceived: _tell_signal,
    ChildStarted: _tell_child_started,
    ChildCompleted: _tell_child_completed,
    PatchRecorded: _tell_patch,
    CancelRequested: _tell_cancel,
    StepCancelled: _tell_step_cancelled,
    RunResumed: _tell_resumed,
    AttemptHeartbeat: _tell_heartbeat,
    RunCompleted: _tell_end,
    RunFailed: _tell_end,
    RunCancelled: _tell_end,
    RunContinuedAsNew: _tell_end,
    RunRetried: _tell_end,
}


def _holding(events: list[Event]) -> str:
    if not events:
        return "nothing (the run's journal did not survive; the run never started as far as the disk knows)"
    return ", ".join(_event_text(e) for e in events)


def _event_text(event: Event) -> str:
    seq = getattr(event, "seq", None)
    return f"{type(event).__name__}(step {seq})" if seq is not None else type(event).__name__


#: Values are shown whole up to this many characters, then cut with an ellipsis.
WIDTH = 200


def _value(data: bytes) -> str:
    return _shown(loads_shown(data))


def _shown(value: Any) -> str:
    """A value as a reader wants it: a time or an id as its text, the rest as its repr."""
    text = str(value) if isinstance(value, datetime.datetime | datetime.date | uuid.UUID) else repr(value)
    return _cut(text)


def _ended(ending: Ending) -> str:
    """How a lifetime ended, its value or error shown whole up to :data:`WIDTH`."""
    if ending.kind == "returned":
        return f"returned {_shown(ending.value)}"
    return _cut(ending.result_text())


def _cut(text: str) -> str:
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + "…"


def _call_text(data: bytes) -> str:
    try:
        args, kwargs = loads_shown(data)
    except (TypeError, ValueError):
        return f"({_value(data)})"
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in dict(kwargs).items()]
    return _cut(f"({', '.join(parts)})")
