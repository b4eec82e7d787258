"""Attempting an activity under its retry policy: attempts, timeouts, backoffs.

The executor hands each activity step here. Attempts run on trio: an async
activity is awaited on the run's task (or, when the runtime is hosted on
asyncio, runs as an asyncio task on the host loop: :mod:`durable._asyncio`), a
sync one runs in a worker thread (or inline, for the simulator's hooks). An
async activity written for the other loop fails at once, with the fix in its
message (LoopMismatchError), and is not retried. An attempt that raises is reported (the
record is made by :mod:`durable._core.records`, which asks the policy whether it
is retried), durably, before the wait for the next one, so a crash during a
backoff resumes it where it was. ``sys.exit()`` in an activity fails the attempt
like any error: it must not stop the process that runs every other run.

Heartbeats
----------
``durable.heartbeat(details)`` reaches the run's :class:`Heartbeats` (the
``heartbeat_sink`` of the context the executor runs the run in) from the
activity's own thread: a worker thread for a sync activity, trio's thread for an
async one (and for one on the asyncio host loop, whose thread trio's guest run
shares). It keeps the latest details of each attempt in memory, under a lock,
and journals them as an ``AttemptHeartbeat`` at a bounded rate: an attempt's
first heartbeat at once, then at most one record every
:data:`HEARTBEAT_RECORD_INTERVAL` seconds (details that come sooner wait in
memory for the next heartbeat after that), and once more when the attempt fails
or times out if its latest details are not journaled yet, so the next attempt
finds them even in a fresh process. The record is appended on trio's thread,
where the executor writes: right there when the heartbeat comes from it, else
handed over with ``trio.from_thread.run_sync`` (the activity's thread waits for
it, once per interval). Replay ignores the record, so it may fall between
another commit's append and apply. An attempt that is over (it returned, failed,
timed out, lost a race) is no longer live, and the heartbeats its abandoned
thread may still make are ignored. An activity that never heartbeats costs one
dict entry per attempt.

An attempt whose policy has a ``heartbeat_timeout`` runs beside a watcher task
that wakes when the attempt would have gone that long without a heartbeat (from
its start for the first), and cancels it, as a timed-out attempt, if it did.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import outcome
import trio

from ._asyncio import Guest, needs_other_loop
from ._core import events as ev
from ._core import records as rec
from ._core.commands import ActivityCall, ActivityInfo, current_activity, heartbeat_sink
from ._core.durations import format_duration
from ._core.errors import AttemptTimeout
from ._core.machine import Step
from ._core.values import load_stored
from ._hooks import Hooks

if TYPE_CHECKING:
    from ._executor import WallClock
    from ._telemetry import RunTelemetry

#: At most one ``AttemptHeartbeat`` record per attempt per this many seconds (an
#: attempt's first heartbeat is journaled at once): what a crash may lose of the
#: progress of an activity that heartbeats steadily.
HEARTBEAT_RECORD_INTERVAL = 10.0


class _Beat:
    """The latest heartbeat of one attempt: written in the activity's thread under the
    lock of its :class:`Heartbeats`, read on trio's thread."""

    __slots__ = ("at", "details", "info", "journaled", "journaled_at")

    def __init__(self, info: ActivityInfo) -> None:
        self.info = info
        self.details = b""
        #: When it came (wall clock).
        self.at = 0.0
        #: Whether ``details`` are journaled (or on their way: a record is being appended).
        self.journaled = True
        #: When the attempt's last record was made (None: none yet).
        self.journaled_at: float | None = None


