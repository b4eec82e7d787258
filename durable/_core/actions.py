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

Which command becomes which action is one table (:data:`_FOR_COMMAND`), so an
executor dispatches on these action types only: the asyncio executor, the
simulator and the trio executor read the same answers.
"""

from __future__ import annotations

from typing import Any

import attrs

from .commands import ActivityCall, ChildCall
from .errors import DurableInternalError
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


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class WaitTimer:
    """Journal the timer's deadline if new (durably), wait for it, journal that it fired."""

    step: Step


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RecordValue:
    """Produce a recorded value or side effect once and journal it."""

    step: Step


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class WaitForSignal:
    """Journal the wait's timeout if it has one, then wait for the signal or the timeout."""

    step: Step


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunChild:
    """Journal the child's start if new (durably), run or attach to it, journal its end."""

    step: Step


StepAction = RunActivity | WaitTimer | RecordValue | WaitForSignal | RunChild


@attrs.define(slots=True, on_setattr=attrs.setters.frozen)
class RunGroup:
    """Run the steps of one gather or race side by side."""

    actions: tuple[StepAction, ...]


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


def step_action(step: Step) -> StepAction:
    """The action that carries out ``step``."""
    kind = _FOR_COMMAND.get(type(step.command))
    if kind is None:
        raise TypeError(f"{step.command.describe()} is not supported by this version of durable")
    action: StepAction = kind(step)
    return action


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
        return step_action(steps[0])
    return RunGroup(tuple(step_action(step) for step in steps))
