"""What now? The core's answer to an executor, as one explicit action at a time.

An executor asks :func:`next_action` what to do and carries it out: it never
looks at what a workflow yielded to decide. The answer is one of a few frozen
values, each carrying what is needed to carry it out:

* :class:`RecordPatch`: the workflow asked ``durable.patched`` live; journal
  :func:`~durable._core.records.patch_reached`;
* :class:`CloseCancelled`: steps that lost a race, the rest of a failed gather,
  or steps a cancel request stopped; cancel their child runs, journal each one's
  ``StepCancelled``;
* :class:`RunActivity`, :class:`WaitTimer`, :class:`RecordValue`,
  :class:`WaitForSignal`, :class:`RunChild`: carry out one step alone;
* :class:`RunGroup`: run the steps of a gather or race side by side (each of
  them one of the step actions above, by :func:`step_action`);
* :class:`Finish`: the workflow ended; journal its terminal event unless the
  journal already ends with it.

Whether a step's start record (its scheduling, its timer's deadline, its child's
start) must still be journaled is decided here, in ``journal_start``: False when
replay already read it (a resumed run picks the step up where it was). Which
record that is, :func:`~durable._core.records.started` says.

Write-ahead is decided here too. Each step action says, in ``durable_start``,
whether what was journaled up to and including the step's start record must be
durable before the step goes on (else the executor only hands it to the store
with a flush): a timer's deadline, so that a restart waits only what is left; a
child run's start, since the child's arguments may carry recorded values; and
anything that runs an activity after a recorded value, signal or cancel request
was journaled (:attr:`Replay.unsynced_value`), since the activity carries it out
of the process. After the start of an activity, a child or a group, the executor
calls :meth:`Replay.values_durable` (the activity's hot path clears the flag inline).

Which command becomes which action is one table (:data:`_FOR_COMMAND`), so an
executor dispatches on these action types only: the trio executor and the
simulator's stubbed runs read the same answers.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from .commands import ActivityCall, ChildCall
from .errors import DurableInternalError
from .ids import parent_run_id
from .machine import Replay, Step
from .outcomes import Outcome
from .primitives import SideEffect, Sleep, WaitSignal

# Actions are built once per step on the hot path: attrs.define with frozen
# attributes (as the journal events are) costs less than attrs.frozen's __init__.


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RecordPatch:
    """Journal the ``patched`` answer the workflow asked for live (it takes the new path)."""


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class CloseCancelled:
    """Cancel these steps (a child run first) and journal each one's ``StepCancelled``, in order."""

    steps: tuple[Step, ...]


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunActivity:
    """Journal the step's scheduling if new, then attempt its activity under its policy."""

    step: Step
    durable_start: bool = False
    journal_start: bool = False


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class WaitTimer:
    """Journal the timer's deadline if new (durably), wait for it, journal that it fired."""

    step: Step
    durable_start: bool = False
    journal_start: bool = False


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RecordValue:
    """Produce a recorded value or side effect once and journal it."""

    step: Step
    durable_start: bool = False


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class WaitForSignal:
    """Journal the wait's timeout if it has one, then wait for the signal or the timeout."""

    step: Step
    durable_start: bool = False
    journal_start: bool = False


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunChild:
    """Journal the child's start if new (durably), run or attach to it, journal its end."""

    step: Step
    durable_start: bool = False
    journal_start: bool = False


StepAction = RunActivity | WaitTimer | RecordValue | WaitForSignal | RunChild


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunGroup:
    """Run the steps of one gather or race side by side; ``durable_start``: their start
    records (and the values they record) must be durable before any of them runs."""

    actions: tuple[StepAction, ...]
    durable_start: bool = False


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class Finish:
    """The workflow ended with ``outcome``; ``journaled``: the journal already ends with it
    (a continuation a crash interrupted)."""

    outcome: Outcome
    journaled: bool


Action = RecordPatch | CloseCancelled | StepAction | RunGroup | Finish

#: The action that carries out a step, by the type of its command.
_FOR_COMMAND: dict[type[Any], type[Any]] = {
    ActivityCall: RunActivity,
    Sleep: WaitTimer,
    SideEffect: RecordValue,
    WaitSignal: WaitForSignal,
    ChildCall: RunChild,
}