class Heartbeats:
    """The heartbeats of one run's activity attempts (see the module docstring).

    ``append`` is the executor's (it journals an event and applies it to the replay
    core), ``flush`` its writer's; ``journaled`` holds the latest details of each step
    the run's journal held when it was opened.
    """

    def __init__(
        self,
        clock: WallClock,
        hooks: Hooks,
        append: Callable[[ev.Event], None],
        flush: Callable[[], None],
        journaled: dict[int, bytes] | None = None,
    ) -> None:
        self.clock = clock
        self._append_event = append
        self._flush = flush
        self._hooks = None if type(hooks) is Hooks else hooks
        #: The details the journal held when the run was opened, by step: the first
        #: attempt this process makes of such a step reads them.
        self.journaled: dict[int, bytes] = journaled or {}
        #: The attempt running now, by step (its ActivityInfo, compared by identity).
        self.live: dict[int, ActivityInfo] = {}
        #: The latest heartbeat of each running attempt that made one, by step.
        self.beats: dict[int, _Beat] = {}
        self._lock = threading.Lock()
        self._thread = threading.get_ident()
        self._token = trio.lowlevel.current_trio_token()

    @contextlib.contextmanager
    def received(self) -> Iterator[None]:
        """Make this the heartbeat sink of the calling task (and of what it starts)."""
        token = heartbeat_sink.set(self)
        try:
            yield
        finally:
            heartbeat_sink.reset(token)

    def _journal(self, record: ev.AttemptHeartbeat) -> None:
        """Journal ``record`` now (on trio's thread), and hand it to the store (a flush) so
        that ``durable show`` and the next process see it; it is made durable with the
        run's next sync."""
        self._append_event(record)
        self._flush()

    def beat(self, info: ActivityInfo, details: bytes) -> None:
        """Attempt ``info`` heartbeated with ``details`` (CBOR); from any thread."""
        if self._hooks is not None and not self._hooks.heartbeat(info):
            return  # lost on its way (the simulator's "silent" activity fault)
        now = self.clock()
        with self._lock:
            if self.live.get(info.seq) is not info:
                return  # the attempt is over: an abandoned thread heartbeats on
            beat = self.beats.get(info.seq)
            if beat is None or beat.info is not info:
                beat = self.beats[info.seq] = _Beat(info)
            beat.details, beat.at = details, now
            due = beat.journaled_at is None or now >= beat.journaled_at + HEARTBEAT_RECORD_INTERVAL
            beat.journaled = due
            if due:
                beat.journaled_at = now
        if due:
            self._on_trio(info, ev.AttemptHeartbeat(info.seq, info.attempt, details, now))

    def _on_trio(self, info: ActivityInfo, record: ev.AttemptHeartbeat) -> None:
        if threading.get_ident() == self._thread:
            self._append(info, record)
            return
        with contextlib.suppress(trio.RunFinishedError):  # the process is stopping: no more records
            trio.from_thread.run_sync(self._append, info, record, trio_token=self._token)

    def _append(self, info: ActivityInfo, record: ev.AttemptHeartbeat) -> None:
        if self.live.get(info.seq) is info:  # else it ended while the record was on its way
            self._journal(record)

    def last_beat(self, info: ActivityInfo) -> float | None:
        """When attempt ``info`` last heartbeated (wall clock); None if it has not."""
        beat = self.beats.get(info.seq)
        return beat.at if beat is not None and beat.info is info else None

    def ended(self, seq: int, attempt: int, *, failed: bool) -> bytes | None:
        """Attempt ``attempt`` of step ``seq`` is over: forget its heartbeats and return its
        latest details (None if it made none). A failed attempt's latest details are
        journaled first if they are not yet, so that the next attempt finds them even
        in another process."""
        with self._lock:
            beat = self.beats.pop(seq, None)
        if beat is None or beat.info.attempt != attempt:
            return None
        if failed and not beat.journaled:
            self._journal(ev.AttemptHeartbeat(seq, attempt, beat.details, beat.at))
        return beat.details


