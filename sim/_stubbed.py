"""Unit tests without a runtime: run a workflow's logic with its activities stubbed by name.

No trio, no store, no time: the pure replay core is driven directly, and each
activity call is answered from ``stubs``. Values still travel through the
journal's encoding, so the workflow sees exactly what it would see for real.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

import durable
from durable._core.actions import CloseCancelled, Finish, RecordPatch, RunGroup, next_action
from durable._core.records import patch_reached
from durable.lowlevel import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    Raised,
    Replay,
    Returned,
    RunStarted,
    StepCancelled,
    current_activity,
    dumps_value,
    loads_value,
)

Stub = Any  # a value, an exception (instance or class), or a function of the call's arguments


@attrs.frozen
class Call:
    """One activity call the workflow made: its journal name and arguments."""

    activity: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.activity}({', '.join(parts)})"


@attrs.frozen
class StubbedRun:
    """What :func:`run_stubbed` observed.

    Attributes:
        calls: every activity call, in order.
        value: what the workflow returned (None if it raised).
        error: the error the workflow raised, as the journal keeps it (None if it returned).
    """

    calls: list[Call]
    value: Any
    error: durable.ErrorInfo | None

    @property
    def result(self) -> Any:
        """The returned value; raises :class:`durable.WorkflowFailed` if the workflow raised."""
        if self.error is not None:
            raise durable.WorkflowFailed("stubbed", "workflow", self.error)
        return self.value

    @property
    def activities(self) -> list[str]:
        """The names of the activities called, in order."""
        return [call.activity for call in self.calls]


def run_stubbed(
    workflow: durable.Workflow[..., Any], *args: Any, stubs: Mapping[str, Stub], **kwargs: Any
) -> StubbedRun:
    """Run ``workflow(*args, **kwargs)`` with every activity answered by ``stubs[name]``.

    A stub is a value (returned), an exception instance or class (the step fails
    as if its retries were exhausted: ``durable.ActivityError`` is raised at the
    ``yield``), or a callable (called with the activity's arguments; what it
    returns or raises decides the step).

    Raises:
        KeyError: an activity has no stub (the message lists the stubs given).
    """
    if not isinstance(workflow, durable.Workflow):
        raise TypeError(f"run_stubbed needs a @durable.workflow function (got {workflow!r})")
    encoded = dumps_value([list(args), dict(sorted(kwargs.items()))])
    core = Replay(workflow, RunStarted("stubbed", workflow.name, encoded, 0.0))
    calls: list[Call] = []
    while core.outcome is None:
        # The same answers the executor carries out (durable._core.actions), here with
        # stubs for activities and in virtual nothing-time.
        action = next_action(core)
        if isinstance(action, RecordPatch):  # reached live: the new code path
            core.apply(patch_reached(core, 0.0))
            continue
        if isinstance(action, CloseCancelled):  # the losers of a race
            for lost in action.steps:
                core.apply(StepCancelled(lost.seq, 0.0))
            continue
        # One step at a time, in step order (the first of a gather or race wins a race).
        if isinstance(action, Finish):
            break
        step = action.actions[0].step if isinstance(action, RunGroup) else action.step
        command = step.command
        if not isinstance(command, durable.ActivityCall):
            raise TypeError(
                f"run_stubbed cannot answer {command.describe()}: it stubs activity calls only; "
                "test a workflow with timers, signals, recorded values or children on a "
                "durable.Runtime in virtual time (trio.testing.MockClock), or with sim.explore"
            )
        calls.append(Call(command.name, command.call_args, command.call_kwargs))
        core.apply(ActivityScheduled(step.seq, command.name, command.encoded_args, 0.0))
        core.apply(_answer(step.seq, command, stubs))
    if isinstance(core.outcome, Returned):
        return StubbedRun(calls, loads_value(core.outcome.result), None)
    assert isinstance(core.outcome, Raised)
    return StubbedRun(calls, None, core.outcome.error)


def _answer(
    seq: int, command: durable.ActivityCall, stubs: Mapping[str, Stub]
) -> ActivityCompleted | ActivityFailed:
    if command.name not in stubs:
        given = ", ".join(sorted(stubs)) or "none"
        raise KeyError(f"no stub for activity {command.name!r} (stubs given: {given})")
    stub = stubs[command.name]
    try:
        value = _call_stub(stub, command) if callable(stub) and not _is_exception(stub) else stub
    except Exception as exc:
        return _failed(seq, exc)
    if _is_exception(value):
        return _failed(seq, value() if isinstance(value, type) else value)
    return ActivityCompleted(seq, dumps_value(value), 1, 0.0)


def _failed(seq: int, exc: BaseException) -> ActivityFailed:
    error = durable.ErrorInfo.with_traceback_of(exc)
    return ActivityFailed(seq, error, 1, 0.0)


def _is_exception(value: object) -> bool:
    return isinstance(value, BaseException) or (isinstance(value, type) and issubclass(value, BaseException))


def _call_stub(stub: Callable[..., Any], command: durable.ActivityCall) -> Any:
    return stub(*command.call_args, **command.call_kwargs)


@contextlib.contextmanager
def in_activity(
    run_id: str = "test-run",
    seq: int = 0,
    attempt: int = 1,
    activity: str = "test",
    max_attempts: int = 1,
    heartbeat_details: Any = None,
) -> Iterator[durable.ActivityInfo]:
    """Call an activity's ``.fn`` as durable would: ``durable.activity_info()`` answers
    inside the block (its ``idempotency_key`` is ``"<run_id>/<seq>"``, its
    ``heartbeat_details`` what you pass), and ``durable.heartbeat()`` checks its
    details and keeps nothing.

    ::

        with sim.in_activity(run_id="order-1", seq=0, attempt=2):
            assert charge_payment.fn(4200, "tok_visa") == "pay-1"
    """
    info = durable.ActivityInfo(run_id, seq, attempt, activity, max_attempts, heartbeat_details)
    token = current_activity.set(info)
    try:
        yield info
    finally:
        current_activity.reset(token)
