"""The replay core: journal events in, commands out. No I/O, no trio, no clock.

Theory of operation
-------------------
A :class:`Replay` owns one run's generator. It is driven only by
:meth:`Replay.apply`, which takes the run's journal events in order, whether
they come from disk after a crash (replay) or were just appended by the
executor (live). The two cases share every line of code here, which is what
makes a resumed run behave exactly like one that never stopped.

* When the generator yields a command, the core gives it the next sequence
  number and lists it in :attr:`Replay.pending`.
* ``ActivityScheduled`` claims the pending step with its ``seq``; the command the
  code yielded must match the journal's kind, name and encoded arguments, or the
  core raises :class:`NonDeterminismError` (and the executor writes nothing).
  ``TimerStarted``, ``SideEffectRecorded`` and ``ChildStarted`` claim timers,
  recorded values and child runs the same way.
* ``AttemptFailed`` updates the step's retry state.
* ``ActivityCompleted`` / ``ActivityFailed`` / ``TimerFired`` /
  ``SideEffectRecorded`` / ``ChildCompleted`` resolve the step: the recorded result is decoded from
  the journal's bytes and sent into the generator, or an
  :class:`ActivityError` is thrown in at the ``yield``.
* A ``gather`` or ``race`` gives each child its own step, in argument order,
  in one :class:`Group`. The group resolves the generator when all children
  completed (gather), at the first failure (gather) or at the first outcome
  (race); the children still open move to :attr:`Replay.cancelled`, whose
  later records are ignored until a ``StepCancelled`` closes each.
* ``durable.patched`` takes no step: it waits in :attr:`Replay.patch` for the
  next event. ``PatchRecorded`` answers True; an event that shows the run went
  past that point (a step's first record, the run's end) answers False.
* When the generator returns or raises, :attr:`Replay.outcome` is set; the
  executor journals it as ``RunCompleted`` / ``RunFailed``.
* ``RunRetried`` (``durable retry``) follows a ``RunFailed``: it supersedes
  that ``RunFailed`` and, when the workflow raised from a step's failure
  (``ActivityFailed``, a ``ChildCompleted`` with an error), that failure and the
  step's failed attempts, and the ``StepCancelled`` of the steps cancelled
  because of it (:mod:`durable._core.retried` says exactly which records, from
  the journal alone). Superseded records stay in the journal and are skipped, so
  replay reaches the failed step unresolved; at the marker :meth:`Replay.reopen`
  starts the reopened steps afresh at its time (attempts from 1, a timer's
  deadline and a time budget from then), and the executor runs them again live.
  The records of a step are applied before the marker that supersedes some of
  them, so a journal holding a ``RunRetried`` is replayed whole, by
  :func:`replay`: it replays as usual, and only if that stops (at the first
  ``RunRetried``, or earlier at a record it supersedes) does it replay again
  without the superseded records. A journal without one costs nothing more.

The executor asks what to do next by looking at ``patch``, ``cancelled``,
``outcome`` and ``pending``: a pending step that is not yet journaled is new
work (journal it, then run it); one that is journaled but unresolved was in
flight when the process stopped (run it again, with the attempt count the
journal kept).

This module is the only place that calls ``gen.send`` and ``gen.throw``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import linecache
import types
from collections.abc import Sequence
from typing import Any, NoReturn

import attrs
import cbor2

from . import events as ev
from .commands import Activity, ActivityCall, ChildCall, Command, Workflow, encoded_call_text
from .durations import format_duration
from .errors import (
    ActivityError,
    Cancelled,
    ChildWorkflowError,
    DurableError,
    DurableInternalError,
    ErrorInfo,
    JournalCorruptError,
    NonDeterminismError,
    SerializationError,
    SignalTimeout,
    describe_value,
)
from .outcomes import Continued, Outcome, Raised, Returned, Stopped, ended_text, outcome_type
from .primitives import ContinueAsNew, Gather, Patched, Race, SideEffect, Sleep, WaitSignal
from .retried import restart, supersession
from .values import (
    VALUE_DECODERS,
    encode_value,
    load_call,
    load_stored,
    loads,
    loads_shown,
    same_value,
    unknown_tag,
)

#: values.loads, called directly on replay's hot path (one Python frame less per activity).
_cbor_loads = cbor2.loads


@attrs.define
class Step:
    """A command the workflow yielded and that is not resolved yet.

    Attributes:
        seq: the step's sequence number.
        command: what the workflow yielded.
        scheduled_at: wall-clock time of its ``ActivityScheduled`` (or ``TimerStarted``) event
            (None: not journaled yet), or of the ``RunRetried`` that reopened it.
        failed_attempts: attempts that failed so far, per the journal.
        retry_at: when the next attempt may start (wall clock), after a failed attempt.
        fire_at: when a timer fires (wall clock), once journaled.
    """

    seq: int
    command: Command
    scheduled_at: float | None = None
    failed_attempts: int = 0
    retry_at: float | None = None
    fire_at: float | None = None
    group: Group | None = None
    #: The id of the child run a child-workflow step started, once journaled.
    child_id: str | None = None
    #: A ``wait_signal`` step whose wait is journaled (``SignalAwaited``).
    awaited: bool = False


@attrs.define
class Group:
    """The steps of one ``gather`` or ``race``, and what they resolved to so far.

    Attributes:
        kind: ``"gather"`` or ``"race"``.
        seqs: the children's step numbers, in argument order.
        results: the results of the children that completed, by step number.
    """

    kind: str
    seqs: list[int]
    results: dict[int, Any] = attrs.Factory(dict)


class Replay:
    """One run's generator, fed from its journal. See the module docstring."""

    #: The steps a ``RunRetried`` reopened (run again live with fresh attempts).
    reopened: frozenset[int] = frozenset()
    #: Whether an ``AttemptHeartbeat`` was applied: if not, a resumed run's attempts have
    #: no journaled details to read, and the journal is not searched for them.
    heartbeats_seen = False

    def __init__(self, workflow: Workflow[..., Any], started: ev.RunStarted) -> None:
        self.run_id = started.run_id
        self.workflow = workflow
        #: The journal's first record: its trace context and time, for the executor's telemetry.
        self.started = started
        self.incarnation = started.incarnation
        self.outcome: Outcome | None = None
        self.terminal: ev.RunCompleted | ev.RunFailed | ev.RunCancelled | ev.RunContinuedAsNew | None = None
        self.pending: dict[int, Step] = {}
        #: A ``patched`` question the code asked and the journal has not answered yet.
        self.patch: Patched | None = None
        #: Steps of a finished race or failed gather, to be cancelled: their
        #: later records are ignored, and a StepCancelled closes them.
        self.cancelled: dict[int, Step] = {}
        #: Signals that arrived and wait to be taken, by name, oldest first (with
        #: their order of arrival in the journal).
        self.inbox: dict[str, collections.deque[tuple[int, ev.SignalReceived]]] = {}
        self._arrivals = 0
        #: A cancel request that arrived after the run decided to continue as new:
        #: the next incarnation takes it.
        self._late_cancel: ev.CancelRequested | None = None
        #: Ids of the posted messages (signals, cancel requests) this journal holds.
        self.messages_seen: set[str] = set()
        #: A value from outside the run (a recorded value, a signal, a cancel request)
        #: was journaled since the executor last made the journal durable before a step
        #: that leaves the process: the next such step must sync first, or a crash could
        #: journal another value for what the outside world already saw (write-ahead).
        self.unsynced_value = False
        self._next_seq = started.first_seq
        args, kwargs = load_call(started.args, run_id=self.run_id, what="the run's arguments")
        try:
            self._gen = workflow.fn(*args, **kwargs)
        except (Exception, SystemExit) as exc:  # e.g. the arguments do not fit the signature
            self.outcome = Raised(_error_info(exc))
            return
        self._resume(None, None)

    def close(self) -> None:
        """Close the workflow's generator (a replay given up: its ``finally`` blocks run)."""
        with contextlib.suppress(Exception):  # no generator; code that yields in a finally
            self._gen.close()

    @property
    def next_seq(self) -> int:
        """The step number the next command will get."""
        return self._next_seq

    # --- events in -----------------------------------------------------------

    def apply(self, event: ev.Event) -> None:
        """Feed the next journal event (replayed or just appended)."""
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise DurableInternalError(f"the replay core got an unknown event {event!r}")
        # Rare (a lost race, a patched() asked): most events go straight to their handler.
        if (self.cancelled or self.patch is not None) and self._ignored(event):
            return
        handler(self, event)

    def _ignored(self, event: ev.Event) -> bool:
        """Whether ``event`` belongs to a cancelled step (ignored); answers pending
        ``patched`` questions False when ``event`` shows the run went past them."""
        seq = getattr(event, "seq", None)
        if seq is not None and seq in self.cancelled and type(event) in _ENDS_A_STEP:
            # A loser's records (even an outcome that arrived with the winner's) are
            # ignored; its StepCancelled closes it, so every lost race is in the journal.
            if type(event) is ev.StepCancelled:
                del self.cancelled[seq]
            return True
        if self.patch is not None and type(event) in _PAST_A_PATCH:
            # The journal went on past this point without the marker: the run
            # started before the change, so it takes the old code path.
            self._answer_patches(None)
        return False

    def _answer_patches(self, change_id: str | None) -> None:
        """Answer False to pending ``patched`` questions until one asks ``change_id``."""
        while self.patch is not None and self.patch.change_id != change_id:
            self.patch = None
            self._resume(False, None)

    def _claim(self, seq: int, event: ev.Event, matches: Any) -> Step:
        """The pending step ``seq`` that ``event`` journals, if the code yielded a matching command."""
        step = self.pending.get(seq)
        if step is None or step.scheduled_at is not None:
            self._diverged(seq, _recorded(event), self._what_code_did(seq))
        if not matches(step.command):
            self._diverged(seq, _recorded(event), step.command.describe())
        return step

    def _on_scheduled(self, event: ev.ActivityScheduled) -> None:
        # _claim inlined, without its closure: this runs for every activity, live and
        # in replay.
        seq = event.seq
        step = self.pending.get(seq)
        if step is None or step.scheduled_at is not None:
            self._diverged(seq, _recorded(event), self._what_code_did(seq))
        command = step.command
        if not (
            isinstance(command, ActivityCall)
            and command.activity.name == event.name
            and (command.encoded_args == event.args or same_value(event.args, command.encoded_args))
        ):
            self._diverged(seq, _recorded(event), command.describe())
        step.scheduled_at = event.t

    def _on_child_started(self, event: ev.ChildStarted) -> None:
        step = self._claim(
            event.seq,
            event,
            lambda c: (
                isinstance(c, ChildCall)
                and c.name == event.workflow
                and same_value(event.args, c.encoded_args)
            ),
        )
        step.scheduled_at = event.t
        step.child_id = event.run_id

    def _on_child_completed(self, event: ev.ChildCompleted) -> None:
        step = self._scheduled_step(event.seq, event)
        if event.error is None:
            self._resolve(step, self._load(event.result, "the result of step", event.seq), None)
            return
        if not (isinstance(step.command, ChildCall) and step.child_id is not None):
            self._inconsistent(f"step {event.seq} ended as a child run, but it started no child")
        self._resolve(step, None, ChildWorkflowError(step.command.name, step.child_id, step.seq, event.error))

    def _on_timer_started(self, event: ev.TimerStarted) -> None:
        step = self._claim(
            event.seq,
            event,
            lambda c: (
                (isinstance(c, Sleep) and c.seconds == event.seconds)
                or (isinstance(c, WaitSignal) and c.timeout == event.seconds)
            ),
        )
        step.scheduled_at = event.t
        step.fire_at = event.fire_at

    def _on_timer_fired(self, event: ev.TimerFired) -> None:
        step = self._scheduled_step(event.seq, event)
        command = step.command
        if isinstance(command, WaitSignal):
            self._resolve(step, None, SignalTimeout(command.name, command.timeout or 0.0))
        else:
            self._resolve(step, None, None)

    def values_durable(self) -> None:
        """The executor made every value journaled so far durable (or replayed them from a
        journal that is): the next step that leaves the process need not sync for them."""
        self.unsynced_value = False

    def _on_signal(self, event: ev.SignalReceived) -> None:
        self.unsynced_value = True
        if event.message_id:
            self.messages_seen.add(event.message_id)
        self._arrivals += 1
        self.inbox.setdefault(event.name, collections.deque()).append((self._arrivals, event))
        for step in sorted(self.pending.values(), key=lambda s: s.seq):
            if isinstance(step.command, WaitSignal) and step.command.name == event.name:
                self._take_signal(step)
                return

    def _take_signal(self, step: Step) -> None:
        """Give the oldest waiting signal of its name to a ``wait_signal`` step, if there is one."""
        if not isinstance(step.command, WaitSignal):
            raise DurableInternalError(f"run {self.run_id!r}: step {step.seq} waits for no signal")
        queue = self.inbox.get(step.command.name)
        if queue:
            signal = queue.popleft()[1]
            self._resolve(step, self._load(signal.payload, "the payload of signal", signal.name), None)

    def _on_side_effect(self, event: ev.SideEffectRecorded) -> None:
        self.unsynced_value = True
        step = self._claim(event.seq, event, lambda c: isinstance(c, SideEffect) and c.name == event.name)
        if event.error is not None:
            self._resolve(step, None, ActivityError(event.name, event.seq, event.error, 1))
        else:
            self._resolve(step, self._load(event.value, "the value of step", event.seq), None)

    def _on_cancel_requested(self, event: ev.CancelRequested) -> None:
        """Cancel every open step and throw ``Cancelled`` in at the current ``yield``."""
        self.unsynced_value = True
        if event.message_id:
            self.messages_seen.add(event.message_id)
        if self.outcome is not None:
            if isinstance(self.outcome, Continued):
                self._late_cancel = event  # the next incarnation is cancelled
            return  # too late for this run: it already ended (its outcome is being journaled)
        for seq in list(self.pending):
            self.cancelled[seq] = self.pending.pop(seq)
        self.patch = None
        self._resume(None, Cancelled(self.run_id, event.reason))

    def _on_step_cancelled(self, event: ev.StepCancelled) -> None:
        self._inconsistent(f"step {event.seq} is journaled as cancelled, but it lost no race")

    def _on_started_again(self, event: ev.RunStarted) -> None:
        self._inconsistent("a second RunStarted follows the first")

    def _inconsistent(self, what: str) -> NoReturn:
        """The journal contradicts itself: records that passed their checks tell an
        impossible story. That run's JournalCorruptError; a journal durable wrote never
        does this, so if it did, it is a bug in durable."""
        raise JournalCorruptError(
            f"run {self.run_id!r}",
            None,
            f"{what}: the journal contradicts itself (if durable wrote it, this is a bug in "
            "durable: please report it with the output of `durable show`)",
        )

    def _load(self, data: bytes, what: str, key: object) -> Any:
        """Decode a recorded value (the message is made only if it fails: replay's hot path)."""
        try:
            return loads(data)
        except Exception:
            return load_stored(data, run_id=self.run_id, what=f"{what} {key!r}")  # raises, with the facts

    def _resolve(self, step: Step, value: Any, error: BaseException | None) -> None:
        """A step finished: resume the workflow, or record it in its gather or race."""
        del self.pending[step.seq]
        group = step.group
        if group is None:
            self._resume(value, error)
            return
        if group.kind == "race" or error is not None:
            self._cancel_rest(group)
            outcome = (group.seqs.index(step.seq), value) if group.kind == "race" else None
            self._resume(outcome, error)
            return
        group.results[step.seq] = value
        if len(group.results) == len(group.seqs):
            self._resume([group.results[seq] for seq in group.seqs], None)

    def _cancel_rest(self, group: Group) -> None:
        for seq in group.seqs:
            step = self.pending.pop(seq, None)
            if step is not None:
                self.cancelled[seq] = step

    def _on_patch(self, event: ev.PatchRecorded) -> None:
        self._answer_patches(event.change_id)
        if self.patch is None:
            self._diverged(self._next_seq, _recorded(event), self._what_code_did(self._next_seq))
        self.patch = None
        self._resume(True, None)

    def _on_attempt_failed(self, event: ev.AttemptFailed) -> None:
        step = self._scheduled_step(event.seq, event)
        step.failed_attempts = event.attempt
        step.retry_at = event.retry_at

    def _on_completed(self, event: ev.ActivityCompleted) -> None:
        # _scheduled_step and _load inlined for their common case: once per activity,
        # live and in replay.
        seq = event.seq
        step = self.pending.get(seq)
        if step is None or step.scheduled_at is None:
            step = self._scheduled_step(seq, event)  # raises
        try:
            value = _cbor_loads(event.result, semantic_decoders=VALUE_DECODERS, tag_hook=unknown_tag)
        except Exception:
            value = self._load(event.result, "the result of step", seq)  # raises, with the facts
        if step.group is None:  # _resolve's common case, inline
            del self.pending[seq]
            self._resume(value, None)
        else:
            self._resolve(step, value, None)

    def _on_failed(self, event: ev.ActivityFailed) -> None:
        step = self._scheduled_step(event.seq, event)
        name = step.command.name if isinstance(step.command, ActivityCall) else "?"
        self._resolve(step, None, ActivityError(name, event.seq, event.error, event.attempts))

    def _on_terminal(
        self, event: ev.RunCompleted | ev.RunFailed | ev.RunCancelled | ev.RunContinuedAsNew
    ) -> None:
        if self.outcome is not None and not isinstance(self.outcome, outcome_type(event)):
            # The code ended the run another way than the journal records.
            self._diverged(self._next_seq, ended_text(event), self._what_code_did(self._next_seq))
        if self.outcome is None:
            seq = min(self.pending, default=self._next_seq)
            self._diverged(seq, ended_text(event, with_error=True), self._what_code_did(seq))
        self.terminal = event

    def _on_resumed(self, event: ev.RunResumed) -> None:
        """For the timeline only: replay has nothing to do."""

    def _on_heartbeat(self, event: ev.AttemptHeartbeat) -> None:
        """For the timeline and the next attempt (see records.journaled_heartbeats)."""
        self.heartbeats_seen = True

    def _on_retried(self, event: ev.RunRetried) -> NoReturn:
        raise _Superseding(self.run_id)

    def reopen(self, steps: Sequence[int], t: float) -> None:
        """A ``RunRetried`` at ``t`` reopens ``steps`` (their failures were skipped): see
        :func:`durable._core.retried.restart`."""
        if self.terminal is not None:
            self._inconsistent("a RunRetried follows the run's end without superseding it")
        self.reopened = self.reopened | restart(self.pending, steps, t)

    def _scheduled_step(self, seq: int, event: ev.Event) -> Step:
        step = self.pending.get(seq)
        if step is None or step.scheduled_at is None:
            self._inconsistent(f"{type(event).__name__} refers to step {seq}, which was never started")
        return step

    # --- the generator -------------------------------------------------------

    def _resume(self, value: Any, error: BaseException | None) -> None:
        try:
            command = self._gen.send(value) if error is None else self._gen.throw(error)
        except StopIteration as stop:
            self.outcome = self._returned(stop.value)
            return
        except Cancelled as cancelled:
            self.outcome = Stopped(cancelled.reason)
            return
        except (Exception, SystemExit) as exc:
            # sys.exit() in workflow code fails the run, as any error: it must not stop
            # the process that runs every other run (a worker).
            self.outcome = Raised(_error_info(exc))
            return
        if type(command) is ActivityCall:  # most steps: none of the cases below applies
            seq = self._next_seq
            self._next_seq += 1
            self.pending[seq] = Step(seq, command)
            return
        if not isinstance(command, Command):
            raise TypeError(self._not_a_command(command))
        if isinstance(command, Patched):
            self.patch = command  # answered by the next event, or live; takes no step number
            return
        if isinstance(command, ContinueAsNew):
            self.outcome = Continued(command.encoded_args)
            self._gen.close()
            return
        if isinstance(command, Gather | Race):
            self._start_group(command)
            return
        seq = self._next_seq
        self._next_seq += 1
        step = self.pending[seq] = Step(seq, command)
        if isinstance(command, WaitSignal):
            self._take_signal(step)  # a signal sent before the wait is delivered at once

    def _start_group(self, command: Gather | Race) -> None:
        """Give each child of a gather or race its own step number, in argument order."""
        if not command.commands:  # gather() of nothing
            self._resume([], None)
            return
        first = self._next_seq
        self._next_seq += len(command.commands)
        group = Group(command.kind, list(range(first, self._next_seq)))
        for seq, child in zip(group.seqs, command.commands, strict=True):
            self.pending[seq] = Step(seq, child, group=group)

    def _returned(self, value: Any) -> Outcome:
        try:
            return Returned(encode_value(value, what=f"the result of workflow {self.workflow.name!r}"))
        except SerializationError as exc:
            return Raised(_error_info(exc))

    def unconsumed_messages(self) -> list[ev.SignalReceived | ev.CancelRequested]:
        """The signals no ``wait_signal`` took, in journal order, then a cancel request
        that came too late for this incarnation: what a run that continues as new
        carries over to its next one (SPEC: a signal sent early is never lost)."""
        waiting = sorted(
            (arrival for queue in self.inbox.values() for arrival in queue), key=lambda pair: pair[0]
        )
        carried: list[ev.SignalReceived | ev.CancelRequested] = [event for _, event in waiting]
        if self._late_cancel is not None:
            carried.append(self._late_cancel)
        return carried

    # --- messages ------------------------------------------------------------

    def _what_code_did(self, seq: int) -> str:
        if self.patch is not None:
            return f"asked {self.patch.describe()}"
        if isinstance(self.outcome, Returned):
            return f"returned {describe_value(loads_shown(self.outcome.result))}"
        if isinstance(self.outcome, Raised):
            return f"raised {self.outcome.error}"
        step = self.pending.get(seq)
        if step is not None:
            return step.command.describe()
        return f"is waiting at an earlier step, step {seq} was never yielded"

    def _diverged(self, seq: int, recorded: str, yielded: str) -> NoReturn:
        raise NonDeterminismError(
            run_id=self.run_id,
            workflow=self.workflow.name,
            seq=seq,
            recorded=recorded,
            yielded=yielded,
            location=self.yield_location(),
        )

    def yield_location(self) -> str | None:
        """``file:line: source`` of the ``yield`` the generator is suspended at, if any."""
        gen: Any = getattr(self, "_gen", None)
        while isinstance(getattr(gen, "gi_yieldfrom", None), types.GeneratorType):
            gen = gen.gi_yieldfrom
        frame = getattr(gen, "gi_frame", None)
        if frame is None:
            return None
        filename, line = frame.f_code.co_filename, frame.f_lineno
        return f"{filename}:{line}: {linecache.getline(filename, line).strip()}"

    def _not_a_command(self, value: Any) -> str:
        where = self.yield_location() or "?"
        base = (
            f"workflow {self.workflow.name!r} (run {self.run_id!r}) yielded "
            f"{describe_value(value)} ({type(value).__name__}) at {where}; "
        )
        if isinstance(value, Activity):
            return base + f"call the activity to get a command: `yield {value.name}(...)`"
        if isinstance(value, types.GeneratorType):
            return base + "to run a helper generator inline, use `yield from helper(...)`"
        return base + "workflows must yield commands, such as a call of an @durable.activity"


