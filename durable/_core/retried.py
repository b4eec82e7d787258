"""Which records a ``RunRetried`` supersedes: the replay rule of a retried run, pure.

Theory of operation
-------------------
``durable retry`` appends ``RunRetried`` to a failed run's journal; nothing
journaled is rewritten or removed. Replay then reads the journal as if the
failure had not happened: the records the marker supersedes stay in the
journal (``durable show`` draws them) and are skipped by replay. Which they
are is a function of the journal alone, decided here, so that every process
replays a retried journal the same way.

For each ``RunRetried`` (it always follows a ``RunFailed`` directly), walking
back from that ``RunFailed`` to the previous ``RunRetried`` (or the start):

* records that say nothing about what the workflow did are passed over:
  ``RunResumed``, ``AttemptHeartbeat``, ``StepCancelled``, and any record of a
  step that a later ``StepCancelled`` (before the ``RunFailed``) closes, i.e. the
  rest of a failed ``gather`` or the losers of a ``race``;
* the first other record decides. An ``ActivityFailed``, or a ``ChildCompleted``
  with an error, is *the failure the workflow raised from*: its step is
  reopened, and so are the steps cancelled after it (their ``StepCancelled``).
  Anything else (a step that completed, a timer that fired, a recorded value, a
  signal, a ``patched`` answer, the run's start) means the workflow raised by
  itself: no step is reopened.

Superseded are: the ``RunFailed``; the failure that decided, and every failure
of a reopened step after it (a gather's other failures); the ``StepCancelled``
of the reopened steps; every ``AttemptFailed`` and ``AttemptHeartbeat`` of a
reopened step before the marker (so its attempts start again at 1). What a
reopened step completed after the failure is kept: a step that completed is
never run again.

The machine then replays the rest, and at the marker itself reopens the steps
(:func:`restart`): each still open starts afresh at the marker's time, as if
started then. Replay reaches the reopened step
unresolved, so the executor runs it again live, as it runs a step that was in
flight when a process stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from . import events as ev
from .errors import JournalCorruptError
from .primitives import Sleep, WaitSignal

if TYPE_CHECKING:
    from .machine import Step

#: Records that tell nothing about what the workflow did: passed over walking back.
_PASSED_OVER = (ev.RunResumed, ev.AttemptHeartbeat, ev.SignalAwaited)
#: Records of a step after its start, which a cancelled step may still have.
_OF_A_RUNNING_STEP = (
    ev.AttemptFailed,
    ev.ActivityCompleted,
    ev.ActivityFailed,
    ev.TimerFired,
    ev.ChildCompleted,
)


@attrs.frozen
class Supersession:
    """What the ``RunRetried`` records of a journal supersede.

    Attributes:
        skipped: the indexes of the superseded records (replay skips them).
        reopened: for each ``RunRetried``'s index, the steps it reopens (may be empty).
    """

    skipped: frozenset[int]
    reopened: dict[int, tuple[int, ...]]


def is_failure(event: ev.Event) -> bool:
    """Whether ``event`` ends its step with a failure the workflow sees raised."""
    return type(event) is ev.ActivityFailed or (type(event) is ev.ChildCompleted and event.error is not None)


def deciding_failure(events: Sequence[ev.Event], failed: int, start: int) -> tuple[int | None, set[int]]:
    """Walk back from the ``RunFailed`` at ``failed`` to ``start``: the index of the failure
    the workflow raised from (None: it raised by itself), and the steps cancelled after it."""
    cancelled: set[int] = set()
    for index in range(failed - 1, start - 1, -1):
        event = events[index]
        if isinstance(event, _PASSED_OVER):
            continue
        if type(event) is ev.StepCancelled:
            cancelled.add(event.seq)
            continue
        if isinstance(event, _OF_A_RUNNING_STEP) and event.seq in cancelled:
            continue  # the rest of a failed gather, a race's loser: closed after the failure
        return (index if is_failure(event) else None), cancelled
    return None, cancelled


def supersession(events: Sequence[ev.Event], run_id: str) -> Supersession:
    """What the ``RunRetried`` records of ``events`` (a journal) supersede; see the module docstring.

    Raises:
        JournalCorruptError: a ``RunRetried`` does not follow a ``RunFailed``.
    """
    skipped: set[int] = set()
    reopened: dict[int, tuple[int, ...]] = {}
    start = 1
    for marker, event in enumerate(events):
        if type(event) is not ev.RunRetried:
            continue
        failed = marker - 1
        if failed < start or type(events[failed]) is not ev.RunFailed:
            raise JournalCorruptError(
                f"run {run_id!r}",
                None,
                f"record {marker} (RunRetried) does not follow a RunFailed: the journal contradicts "
                "itself (if durable wrote it, this is a bug in durable: please report it with the "
                "output of `durable show`)",
            )
        skipped.add(failed)
        decided, cancelled = deciding_failure(events, failed, start)
        steps: set[int] = set()
        if decided is not None:
            steps = {getattr(events[decided], "seq", -1)} | cancelled
            skipped.update(_superseded_records(events, decided, failed, marker, steps))
        reopened[marker] = tuple(sorted(steps))
        start = marker + 1
    return Supersession(frozenset(skipped), reopened)


def _superseded_records(
    events: Sequence[ev.Event], decided: int, failed: int, marker: int, steps: set[int]
) -> list[int]:
    """The records of the reopened ``steps`` that a marker supersedes: their failures and
    ``StepCancelled`` from the deciding failure on, their attempts before the marker."""
    found = []
    for index in range(1, marker):
        event = events[index]
        if getattr(event, "seq", None) not in steps:
            continue
        kind = type(event)
        attempt = kind is ev.AttemptFailed or kind is ev.AttemptHeartbeat
        closing = decided <= index < failed and (kind is ev.StepCancelled or is_failure(event))
        if attempt or closing:
            found.append(index)
    return found


def restart(pending: Mapping[int, Step], steps: Sequence[int], t: float) -> frozenset[int]:
    """Start the reopened ``steps`` still in ``pending`` afresh, as if started at ``t`` (the
    ``RunRetried``'s time): no failed attempt, no backoff, a time budget from ``t``, a
    timer's deadline ``t`` plus its duration. A step no longer open (a race that a
    sibling's kept outcome decided) is left alone. Returns the steps restarted."""
    restarted = []
    for seq in steps:
        step = pending.get(seq)
        if step is None:
            continue
        step.failed_attempts = 0
        step.retry_at = None
        step.scheduled_at = t
        command = step.command
        if step.fire_at is not None and isinstance(command, Sleep | WaitSignal):
            step.fire_at = t + (command.seconds if isinstance(command, Sleep) else command.timeout or 0.0)
        restarted.append(seq)
    return frozenset(restarted)


def reopened_steps(events: Sequence[ev.Event], run_id: str) -> tuple[int, ...]:
    """The steps a ``RunRetried`` appended now to a failed journal (one ending with
    ``RunFailed``) would reopen: what ``durable retry`` looks at before it writes."""
    marker = len(events)
    plan = supersession([*events, ev.RunRetried(0.0)], run_id)
    return plan.reopened[marker]


__all__ = ["Supersession", "deciding_failure", "is_failure", "reopened_steps", "restart", "supersession"]
