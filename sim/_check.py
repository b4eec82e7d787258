"""The oracle: invariants every crash schedule must satisfy against the crash-free reference.

Each check returns a readable divergence (expected vs got) or None. The
rules are those of the simulator's documentation (``docs/simulator.md``, "The invariants") and
the journal contract (``docs/journal-v1.md`` section 15: faults F1-F10, rules R1-R6).
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import durable
from durable import ErrorInfo
from durable.lowlevel import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    AttemptFailed,
    AttemptHeartbeat,
    ChildCompleted,
    ChildStarted,
    Event,
    PatchRecorded,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunResumed,
    SideEffectRecorded,
    StepCancelled,
    TimerFired,
    TimerStarted,
    dumps_value,
    loads_value,
    replay,
)

from ._hashseed import Cause, diagnose
from ._world import Ending, Execution, Lifetime, World, perturbed

#: The hint when no single input could be isolated as the cause (see :func:`likely_cause`).
LIKELY_CAUSES = (
    "Likely cause: the workflow's code does something that is not the same on replay: it reads "
    "the clock (time.time(), datetime.now()), random numbers (random, uuid.uuid4()), iterates a "
    "set of strings, or keeps state in a global. Do such things in an activity, whose result is "
    "journaled, and keep workflow code a pure function of its arguments and step results."
)


#: The cause isolated for each crash-free reference (found once, when a schedule first
#: diverges in a way only non-deterministic code explains).
_CAUSES: weakref.WeakKeyDictionary[World, Cause | None] = weakref.WeakKeyDictionary()


def likely_cause(reference: World) -> str:
    """The ``Likely cause`` paragraph of a divergence that non-deterministic workflow code
    explains: the input isolated by changing one at a time (``sim._hashseed``), or, when none
    alone reproduces it, the list of usual suspects. Never a cause that was not isolated."""
    cause = isolated_cause(reference)
    return LIKELY_CAUSES if cause is None else cause.text()


def isolated_cause(reference: World) -> Cause | None:
    """The input whose change alone makes the workflow diverge from ``reference`` (None:
    none alone does, or the workflow is deterministic); found once per reference."""
    if reference not in _CAUSES:
        _CAUSES[reference] = diagnose(reference.workflow, reference.final_events, seed=reference.recipe.seed)
    return _CAUSES[reference]


#: What the checks derive from each crash-free reference's final journal, by function:
#: every schedule is compared with the same reference, which never changes once played.
_DERIVED: weakref.WeakKeyDictionary[World, dict[Callable[[list[Event]], Any], Any]] = (
    weakref.WeakKeyDictionary()
)


def _of_reference(derive: Callable[[list[Event]], Any], reference: World) -> Any:
    """``derive(reference.final_events)``, computed once per reference."""
    derived = _DERIVED.setdefault(reference, {})
    if derive not in derived:
        derived[derive] = derive(reference.final_events)
    return derived[derive]


def check(world: World, reference: World) -> str | None:
    """The first invariant the schedule breaks, as text; None if it holds them all.

    When the run decided differently from the reference (a ``durable.now()``
    taken again after a crash lost the first one, another child winning a race
    that a crash made run again), the crash-free run is no oracle for this
    schedule: only the invariants that do not compare with it are checked.
    """
    if world.recipe.rot_at is not None:
        ending = world.ending
        if ending.kind == "error" and isinstance(ending.error, durable.JournalCorruptError):
            return None  # F9: a damaged journal is refused, never misread
    same_inputs = _recorded_values(world.final_events) == _of_reference(_recorded_values, reference)
    for invariant in INVARIANTS if same_inputs else SELF_CONTAINED:
        divergence = invariant(world, reference)
        if divergence is not None:
            return divergence
    return None


def finished(world: World, reference: World) -> str | None:
    """The run finished after its last restart (no divergence error, no hang)."""
    got = world.ending
    if got.kind == "error":
        cause = f"\n{likely_cause(reference)}" if _is_nondeterminism(got.error) else ""
        return f"the recovered run stopped with an error instead of finishing:\n{got.error}{cause}"
    if got.kind == "hung":
        return "the recovered run never finished (it hung for 10 years of virtual time)"
    return None


def same_outcome(world: World, reference: World) -> str | None:
    """I1: the same result, or the same failure."""
    got, expected = world.ending, reference.ending
    if _outcome_key(got) != _outcome_key(expected):
        cause = isolated_cause(reference)
        why = cause.text() if cause is not None else _ran_again_text(world)
        return (
            "different outcome after recovery.\n"
            f"  expected: {expected.result_text()}\n  got:      {got.result_text()}"
            + ("" if why is None else f"\n{why}")
        )
    return None


def _ran_again_text(world: World) -> str | None:
    """Why a deterministic workflow's result changed: an activity that a crash made run
    again, whose outside world answered the second call differently (None: none ran again)."""
    again = _ran_again(world)
    if not again:
        return None
    names = ", ".join(map(repr, again))
    return (
        f"Likely cause: {names} ran again after the crash (at-least-once: the crash came before its "
        "result was journaled) and the outside world answered the second call differently, "
        "so it applied the effect twice. Make the activity idempotent: pass "
        "durable.activity_info().idempotency_key to the service so that a repeated call returns the "
        "first answer; and give the simulator an after_each (--after-each) that checks the outside "
        "world, so that an effect applied twice is caught even when the result does not show it."
    )


def _ran_again(world: World) -> list[str]:
    """The activities that a crash made run the same attempt again, sorted."""
    calls = Counter((e.run_id, e.seq, e.attempt) for e in world.executions)
    return sorted({e.activity for e in world.executions if calls[e.run_id, e.seq, e.attempt] > 1})


def _is_nondeterminism(error: BaseException | None) -> bool:
    return isinstance(error, durable.NonDeterminismError)


def _outcome_key(ending: Ending) -> tuple[str, Any]:
    if ending.kind == "returned":
        return ("returned", dumps_value(ending.value))
    if ending.kind == "failed":
        error = getattr(ending.error, "error", None)
        return ("failed", (error.type, error.message) if error is not None else str(ending.error))
    if ending.kind == "cancelled":
        return ("cancelled", str(ending.error))
    return (ending.kind, None)


def same_commands(world: World, reference: World) -> str | None:
    """I2: the same commands, in the same order, with the same arguments."""
    got = _commands(world.final_events)
    expected: list[tuple[str, bytes]] = _of_reference(_commands, reference)
    if got == expected:
        return None
    for index, (want, have) in enumerate(zip(expected, got, strict=False)):
        if want != have:
            return (
                f"different command at step {index}.\n  expected: {_call(want)}\n"
                f"  got:      {_call(have)}\n{_path_changed_cause(world, reference)}"
            )
    return (
        f"different number of steps: expected {len(expected)}, got {len(got)} "
        f"({'extra' if len(got) > len(expected) else 'missing'}: "
        f"{', '.join(_call(c) for c in (got[len(expected) :] or expected[len(got) :]))})\n"
        f"{_path_changed_cause(world, reference)}"
    )


def _path_changed_cause(world: World, reference: World) -> str:
    """Why the workflow took another path: the input isolated, if one was; else the usual
    suspects in workflow code, and, when a crash made an activity run again, that one too:
    a second call answered differently (it raised, or returned another value) changes the
    path of a deterministic workflow (a compensation that fails when it runs twice)."""
    if isolated_cause(reference) is not None:
        return likely_cause(reference)
    again = _ran_again(world)
    if not again:
        return LIKELY_CAUSES
    return (
        f"{LIKELY_CAUSES}\nOr: {', '.join(map(repr, again))} ran again after the crash (at-least-once) "
        "and answered the second call differently (it raised, or returned another value), which "
        "sent the workflow another way: make it idempotent (durable.activity_info().idempotency_key, "
        "or an effect that is harmless to apply twice); explain() shows the attempts."
    )


def _commands(events: list[Event]) -> list[tuple[str, bytes]]:
    return [(e.name, e.args) for e in events if isinstance(e, ActivityScheduled)]


def _call(command: tuple[str, bytes]) -> str:
    args, kwargs = loads_value(command[1])
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{command[0]}({', '.join(parts)})"


def equivalent_journal(world: World, reference: World) -> str | None:
    """I5: the final journal decodes cleanly and records the same history as the reference
    (concurrent steps may complete in another order)."""
    got, expected = _history(world.final_events), _of_reference(_history, reference)
    if got == expected or sorted(map(repr, got)) == sorted(map(repr, expected)):
        return None
    for index, (want, have) in enumerate(zip(expected, got, strict=False)):
        if want != have:
            return f"the final journal differs at event {index}.\n  expected: {want}\n  got:      {have}"
    return f"the final journal has {len(got)} events (without recoveries), the reference {len(expected)}"


def _history(events: list[Event]) -> list[tuple[Any, ...]]:
    """The normalized events that make a run's history: without recoveries and heartbeats
    (a crash makes an attempt run, and heartbeat, again), and without what a cancelled
    step did besides being cancelled (a race's loser may or may not have finished before
    it was stopped)."""
    cancelled = {e.seq for e in events if isinstance(e, StepCancelled)}
    if not cancelled:  # the common case, checked once per schedule: one test per event
        return [_normal(e) for e in events if not isinstance(e, _NOT_HISTORY)]

    def kept(event: Event) -> bool:
        if isinstance(event, _NOT_HISTORY):
            return False
        if getattr(event, "seq", None) in cancelled:
            return isinstance(event, ActivityScheduled | TimerStarted | StepCancelled)
        return True

    return [_normal(e) for e in events if kept(e)]


_NOT_HISTORY = (RunResumed, AttemptHeartbeat)


def _normal(event: Event) -> tuple[Any, ...]:
    """An event without what may legitimately differ: times, tracebacks."""
    normal = _NORMALS.get(type(event))
    if normal is not None:
        return normal(event)
    return (type(event).__name__, getattr(event, "workflow", None), getattr(event, "args", None))


def _error_type(event: Any) -> str | None:
    error: ErrorInfo | None = event.error
    return None if error is None else error.type


_NORMALS: dict[type[Any], Callable[[Any], tuple[Any, ...]]] = {
    ActivityScheduled: lambda e: ("scheduled", e.seq, e.name, e.args),
    ActivityCompleted: lambda e: ("completed", e.seq, e.result, e.attempts),
    ActivityFailed: lambda e: ("failed", e.seq, e.error.type, e.error.message, e.attempts),
    AttemptFailed: lambda e: ("attempt failed", e.seq, e.attempt, e.error.type, e.error.message),
    RunCompleted: lambda e: ("run completed", e.result),
    RunFailed: lambda e: ("run failed", e.error.type, e.error.message),
    TimerStarted: lambda e: ("timer started", e.seq, e.seconds),
    TimerFired: lambda e: ("timer fired", e.seq),
    SideEffectRecorded: lambda e: ("side effect", e.seq, e.name, e.value, _error_type(e)),
    PatchRecorded: lambda e: ("patch", e.change_id),
    ChildStarted: lambda e: ("child started", e.seq, e.workflow, e.args, e.run_id),
    ChildCompleted: lambda e: ("child completed", e.seq, e.result, _error_type(e)),
    RunCancelled: lambda e: ("run cancelled", e.reason),
    StepCancelled: lambda e: ("cancelled", e.seq),
}


def durable_records_kept(world: World, reference: World) -> str | None:
    """I3/I5: every record that was durable at a crash is still in the final journal
    (the run's, and each child run's)."""
    final_runs = world.final_runs()
    for lifetime in world.lifetimes:
        problem = _kept(lifetime.durable_at_crash, world.final_events, lifetime)
        if problem:
            return problem
        for run_id, kept in lifetime.durable_runs_at_crash.items():
            if run_id != world.run_id:
                problem = _kept(kept, final_runs.get(run_id, []), lifetime)
                if problem:
                    return f"child run {run_id!r}: {problem}"
    return None


def _kept(kept: list[Event], final: list[Event], lifetime: Lifetime) -> str | None:
    if kept and final and _incarnation(final[0]) > _incarnation(kept[0]):
        return None  # the run continued as new: that journal was replaced, as it should be
    if final[: len(kept)] != kept:
        lost = next(i for i, event in enumerate(kept) if i >= len(final) or final[i] != event)
        return (
            f"the journal lost record {lost} ({kept[lost]!r}), which was durable when process "
            f"{lifetime.number} crashed"
        )
    return None


def _incarnation(event: Event) -> int:
    return getattr(event, "incarnation", 0)


def no_durable_step_ran_again(world: World, reference: World) -> str | None:
    """I3: no activity whose completion was durable is executed again."""
    for before, after in zip(world.lifetimes, world.lifetimes[1:], strict=False):
        done = {
            (run_id, e.seq)
            for run_id, events in (before.surviving_runs or {world.run_id: before.surviving}).items()
            for e in events
            if isinstance(e, _STEP_ENDS)
        }
        for execution in world.executions:
            if execution.lifetime == after.number and (execution.run_id, execution.seq) in done:
                return (
                    f"step {execution.seq} ({execution.activity}){_of_run(world, execution.run_id)} ran "
                    f"again in process {after.number} although its completion survived the crash of "
                    f"process {before.number} in the journal"
                )
    return None


def _of_run(world: World, run_id: str) -> str:
    return "" if run_id == world.run_id else f" of child run {run_id!r}"


def attempts_within_policy(world: World, reference: World) -> str | None:
    """I4: attempt numbers within the retry policy; each re-run of an attempt explained by a crash."""
    crashes = sum(1 for lifetime in world.lifetimes if lifetime.crashed_at is not None)
    runs = Counter((e.run_id, e.seq, e.attempt) for e in world.executions)
    for execution in world.executions:
        if execution.attempt > execution.max_attempts:
            return (
                f"{_step(world, execution)} ran attempt {execution.attempt}, more than its retry "
                f"policy's {execution.max_attempts}"
            )
        times = runs[execution.run_id, execution.seq, execution.attempt]
        if times > 1 + crashes:
            return (
                f"{_step(world, execution)} attempt {execution.attempt} ran {times} times with only "
                f"{crashes} crash(es)"
            )
    return None


def _step(world: World, execution: Execution) -> str:
    return f"step {execution.seq} ({execution.activity}){_of_run(world, execution.run_id)}"


def fsync_errors_are_fatal(world: World, reference: World) -> str | None:
    """R6: after an fsync error the run stops with a StoreError; the fsync is never retried."""
    for lifetime in world.lifetimes:
        if lifetime.fsync_retried:
            return (
                f"process {lifetime.number} fsynced {lifetime.fsync_retried[0]} again after its fsync failed"
            )
        if lifetime.failed_fsync is None:
            continue
        ending = lifetime.ending
        if ending.kind != "error" or not isinstance(ending.error, durable.StoreError):
            return (
                f"process {lifetime.number} went on after an fsync error ({lifetime.failed_fsync.label}); "
                f"expected the run to stop with durable.StoreError, got: {ending.result_text()}"
            )
    return None


def no_write_into_a_replaced_file(world: World, reference: World) -> str | None:
    """Rule 8 (one run, one executor): no process writes into a journal that a rename
    (``continue_as_new``) or a removal took off its path, where nobody would read it."""
    for lifetime in world.lifetimes:
        if lifetime.stale_writes:
            return (
                f"process {lifetime.number} wrote into {lifetime.stale_writes[0]} after that file "
                "had been replaced or removed: its writes are lost"
            )
    return None


def replays_stably(world: World, reference: World) -> str | None:
    """The final journal replays through a fresh replay core to the outcome it records."""
    events = world.final_events
    if not events:
        return None
    try:
        # Replayed as one more process lifetime would: inputs seeded, so the text is reproducible.
        with perturbed(world.recipe.seed, len(world.lifetimes) + 1):
            replay(world.workflow, events)
    except durable.NonDeterminismError as error:
        return f"the final journal does not replay:\n{error}\n{likely_cause(reference)}"
    return None


def _recorded_values(events: list[Event]) -> list[tuple[int, bytes | None]]:
    """What the run decided once and journaled: recorded values, and which steps lost a race."""
    return [
        (e.seq, e.value if isinstance(e, SideEffectRecorded) else None)
        for e in events
        if isinstance(e, _DECIDED)
    ]


# The classes tested on every event of every schedule's journal, as tuples made once
# (``A | B`` written in the test makes a union object per event).
_STEP_ENDS = (ActivityCompleted, ActivityFailed)
_DECIDED = (SideEffectRecorded, StepCancelled)


INVARIANTS: tuple[Callable[[World, World], str | None], ...] = (
    fsync_errors_are_fatal,
    no_write_into_a_replaced_file,
    finished,
    same_commands,
    same_outcome,
    replays_stably,
    durable_records_kept,
    no_durable_step_ran_again,
    attempts_within_policy,
    equivalent_journal,
)

#: The invariants that hold whatever values the run recorded.
SELF_CONTAINED = (
    fsync_errors_are_fatal,
    no_write_into_a_replaced_file,
    finished,
    replays_stably,
    durable_records_kept,
    no_durable_step_ran_again,
    attempts_within_policy,
)