def replay(workflow: Workflow[..., Any], events: Sequence[ev.Event]) -> Replay:
    """``workflow`` fed a journal: ``events[0]`` (its ``RunStarted``) starts it, and the
    other events are applied in order.

    The one replay loop: the runtime resuming a run, ``durable replay``, the
    simulator's checks and stubbed runs all rebuild a run through it.

    Raises:
        JournalCorruptError: the journal does not start with ``RunStarted``.
        NonDeterminismError: the code yields something other than the journal holds.
    """
    if not events:
        raise JournalCorruptError("a journal", None, "the journal is empty: it holds no RunStarted")
    started = events[0]
    if not isinstance(started, ev.RunStarted):
        raise JournalCorruptError(
            "a journal", None, f"its first record is {type(started).__name__}, not RunStarted", 0
        )
    core = Replay(workflow, started)
    apply, handlers = core.apply, _HANDLERS
    try:
        for event in itertools.islice(events, 1, None):
            # Replay.apply, its common case inline: one call less per event.
            handler = handlers.get(type(event))
            if handler is None or core.cancelled or core.patch is not None:
                apply(event)
            else:
                handler(core, event)
    except Exception:
        # A retried journal stops this loop at its first RunRetried, or earlier at a
        # record the marker supersedes: replay it again, skipping those. Here, and not
        # in a scan before the loop, so that a journal without one costs nothing more.
        if ev.RunRetried not in map(type, events):
            raise
        core.close()
        return _replay_retried(workflow, started, events)
    return core


