"""OpenTelemetry: the spans and metrics of runs, when the application uses OpenTelemetry.

Theory of operation
-------------------
This is the only module that touches ``opentelemetry``, and it never imports it
on its own: an application that configured a tracer (or meter) provider has
imported ``opentelemetry.trace`` (or ``opentelemetry.metrics``) already, so
:func:`run_telemetry` and :func:`start_context` look in ``sys.modules`` first. No
OpenTelemetry module loaded: nothing to do, at the cost of a dictionary lookup
per run (never per step). Loaded, but no provider configured (the API's proxy
or no-op provider): nothing either. ``import durable`` never loads it.

The executor holds a :class:`RunTelemetry` per execution of a run (``None``
when there is nothing to emit, so the hot path tests one attribute), and calls
it where something happens *now*, in this process:

- a span ``run <workflow>`` per execution (the first, each resume after a crash,
  each takeover by a worker, each incarnation after ``continue_as_new``);
- a span ``activity <name>`` per attempt, current while the activity runs (the
  spans of libraries it calls are its children); a failed attempt that is
  retried adds a ``durable.retry`` event to the run span, and the next attempt's
  span links to the failed one;
- a span ``sleep`` per timer wait and ``wait_signal <name>`` per signal wait.

Replay feeds a workflow what its journal holds without running it again, and
emits nothing: only what this process executes makes spans and metrics.

One trace per run: the run's trace context is journaled in its ``RunStarted``
(a W3C ``traceparent``, taken when the run is created: the caller's current
span, else a ``start <workflow>`` span made for the purpose). Every execution's
run span is a child of it, whichever process executes it and however often it
crashed. A run created while nothing traced (or by a durable without this
field) gets a trace id derived from its run id and start time, the same in every
process that executes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._core import events as ev

if TYPE_CHECKING:  # only for the type checker: importing them at run time is what we avoid
    from opentelemetry.context import Context
    from opentelemetry.metrics import Counter, Histogram
    from opentelemetry.trace import Span, SpanContext, Tracer

    from ._core.commands import ActivityInfo
    from ._core.machine import Step
    from ._core.outcomes import Outcome
    from ._executor import Released, RunExecution

#: Span attribute values durable sets: text, numbers, flags.
Attributes = dict[str, str | int | float | bool]

#: The W3C trace-context header, version 00: trace id, parent span id, flags.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

#: Span attributes (SPEC §12).
RUN_ID, WORKFLOW, SEQ, ACTIVITY, ATTEMPT = (
    "durable.run_id",
    "durable.workflow",
    "durable.seq",
    "durable.activity",
    "durable.attempt",
)


def traceparent(context: SpanContext) -> str:
    """``context`` as a W3C ``traceparent`` header value."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _tracing_modules() -> tuple[Any, Any]:
    """``opentelemetry.trace`` and ``opentelemetry.metrics`` if the application loaded them."""
    return sys.modules.get("opentelemetry.trace"), sys.modules.get("opentelemetry.metrics")


class _Instruments:
    """The tracer and metric instruments of one configuration of providers."""

    def __init__(self, tracer: Tracer, meter: Any | None) -> None:
        self.tracer = tracer
        self.steps: Counter | None = None
        self.attempts: Counter | None = None
        self.retries: Counter | None = None
        self.failures: Counter | None = None
        self.step_duration: Histogram | None = None
        if meter is not None:
            self.steps = meter.create_counter(
                "durable.steps", unit="{step}", description="Steps that ended in this process"
            )
            self.attempts = meter.create_counter(
                "durable.attempts", unit="{attempt}", description="Activity attempts made"
            )
            self.retries = meter.create_counter(
                "durable.retries", unit="{attempt}", description="Failed activity attempts that are retried"
            )
            self.failures = meter.create_counter(
                "durable.failures", unit="{step}", description="Activity steps that failed for good"
            )
            self.step_duration = meter.create_histogram(
                "durable.step.duration", unit="s", description="From a step's start to its end"
            )


#: The instruments made for the providers configured last (holding them, so that a
#: provider replaced later is never mistaken for the one they were made from).
_made: list[tuple[object, object, _Instruments]] = []