class Attempts:
    """The attempts of one run's activities (see the module docstring)."""

    def __init__(
        self,
        run_id: str,
        clock: WallClock,
        hooks: Hooks,
        heartbeats: Heartbeats,
        host: Guest | None = None,
        telemetry: RunTelemetry | None = None,
    ) -> None:
        self.run_id = run_id
        #: Spans and metrics of the attempts (None: nothing to emit, the hot path).
        self.telemetry = telemetry
        self.clock = clock
        self.hooks = hooks
        self.heartbeats = heartbeats
        #: The guest whose asyncio loop runs async activities; None: they run on trio.
        self.host = host
        # Hooks nobody overrides, on trio, without telemetry, are skipped on the hot path.
        self._direct = type(hooks) is Hooks and host is None and telemetry is None

    def run(
        self,
        step: Step,
        command: ActivityCall,
        report: Callable[[ev.Event], Awaitable[None]],
        may_release: Callable[[], bool] | None,
    ) -> Coroutine[Any, Any, ev.ActivityCompleted | ev.ActivityFailed | None]:
        """Attempt an activity until it succeeds or fails for good; return its outcome event.

        Each failed attempt that will be retried is recorded durably through
        ``report`` (straight into the journal, or to a group's loop) before the wait.
        If ``may_release`` says so once that record is durable, it returns None: the
        run is let go during the backoff, and the next attempt is made when it is due.

        A plain function that returns the coroutine to await: without telemetry (the hot
        path, once per step) that is ``_run``'s own, one coroutine frame less.
        """
        if self.telemetry is None:
            return self._run(step, command, report, may_release)
        return self._traced(self.telemetry, step, command, report, may_release)

    async def _traced(
        self,
        telemetry: RunTelemetry,
        step: Step,
        command: ActivityCall,
        report: Callable[[ev.Event], Awaitable[None]],
        may_release: Callable[[], bool] | None,
    ) -> ev.ActivityCompleted | ev.ActivityFailed | None:
        """:meth:`run` with the step's span and metrics."""
        name = command.activity.name

        async def reported(event: ev.Event) -> None:
            await report(event)
            if isinstance(event, ev.AttemptFailed):
                telemetry.retried(event, name)

        ended = await self._run(step, command, reported, may_release)
        if ended is not None:
            failed = isinstance(ended, ev.ActivityFailed)
            since = step.scheduled_at
            telemetry.step_ended("activity", step.seq, since, ended.t, activity=name, failed=failed)
        return ended

    async def _run(
        self,
        step: Step,
        command: ActivityCall,
        report: Callable[[ev.Event], Awaitable[None]],
        may_release: Callable[[], bool] | None,
    ) -> ev.ActivityCompleted | ev.ActivityFailed | None:
        policy = command.policy
        heartbeats = self.heartbeats
        started_at = step.scheduled_at if step.scheduled_at is not None else self.clock()
        attempt = step.failed_attempts + 1
        # The latest heartbeat details of an earlier execution of the step, if any.
        details = heartbeats.journaled.pop(step.seq, None) if heartbeats.journaled else None
        if step.retry_at is not None:
            await self.clock.sleep_until(step.retry_at)
        try:
            while True:
                limit = (
                    policy.timeout
                    if policy.total_timeout is None  # no budget to cut it: no need to read the clock
                    else policy.attempt_limit(now=self.clock(), started_at=started_at)
                )
                try:
                    value = await self._attempt(step.seq, command, attempt, limit, details)
                except (Exception, SystemExit) as exc:
                    # sys.exit() inside an activity fails that attempt like any error: it
                    # must not stop the process that runs every other run (a worker).
                    error = self._explained(exc, command)
                    failure = rec.attempt_failed(step, command, attempt, error, self.clock(), started_at)
                    if heartbeats.beats:  # journaled before the failure, for the next attempt
                        details = heartbeats.ended(step.seq, attempt, failed=True) or details
                    if isinstance(failure, ev.ActivityFailed):
                        return failure
                    await report(failure)
                    if may_release is not None and may_release():
                        return None
                    await self.hooks.point("backoff", self.run_id, step.seq)
                    await self.clock.sleep_until(failure.retry_at)
                    attempt += 1
                    continue
                return rec.activity_returned(step, command, value, attempt, self.clock())
        finally:
            if heartbeats.beats:  # it returned, or was cancelled: its heartbeats are over
                heartbeats.ended(step.seq, attempt, failed=False)

    async def _attempt(
        self, seq: int, command: ActivityCall, attempt: int, limit: float | None, details: bytes | None
    ) -> Any:
        activity = command.activity
        policy = command.policy
        info = ActivityInfo(
            self.run_id,
            seq,
            attempt,
            activity.name,
            policy.retries + 1,
            None if details is None else self._details(seq, details),
        )
        token = current_activity.set(info)
        live = self.heartbeats.live
        live[seq] = info
        try:
            if limit is None and activity.is_async and self._direct and policy.heartbeat_timeout is None:
                return await activity.fn(*command.call_args, **command.call_kwargs)
            call = self._call(activity.fn, activity.is_async, command.call_args, command.call_kwargs)
            attempt_call = functools.partial(self.hooks.run_attempt, info, call)
            if policy.heartbeat_timeout is not None:
                attempt_call = functools.partial(self._watched, info, attempt_call, policy.heartbeat_timeout)
            if limit is not None:
                attempt_call = functools.partial(self._limited, info, attempt_call, limit)
            if self.telemetry is not None:  # the span sees the attempt's own error (a timeout too)
                attempt_call = functools.partial(self.telemetry.attempt, info, attempt_call)
            return await attempt_call()
        finally:
            del live[seq]
            current_activity.reset(token)

    async def _limited(self, info: ActivityInfo, call: Callable[[], Awaitable[Any]], limit: float) -> Any:
        """``call()``, failed as :class:`AttemptTimeout` once it ran ``limit`` seconds."""
        with trio.move_on_after(limit):
            return await call()
        raise AttemptTimeout(info.activity, self.run_id, info.seq, info.attempt, limit)

    def _details(self, seq: int, details: bytes) -> Any:
        return load_stored(details, run_id=self.run_id, what=f"the heartbeat details of step {seq}")

    async def _watched(self, info: ActivityInfo, call: Callable[[], Awaitable[Any]], seconds: float) -> Any:
        """``call()``, cancelled as a timed-out attempt once attempt ``info`` has gone
        ``seconds`` without a heartbeat (from its start for the first)."""
        started = self.clock()
        with trio.CancelScope() as silenced:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, info, started, seconds, silenced)
                # Captured, so that the attempt's own error leaves unwrapped by the nursery.
                got = await outcome.acapture(call)
                nursery.cancel_scope.cancel()
            return got.unwrap()
        last = self.heartbeats.last_beat(info)
        raise heartbeats_stopped(info, seconds, None if last is None else last - started)

    async def _watch(
        self, info: ActivityInfo, started: float, seconds: float, silenced: trio.CancelScope
    ) -> None:
        last = started
        while True:
            await self.clock.sleep_until(last + seconds)
            beat = self.heartbeats.last_beat(info)
            if beat is None or beat <= last:
                silenced.cancel()
                return
            last = beat

    def _explained(self, exc: BaseException, command: ActivityCall) -> BaseException:
        """``exc``, or the LoopMismatchError it means: an async activity written for the
        other loop (with ``exc`` as its cause and its traceback)."""
        if not command.activity.is_async:
            return exc
        mismatch = needs_other_loop(exc, command.activity.name, "trio" if self.host is None else "asyncio")
        if mismatch is None:
            return exc
        mismatch.__cause__ = exc
        return mismatch.with_traceback(exc.__traceback__)

    def _call(
        self, fn: Callable[..., Any], is_async: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[[], Awaitable[Any]]:
        if is_async and self.host is not None:
            return functools.partial(self.host.run_activity, functools.partial(fn, *args, **kwargs))
        return _call(fn, is_async, not is_async and self.hooks.sync_activities_in_thread, args, kwargs)


def heartbeats_stopped(info: ActivityInfo, seconds: float, last: float | None) -> AttemptTimeout:
    """The error of an attempt that went ``seconds`` (its ``heartbeat_timeout``) without a
    heartbeat; ``last``: when its last heartbeat came, in seconds after it started."""
    error = AttemptTimeout(info.activity, info.run_id, info.seq, info.attempt, seconds)
    since = (
        "it never heartbeated" if last is None else f"its last came {format_duration(last)} after it started"
    )
    # AttemptTimeout's own message says "timed out after ..."; this one says why.
    error.args = (
        f"attempt {info.attempt} of activity {info.activity!r} (run {info.run_id!r}, step {info.seq}) "
        f"timed out: its heartbeats stopped, none for {format_duration(seconds)}, its heartbeat_timeout "
        f"({since})",
    )
    return error


def _call(
    fn: Callable[..., Any],
    is_async: bool,
    in_thread: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Callable[[], Awaitable[Any]]:
    if is_async:
        return functools.partial(fn, *args, **kwargs)
    if in_thread:
        # A sync activity runs in a worker thread; on timeout the thread is abandoned
        # (Python cannot kill it) and the attempt counts as failed.
        return functools.partial(
            trio.to_thread.run_sync, functools.partial(fn, *args, **kwargs), abandon_on_cancel=True
        )

    async def inline() -> Any:
        return fn(*args, **kwargs)

    return inline