def _replay_retried(
    workflow: Workflow[..., Any], started: ev.RunStarted, events: Sequence[ev.Event]
) -> Replay:
    """:func:`replay` of a journal holding ``RunRetried`` records, without the records they
    supersede (:mod:`durable._core.retried`)."""
    plan = supersession(events, started.run_id)
    core = Replay(workflow, started)
    apply = core.apply
    for index in range(1, len(events)):
        if index in plan.skipped:
            continue
        event = events[index]
        if type(event) is ev.RunRetried:
            core.reopen(plan.reopened[index], event.t)
        else:
            apply(event)
    return core


class _Superseding(DurableError):
    """A ``RunRetried`` was applied on its own: the records it supersedes come before it."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"run {run_id!r}: a RunRetried cannot be applied event by event, since it supersedes "
            "records before it; replay the whole journal with durable.lowlevel.replay()"
        )


def _error_info(exc: BaseException) -> ErrorInfo:
    return ErrorInfo.with_traceback_of(exc)


def _recorded(event: ev.Event) -> str:
    """What a journal event says the code yielded, for divergence messages."""
    if isinstance(event, ev.ActivityScheduled):
        return _recorded_call(event, "activity", event.name)
    if isinstance(event, ev.TimerStarted):
        return f"sleep {format_duration(event.seconds)}"
    if isinstance(event, ev.SideEffectRecorded):
        return f"side effect {event.name}"
    if isinstance(event, ev.PatchRecorded):
        return f"patched({event.change_id!r}) (answered True)"
    if isinstance(event, ev.SignalAwaited):
        return f"wait_signal({event.name!r})"
    if isinstance(event, ev.ChildStarted):
        return _recorded_call(event, "child workflow", event.workflow)
    return type(event).__name__


def _recorded_call(event: ev.ActivityScheduled | ev.ChildStarted, kind: str, name: str) -> str:
    return f"{kind} {name}{encoded_call_text(event.args)}"


#: Events that show the run went past a point: a pending ``patched`` there is answered False.
_PAST_A_PATCH = frozenset(
    {
        ev.ActivityScheduled,
        ev.SignalAwaited,
        ev.TimerStarted,
        ev.SideEffectRecorded,
        ev.ChildStarted,
        ev.RunCompleted,
        ev.RunFailed,
        ev.RunCancelled,
        ev.RunContinuedAsNew,
    }
)

#: The records of a step that a cancelled step may still have in the journal.
_ENDS_A_STEP = frozenset(
    {
        ev.AttemptFailed,
        ev.ActivityCompleted,
        ev.ActivityFailed,
        ev.TimerFired,
        ev.ChildCompleted,
        ev.StepCancelled,
    }
)


def _on_signal_awaited(core: Replay, event: ev.SignalAwaited) -> None:
    """The wait of step ``seq`` for the signal ``name`` began: the code must yield that wait."""
    step = core._claim(event.seq, event, lambda c: isinstance(c, WaitSignal) and c.name == event.name)
    step.awaited = True


_HANDLERS: dict[type[Any], Any] = {
    ev.StepCancelled: Replay._on_step_cancelled,
    ev.CancelRequested: Replay._on_cancel_requested,
    ev.RunCancelled: Replay._on_terminal,
    ev.RunContinuedAsNew: Replay._on_terminal,
    ev.SignalReceived: Replay._on_signal,
    ev.ActivityScheduled: Replay._on_scheduled,
    ev.TimerStarted: Replay._on_timer_started,
    ev.SignalAwaited: _on_signal_awaited,
    ev.TimerFired: Replay._on_timer_fired,
    ev.SideEffectRecorded: Replay._on_side_effect,
    ev.ChildStarted: Replay._on_child_started,
    ev.ChildCompleted: Replay._on_child_completed,
    ev.PatchRecorded: Replay._on_patch,
    ev.AttemptFailed: Replay._on_attempt_failed,
    ev.ActivityCompleted: Replay._on_completed,
    ev.ActivityFailed: Replay._on_failed,
    ev.RunCompleted: Replay._on_terminal,
    ev.RunFailed: Replay._on_terminal,
    ev.RunResumed: Replay._on_resumed,
    ev.AttemptHeartbeat: Replay._on_heartbeat,
    ev.RunRetried: Replay._on_retried,
    ev.RunStarted: Replay._on_started_again,
}