def _instruments() -> _Instruments | None:
    """The instruments of the providers configured now; None when none is."""
    trace, metrics = _tracing_modules()
    tracer_provider = None if trace is None else trace.get_tracer_provider()
    # The API's stand-ins until the application sets a provider: a proxy, or no-op.
    stand_ins = () if trace is None else (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    if isinstance(tracer_provider, stand_ins):
        tracer_provider = None
    meter_provider = None if metrics is None else metrics.get_meter_provider()
    if metrics is not None and (
        isinstance(meter_provider, metrics.NoOpMeterProvider)
        or type(meter_provider).__name__ == "_ProxyMeterProvider"
    ):
        meter_provider = None
    if tracer_provider is None and meter_provider is None:
        return None
    if _made and _made[0][0] is tracer_provider and _made[0][1] is meter_provider:
        return _made[0][2]
    from opentelemetry import trace as api  # noqa: PLC0415 - loaded by the application already

    tracing = api.NoOpTracerProvider() if tracer_provider is None else tracer_provider
    meter = None if meter_provider is None else meter_provider.get_meter("durable")
    made = _Instruments(tracing.get_tracer("durable"), meter)
    _made[:] = [(tracer_provider, meter_provider, made)]
    return made


def start_context(run_id: str, workflow: str) -> str:
    """The ``traceparent`` to journal with a run created now: the caller's current span,
    else (when a tracer provider is configured) a ``start <workflow>`` span made now;
    "" when nothing traces."""
    trace, _ = _tracing_modules()
    if trace is None:
        return ""
    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        return traceparent(current)
    instruments = _instruments()
    if instruments is None:
        return ""
    span = instruments.tracer.start_span(f"start {workflow}", attributes={RUN_ID: run_id, WORKFLOW: workflow})
    span.end()
    context = span.get_span_context()
    return traceparent(context) if context.is_valid else ""


def run_telemetry(started: ev.RunStarted) -> RunTelemetry | None:
    """The telemetry of an execution of the run ``started`` begins; None: nothing to emit."""
    if _tracing_modules() == (None, None):
        return None
    instruments = _instruments()
    return None if instruments is None else RunTelemetry(instruments, started)


def _parent(started: ev.RunStarted) -> tuple[Context, str]:
    """The context the run's spans descend from, and its ``traceparent``: the journaled
    one, else one derived from the run id and start time (the same in every process)."""
    from opentelemetry import trace  # noqa: PLC0415 - loaded by the application already
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags  # noqa: PLC0415 - loaded by the application already

    found = _TRACEPARENT.fullmatch(started.traceparent)
    if found is not None and int(found[1], 16) and int(found[2], 16):
        trace_id, span_id, flags = int(found[1], 16), int(found[2], 16), int(found[3], 16)
    else:  # never a reason to stop a run: a missing or foreign value is replaced
        digest = hashlib.sha256(f"{started.run_id}\0{started.t!r}".encode()).digest()
        trace_id, span_id, flags = int.from_bytes(digest[:16]), int.from_bytes(digest[16:24]), 1
    context = SpanContext(trace_id, span_id or 1, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(context)), traceparent(context)


#: The step kind (a metric attribute) of each wait's span name.
_KINDS = {"sleep": "timer", "wait_signal": "signal"}
_OUTCOMES = {"Returned": "completed", "Raised": "failed", "Stopped": "cancelled", "Continued": "continued"}


class RunTelemetry:
    """The spans and metrics of one execution of a run (see the module docstring)."""

    def __init__(self, instruments: _Instruments, started: ev.RunStarted) -> None:
        self._tracer = instruments.tracer
        self._instruments = instruments
        self.run_id = started.run_id
        self.workflow = started.workflow
        self._parent, self.traceparent = _parent(started)
        self._metric_attributes = {WORKFLOW: self.workflow}
        #: The span of each step's last failed attempt, for the next attempt's link.
        self._failed: dict[int, SpanContext] = {}
        self._run_span: Span | None = None

    @contextlib.contextmanager
    def run(self, *, resumed: bool, incarnation: int) -> Iterator[None]:
        """The span of this execution, current in the task that drives it (so the
        child runs it starts, and its steps' spans, descend from it)."""
        from opentelemetry import trace  # noqa: PLC0415 - loaded by the application already

        attributes: dict[str, str | int | bool] = {
            RUN_ID: self.run_id,
            WORKFLOW: self.workflow,
            "durable.resumed": resumed,
        }
        if incarnation:
            attributes["durable.incarnation"] = incarnation
        span = self._tracer.start_span(f"run {self.workflow}", context=self._parent, attributes=attributes)
        self._run_span = span
        with _ending(span), trace.use_span(span, end_on_exit=False, record_exception=False):
            yield

    def ended(self, outcome: object) -> None:
        """The execution ended with ``outcome`` (an Outcome, or Released: let go while it waits)."""
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - loaded by the application already

        span = self._run_span
        if span is None:
            return
        kind = _OUTCOMES.get(type(outcome).__name__, "released")
        span.set_attribute("durable.outcome", kind)
        error = getattr(outcome, "error", None)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))

    async def attempt(self, info: ActivityInfo, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one attempt (``await call()``) in its span, current while the activity runs."""
        from opentelemetry import trace  # noqa: PLC0415 - loaded by the application already

        links = []
        failed = self._failed.pop(info.seq, None)
        if failed is not None:  # a retry: linked to the attempt it follows
            links.append(trace.Link(failed, {"durable.link": "retry of"}))
        attributes: dict[str, str | int] = {
            RUN_ID: self.run_id,
            WORKFLOW: self.workflow,
            SEQ: info.seq,
            ACTIVITY: info.activity,
            ATTEMPT: info.attempt,
        }
        span = self._tracer.start_span(f"activity {info.activity}", attributes=attributes, links=links)
        if self._instruments.attempts is not None:
            self._instruments.attempts.add(1, {**self._metric_attributes, ACTIVITY: info.activity})
        with _ending(span), trace.use_span(span, end_on_exit=False, record_exception=False):
            try:
                return await call()
            except BaseException:
                self._failed[info.seq] = span.get_span_context()
                raise

    def retried(self, event: ev.AttemptFailed, activity: str) -> None:
        """Attempt ``event.attempt`` of an activity failed and will be retried."""
        if self._run_span is not None:
            self._run_span.add_event(
                "durable.retry",
                {
                    SEQ: event.seq,
                    ACTIVITY: activity,
                    ATTEMPT: event.attempt,
                    "durable.retry_at": event.retry_at,
                    "exception.type": event.error.type,
                    "exception.message": event.error.message,
                },
            )
        if self._instruments.retries is not None:
            self._instruments.retries.add(1, {**self._metric_attributes, ACTIVITY: activity})

    def step_ended(
        self,
        kind: str,
        seq: int,
        since: float | None,
        now: float,
        *,
        activity: str = "",
        failed: bool = False,
    ) -> None:
        """A step of ``kind`` (activity, timer, signal) ended in this process: the metrics.
        ``since``: when it started (journaled, so a step resumed after a crash counts
        the time the crash cost)."""
        instruments = self._instruments
        attributes = {**self._metric_attributes, "durable.step.kind": kind}
        if activity:
            attributes[ACTIVITY] = activity
        self._failed.pop(seq, None)
        if instruments.steps is not None:
            instruments.steps.add(1, attributes)
        if failed and instruments.failures is not None:
            instruments.failures.add(1, attributes)
        if since is not None and instruments.step_duration is not None:
            instruments.step_duration.record(max(0.0, now - since), attributes)

    @contextlib.contextmanager
    def waiting(
        self, name: str, step: Step, clock: Callable[[], float], resolved: Callable[[], bool]
    ) -> Iterator[None]:
        """The span of a wait this process does (a timer, a signal wait), and the step's
        metrics when it ends: when the block returns, or is cancelled once ``resolved()``
        (the delivery of a signal cancels the wait it ends). A signal wait without a
        timeout journals no start time (no ``TimerStarted``): its duration counts from
        when this process began the wait."""
        began = clock()
        kind, _, signal = name.partition(" ")
        attributes: Attributes = {RUN_ID: self.run_id, WORKFLOW: self.workflow, SEQ: step.seq}
        if step.fire_at is not None:  # a timer's, or a signal wait's timeout
            attributes["durable.fire_at"] = step.fire_at
        if signal:
            attributes["durable.signal"] = signal
        span = self._tracer.start_span(name, attributes=attributes)
        ended = True
        try:
            yield
        except BaseException as exc:
            ended = resolved()
            if not ended:
                _mark(span, exc)
            raise
        finally:
            span.end()
            if ended:
                since = step.scheduled_at if step.scheduled_at is not None else began
                self.step_ended(_KINDS[kind], step.seq, since, clock())


async def drive(execution: RunExecution) -> Outcome | Released:
    """``execution.drive()``, in the run span of its telemetry if it has one."""
    telemetry = execution.telemetry
    if telemetry is None:
        return await execution.drive()
    with telemetry.run(resumed=execution.resumed, incarnation=execution.core.incarnation):
        outcome = await execution.drive()
        telemetry.ended(outcome)
    return outcome


async def waited(execution: RunExecution, wait: Awaitable[None], step: Step, name: str) -> None:
    """``await wait``: the wait of a timer (``sleep``) or a signal (``wait_signal NAME``) of
    ``execution``, in a span if it has telemetry (only a wait this process does)."""
    telemetry = execution.telemetry
    if telemetry is None:
        await wait
        return
    with telemetry.waiting(name, step, execution.clock, lambda: step.seq not in execution.core.pending):
        await wait


@contextlib.contextmanager
def _ending(span: Span) -> Iterator[None]:
    """End ``span`` on the way out, marked by the error that ends it, if any."""
    try:
        yield
    except BaseException as exc:
        _mark(span, exc)
        raise
    finally:
        span.end()


def _mark(span: Span, exc: BaseException) -> None:
    """An error marks ``span`` as failed; a cancellation (trio.Cancelled: a lost race, a
    cancelled run, a timeout whose own error comes from the caller) only says so."""
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - loaded by the application already

    if isinstance(exc, Exception):
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    else:
        span.set_attribute("durable.interrupted", True)


__all__ = ["RunTelemetry", "drive", "run_telemetry", "start_context", "traceparent", "waited"]
