"""How a run ends: the four outcomes, and the one table between them and the journal.

A workflow ends in one of four ways, and each has exactly one terminal journal
event: it returns (``RunCompleted``), raises (``RunFailed``), lets
``durable.Cancelled`` out (``RunCancelled``) or continues as new
(``RunContinuedAsNew``). The replay machine produces an :data:`Outcome`; the
executor journals :func:`terminal_event` of it; whoever reads a finished
journal (a handle attaching to it, a client, ``durable replay``) turns its last
event back into an outcome with :func:`outcome_of`. One table, so the two
directions cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from . import events as ev
from .errors import Cancelled, DurableInternalError, ErrorInfo, WorkflowFailed
from .values import load_stored


@attrs.frozen
class Returned:
    """The workflow returned; ``result`` is its CBOR encoding."""

    result: bytes


@attrs.frozen
class Raised:
    """The workflow raised ``error``."""

    error: ErrorInfo


@attrs.frozen
class Stopped:
    """The workflow let ``durable.Cancelled`` out: the run was cancelled."""

    reason: str


@attrs.frozen
class Continued:
    """The workflow yielded ``continue_as_new``: the run starts over with ``args`` (CBOR)."""

    args: bytes


Outcome = Returned | Raised | Stopped | Continued
Terminal = ev.RunCompleted | ev.RunFailed | ev.RunCancelled | ev.RunContinuedAsNew


@attrs.frozen
class _Row:
    outcome: type[Any]
    event: type[Any]
    to_event: Callable[[Any, float], Terminal]
    to_outcome: Callable[[Any], Outcome]
    text: str


#: Outcome <-> terminal event, one row each.
_TABLE = (
    _Row(
        Returned,
        ev.RunCompleted,
        lambda o, t: ev.RunCompleted(o.result, t),
        lambda e: Returned(e.result),
        "the run completed",
    ),
    _Row(
        Raised,
        ev.RunFailed,
        lambda o, t: ev.RunFailed(o.error, t),
        lambda e: Raised(e.error),
        "the run failed",
    ),
    _Row(
        Stopped,
        ev.RunCancelled,
        lambda o, t: ev.RunCancelled(o.reason, t),
        lambda e: Stopped(e.reason),
        "the run was cancelled",
    ),
    _Row(
        Continued,
        ev.RunContinuedAsNew,
        lambda o, t: ev.RunContinuedAsNew(o.args, t),
        lambda e: Continued(e.args),
        "the run continued as new",
    ),
)
_BY_OUTCOME = {row.outcome: row for row in _TABLE}
_BY_EVENT = {row.event: row for row in _TABLE}


def terminal_event(outcome: Outcome, t: float) -> Terminal:
    """The journal event that records ``outcome``, at wall-clock time ``t``."""
    return _BY_OUTCOME[type(outcome)].to_event(outcome, t)


def outcome_of(event: Terminal) -> Outcome:
    """The outcome a terminal journal event records."""
    return _BY_EVENT[type(event)].to_outcome(event)


def outcome_type(event: Terminal) -> type[Any]:
    """The class of outcome a terminal event records (for comparing without building one)."""
    return _BY_EVENT[type(event)].outcome


def ended_text(event: ev.Event, *, with_error: bool = False) -> str:
    """``the run completed``, ``the run failed (with ...)``...; the event's name otherwise."""
    row = _BY_EVENT.get(type(event))
    if row is None:
        return type(event).__name__
    if with_error and isinstance(event, ev.RunFailed):
        return f"{row.text} with {event.error}"
    return row.text


#: The status word of a run whose journal ends with each terminal event.
STATUS = {ev.RunCompleted: "completed", ev.RunFailed: "failed", ev.RunCancelled: "cancelled"}


def status_of(outcome: Outcome) -> str:
    """The status word of a run that ended with ``outcome`` (not a continuation)."""
    return STATUS[_BY_OUTCOME[type(outcome)].event]


def result_of(outcome: Outcome, *, run_id: str, workflow: str) -> Any:
    """What a handle's ``result()`` gives for a run that ended with ``outcome``: the
    decoded result, or :class:`WorkflowFailed` / :class:`Cancelled` raised."""
    if isinstance(outcome, Returned):
        return load_stored(outcome.result, run_id=run_id, what="the run's result")
    if isinstance(outcome, Raised):
        raise WorkflowFailed(run_id, workflow, outcome.error)
    if isinstance(outcome, Stopped):
        raise Cancelled(run_id, outcome.reason)
    raise DurableInternalError(f"run {run_id!r}: a handle's outcome is a continuation, not an end")