def step_action(core: Replay, step: Step) -> StepAction:
    """The action that carries out ``step``, with its write-ahead rule (module docstring)."""
    kind = _FOR_COMMAND.get(type(step.command))
    if kind is RunActivity:  # the hot path first; it carries recorded values out
        return RunActivity(step, core.unsynced_value, step.scheduled_at is None)
    if kind is WaitTimer:
        new = step.fire_at is None
        return WaitTimer(step, new, new)  # a new deadline: a restart waits only what is left
    if kind is WaitForSignal:
        command = step.command
        timeout = command.timeout if isinstance(command, WaitSignal) else None
        new = step.fire_at is None and timeout is not None  # only a timeout has a record
        return WaitForSignal(step, new, new)
    if kind is RunChild:
        return RunChild(step, True, step.scheduled_at is None)  # its arguments may carry recorded values
    if kind is RecordValue:
        return RecordValue(step)  # durable with the next sync, before it can leave the process
    raise TypeError(f"{step.command.describe()} is not supported by this version of durable")


def _group(core: Replay, steps: list[Step]) -> RunGroup:
    """A gather or race: durable once started if any start is (a deadline, a child), a
    value is recorded at its start, or a recorded value waits to be made durable."""
    actions = tuple(step_action(core, step) for step in steps)
    durable = core.unsynced_value or any(
        action.durable_start or isinstance(action, RecordValue) for action in actions
    )
    return RunGroup(actions, durable)


def next_action(core: Replay) -> Action:
    """What the executor does next for the run ``core`` replays.

    While the workflow runs: a pending ``patched`` answer first, then the steps to
    close, then the open step or group. Once it has ended: the steps to close, then
    :class:`Finish`.
    """
    if core.outcome is None and core.patch is not None:
        return RecordPatch()
    if core.cancelled:
        return CloseCancelled(tuple(step for _, step in sorted(core.cancelled.items())))
    if core.outcome is not None:
        return Finish(core.outcome, core.terminal is not None)
    steps = list(core.pending.values())
    if not steps:
        raise DurableInternalError(f"run {core.run_id!r} waits for nothing")
    if len(steps) == 1 and steps[0].group is None:
        step = steps[0]
        if type(step.command) is ActivityCall:  # step_action's hot path, inlined
            return RunActivity(step, core.unsynced_value, step.scheduled_at is None)
        return step_action(core, step)
    return _group(core, steps)


#: :func:`waits_until` of a run that only a message (a signal, a cancel request) can
#: wake: it waits for a signal without a timeout.
ON_MESSAGE = math.inf


def waits_until(core: Replay) -> float | None:
    """When the run has work to do again, if all it does now is wait; else None.

    A run waits when every open step is a timer, a signal wait or a retry
    backoff whose deadline is journaled (durable since its start was synced), or
    a child run (alone, or in a gather or race): nothing runs until
    the earliest deadline, or until a message comes (:data:`ON_MESSAGE` when no
    step has a deadline; a child's end wakes its parent, see
    :func:`waits_for_children`). Such a run can be
    released: its holder lets it go, and whoever takes it when it is due
    replays it to where it was (the same path as crash recovery). None: the
    run has something to do now (a start record to journal, an activity to
    attempt, a value to record, steps to close, a child run to follow, an end).
    """
    if core.outcome is not None or core.patch is not None or core.cancelled or not core.pending:
        return None
    earliest = ON_MESSAGE
    for step in core.pending.values():
        command = step.command
        if type(command) is ActivityCall:
            deadline = step.retry_at  # after a failed attempt: when the next may start
        elif type(command) is Sleep:
            deadline = step.fire_at
        elif type(command) is WaitSignal:
            if not step.awaited:
                return None  # its wait (SignalAwaited) is not journaled yet: that is work
            if command.timeout is None:
                continue  # only a signal ends it
            deadline = step.fire_at
        elif type(command) is ChildCall and _child_wakes_parent(core, step):
            continue  # its end wakes this run
        else:
            return None  # a value to record now; a child run this process must follow
        if deadline is None:
            return None  # its start (a deadline) is not journaled yet: that is work
        earliest = min(earliest, deadline)
    return earliest


def waits_for_children(core: Replay) -> bool:
    """Whether the run waits for a child run (its executor makes sure the child exists
    before it lets the run go, and the runtime re-checks such a run now and then: the
    child's end wakes it, but a crash at that moment could leave it asleep)."""
    return any(type(step.command) is ChildCall for step in core.pending.values())


def _child_wakes_parent(core: Replay, step: Step) -> bool:
    """A child run whose id names this run as its parent (an id too long for that is
    hashed: nothing would wake this run, so it keeps following the child)."""
    return step.child_id is not None and parent_run_id(step.child_id) == core.run_id
