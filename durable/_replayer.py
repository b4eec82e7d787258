"""Check recorded journals against the current code: the library behind ``durable replay``.

Theory of operation
-------------------
:func:`check_replay` rebuilds a run from its journal through the one replay
loop, :func:`durable.lowlevel.replay`, exactly as a process recovering the run
would: the journal's first record names the workflow, the code of that name is
fed every recorded event, and no activity runs. What it found is a
:class:`ReplayCheck`: the run replays OK (and, if it is unfinished, what it
does next on recovery; if it ended, whether the code would now end it the same
way), diverges (the step and both sides, from the
:class:`~durable.NonDeterminismError`), names a workflow that is not defined,
or cannot be replayed at all.

Nothing here reads a store or prints: events in, a value out. A CI test can
call it on journals it keeps; ``durable replay`` calls it for each run it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._core import events as ev
from ._core.commands import Workflow, lookup_workflow
from ._core.errors import NonDeterminismError
from ._core.machine import Replay, replay
from ._core.outcomes import Continued, Outcome, Raised, Returned, Stopped, outcome_of
from ._core.values import loads_shown
from ._timeline import error_text, plural, shorten

#: Every verdict of a :class:`ReplayCheck`; the last three fail a check.
VERDICTS = ("ok", "skipped", "diverged", "undefined", "error")
_FAILED = frozenset(VERDICTS[2:])


@attrs.frozen
class ReplayCheck:
    """What replaying one journal with the current code found.

    ``str(check)`` is the report ``durable replay`` prints for the run: its
    :attr:`summary` line, then each of its :attr:`details` indented.

    Attributes:
        run_id: the run checked.
        workflow: the workflow its journal names (``"?"`` when it names none).
        verdict: ``"ok"``; ``"diverged"`` (the code yields something other than the
            journal holds); ``"undefined"`` (no workflow of that name is defined);
            ``"error"`` (the journal cannot be replayed: it is damaged, or replay
            stopped with an error); ``"skipped"`` (undefined, with ``skip_undefined``).
        summary: one line: ``replayed OK (3 steps)``, ``DIVERGED at step 2``...
        details: the lines under it: both sides of a divergence and the line of
            the ``yield``; what an unfinished run does next on recovery; a finished
            run the code would now end another way.
        divergence: the error a recovering process would raise, for a divergence.
        outcome: how the replayed code ends the run (None while it is unfinished).
    """

    run_id: str
    workflow: str
    verdict: str
    summary: str
    details: tuple[str, ...] = ()
    divergence: NonDeterminismError | None = attrs.field(default=None, eq=False, repr=False)
    outcome: Outcome | None = attrs.field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """The journal replays with the current code (a skipped run is not OK)."""
        return self.verdict == "ok"

    @property
    def failed(self) -> bool:
        """The check fails: the run diverged, is undefined, or cannot be replayed."""
        return self.verdict in _FAILED

    def __str__(self) -> str:
        head = f"{self.run_id} ({self.workflow}): {self.summary}"
        return "\n".join([head, *(f"    {line}" for line in self.details)])


def check_replay(
    events: Sequence[ev.Event],
    workflows: Iterable[Workflow[..., Any]] | Mapping[str, Workflow[..., Any]] = (),
    *,
    run_id: str | None = None,
    skip_undefined: bool = False,
    as_retried: bool = False,
) -> ReplayCheck:
    """Replay a recorded journal with the current code and say whether it still fits.

    The check a deploy needs (Temporal's ``Replayer`` in one function): the code
    of the workflow the journal names is fed every recorded event, the way a
    recovering process feeds it, without running an activity or writing anything.

    Args:
        events: the run's journal, as :meth:`durable.Store.read` returns it.
        workflows: the workflows to replay with; a journal naming a workflow not
            among them is replayed with the workflow of that name that the imported
            modules define (as a recovering process would find it), if any.
        run_id: how the report names the run (default: the journal's own run id).
        skip_undefined: a journal naming a workflow that is defined nowhere is
            ``"skipped"`` rather than ``"undefined"`` (for a store that also holds
            the runs of other code).
        as_retried: check a failed run as ``durable retry`` would continue it: as if a
            ``RunRetried`` followed its failure (a journal that does not end with
            ``RunFailed`` is checked as it is). With a bug of the workflow fixed, the
            plain check of its failed journal diverges where the old code raised.

    Returns:
        A :class:`ReplayCheck`; this never raises for what a journal holds.
    """
    started = events[0] if events else None
    if not isinstance(started, ev.RunStarted) or not isinstance(started.workflow, str):
        return ReplayCheck(run_id or "?", "?", "error", f"cannot be replayed: {_no_start(started)}")
    run_id = run_id if run_id is not None else started.run_id
    name = started.workflow
    defined = workflows if isinstance(workflows, Mapping) else {wf.name: wf for wf in workflows}
    workflow = defined.get(name) or lookup_workflow(name)
    if workflow is None:
        return _undefined(run_id, name, skip_undefined)
    if as_retried and type(events[-1]) is ev.RunFailed:
        events = [*events, ev.RunRetried(events[-1].t)]
    try:
        core = replay(workflow, events)
    except NonDeterminismError as exc:
        details = [f"journal: {exc.recorded}", f"code:    {exc.yielded}"]
        details += [f"at:      {exc.location}"] if exc.location else []
        return ReplayCheck(run_id, name, "diverged", f"DIVERGED at step {exc.seq}", tuple(details), exc)
    except Exception as exc:
        return ReplayCheck(run_id, name, "error", f"replay stopped: {error_text(exc)}")
    steps = len({getattr(e, "seq", None) for e in events} - {None})
    retries = sum(type(e) is ev.RunRetried for e in events)
    retried = "" if not retries else ", retried once" if retries == 1 else f", retried {retries} times"
    summary = f"replayed OK ({plural(steps, 'step')}{retried})"
    return ReplayCheck(run_id, name, "ok", summary, _where_it_stands(core), outcome=core.outcome)


def _no_start(first: Any) -> str:
    if first is None:
        return "the journal is empty"
    if not isinstance(first, ev.RunStarted):
        return f"its first record is {type(first).__name__}, not RunStarted"
    held = repr(first.workflow)[:80]
    return f"record 0 (RunStarted) is malformed: its field 'workflow' holds {held}, not a str"


def _undefined(run_id: str, name: str, skip: bool) -> ReplayCheck:
    if skip:
        return ReplayCheck(run_id, name, "skipped", "skipped: its workflow is not defined here")
    why = (
        "a process running this code could not recover it: import the module that defines it, "
        "or keep the old name with @durable.workflow(name=...)"
    )
    line = f"workflow {name!r} is not defined by the module or anything it imports"
    return ReplayCheck(run_id, name, "undefined", line, (why,))


def _where_it_stands(core: Replay) -> tuple[str, ...]:
    """What an unfinished run does next on recovery; a finished one the code now ends otherwise."""
    if core.terminal is not None:
        recorded, now = _outcome_text(outcome_of(core.terminal)), core.outcome
        if now is None or _outcome_text(now) == recorded:
            return ()
        return (f"note: the journal's run {recorded}; the code now {_outcome_text(now)}",)
    if core.outcome is not None:
        return (f"unfinished: on recovery the run {_outcome_text(core.outcome)}",)
    lines = []
    for step in sorted(core.pending.values(), key=lambda s: s.seq):
        what = shorten(step.command.describe(), 100)
        if step.scheduled_at is None:
            lines.append(f"unfinished: on recovery, step {step.seq} starts: {what}")
        elif step.seq in core.reopened and step.failed_attempts == 0:
            lines.append(f"unfinished: step {step.seq} was retried; it runs again on recovery: {what}")
        else:
            lines.append(f"unfinished: step {step.seq} was in flight; it continues on recovery: {what}")
    return tuple(lines)


def _returns(outcome: Returned) -> str:
    try:
        return f"returns {shorten(repr(loads_shown(outcome.result)), 80)}"
    except Exception:
        return "returns an undecodable value"


#: How the report says the way a run ends, one entry per outcome.
_OUTCOME_WORDS: dict[type[Any], Callable[[Any], str]] = {
    Returned: _returns,
    Raised: lambda outcome: f"raises {shorten(str(outcome.error), 100)}",
    Stopped: lambda outcome: "is cancelled",
    Continued: lambda outcome: "continues as new (a fresh journal)",
}


def _outcome_text(outcome: Outcome) -> str:
    return _OUTCOME_WORDS[type(outcome)](outcome)
