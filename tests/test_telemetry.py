"""OpenTelemetry (SPEC §12): spans, attributes and metrics of runs; one trace per run.

The SDK's in-memory exporter and metric reader stand in for a collector. The
global providers are installed for each test and taken away after it (through
the API's own module globals, as OpenTelemetry's test utilities do), so the rest
of the suite runs without tracing. Crashes are real: a process SIGKILLed in the
middle of a run, resumed by another one, each exporting its spans to a file.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once

import durable
from durable._core.codec import scan
from durable._core.events import SignalAwaited

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "v1"


def _reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None


class Otel:
    """What the tests read: the finished spans and the metrics."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer_provider = provider
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name.startswith(prefix)]

    def metric(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The points of metric ``name`` by their attributes: a sum, or a histogram's count."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            key = tuple(sorted(dict(point.attributes or {}).items()))
                            found[key] = getattr(point, "value", None) or getattr(point, "count", None)
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    _reset_globals()
    configured = Otel()
    trace.set_tracer_provider(configured.tracer_provider)
    metrics.set_meter_provider(configured.meter_provider)
    yield configured
    configured.tracer_provider.shutdown()
    configured.meter_provider.shutdown()
    _reset_globals()


# --- the workflows ------------------------------------------------------------------------

FLAKY: list[int] = []


@durable.activity(name="tel.reserve")
def reserve(item: str) -> str:
    # A span made inside the activity is a child of the attempt's span.
    with trace.get_tracer("app").start_as_current_span("inside reserve"):
        return f"r-{item}"


@durable.activity(name="tel.charge", retries=2, initial_backoff="1ms")
async def charge(amount: int) -> str:
    FLAKY.append(amount)
    if len(FLAKY) == 1:
        raise ConnectionError("card service unavailable")
    return f"pay-{amount}"


@durable.workflow(name="tel.order")
def order(item: str, amount: int):  # type: ignore[no-untyped-def]
    reservation = yield reserve(item)
    payment = yield charge(amount)
    yield durable.sleep("10ms")
    decision = yield durable.wait_signal("approve")
    return [reservation, payment, decision]


@durable.workflow(name="tel.short")
def short(item: str):  # type: ignore[no-untyped-def]
    reservation = yield reserve(item)
    return reservation


@pytest.fixture(autouse=True)
def _fresh() -> None:
    FLAKY.clear()


async def _run_order(store: durable.Store) -> Any:
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(order, "book", 42, id="order-1")
        while not any(isinstance(event, SignalAwaited) for event in await store.read("order-1") or []):
            await trio.sleep(0.01)  # the signal comes while the run waits for it
        await runtime.signal("order-1", "approve", "yes")
        return await handle.result()


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# --- spans ---------------------------------------------------------------------------------


async def test_a_run_makes_a_span_per_attempt_timer_and_signal_wait_in_one_trace(otel: Otel) -> None:
    assert await _run_order(durable.MemoryStore()) == ["r-book", "pay-42", "yes"]
    [start] = otel.named("start ")
    [run] = otel.named("run ")
    assert run.name == "run tel.order"
    assert _attributes(run) == {
        "durable.run_id": "order-1",
        "durable.workflow": "tel.order",
        "durable.resumed": False,
        "durable.outcome": "completed",
    }
    assert {span.context.trace_id for span in otel.spans()} == {start.context.trace_id}
    # The run hangs from the span its start journaled; every step hangs from the run.
    assert run.parent is not None and run.parent.span_id == start.context.span_id
    steps = [span for span in otel.spans() if span.name.split()[0] in {"activity", "sleep", "wait_signal"}]
    assert [span.name for span in steps] == [
        "activity tel.reserve",
        "activity tel.charge",
        "activity tel.charge",
        "sleep",
        "wait_signal approve",
    ]
    assert all(span.parent is not None and span.parent.span_id == run.context.span_id for span in steps)
    assert [(_attributes(s).get("durable.seq"), _attributes(s).get("durable.attempt")) for s in steps] == [
        (0, 1),
        (1, 1),
        (1, 2),
        (2, None),
        (3, None),
    ]
    assert _attributes(steps[1]) == {
        "durable.run_id": "order-1",
        "durable.workflow": "tel.order",
        "durable.seq": 1,
        "durable.activity": "tel.charge",
        "durable.attempt": 1,
    }
    assert _attributes(steps[4])["durable.signal"] == "approve"
    # The activity's own spans are children of its attempt's span.
    [inside] = otel.named("inside reserve")
    assert inside.parent is not None and inside.parent.span_id == steps[0].context.span_id


async def test_a_retried_attempt_is_an_error_span_a_retry_event_and_a_link(otel: Otel) -> None:
    await _run_order(durable.MemoryStore())
    failed, retried = otel.named("activity tel.charge")
    assert failed.status.status_code is StatusCode.ERROR
    assert "ConnectionError" in (failed.status.description or "")
    assert [event.name for event in failed.events] == ["exception"]
    assert retried.status.status_code is not StatusCode.ERROR
    [link] = retried.links
    assert link.context.span_id == failed.context.span_id
    [run] = otel.named("run ")
    [retry] = [event for event in run.events if event.name == "durable.retry"]
    assert dict(retry.attributes or {}) == {
        "durable.seq": 1,
        "durable.activity": "tel.charge",
        "durable.attempt": 1,
        "durable.retry_at": pytest.approx(dict(retry.attributes or {})["durable.retry_at"]),
        "exception.type": "ConnectionError",
        "exception.message": "card service unavailable",
    }


async def test_the_callers_span_is_the_parent_of_the_run(otel: Otel) -> None:
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("handle request") as request:
        async with durable.Runtime(durable.MemoryStore()) as runtime:
            handle = await runtime.start(short, "pen", id="short-1")
            assert await handle.result() == "r-pen"
    [run] = otel.named("run ")
    assert run.context.trace_id == request.get_span_context().trace_id
    assert run.parent is not None and run.parent.span_id == request.get_span_context().span_id
    assert otel.named("start ") == [], "a caller's span is the run's parent: no start span of its own"


async def test_the_trace_context_is_journaled_with_the_run(otel: Otel, tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path)
    async with durable.Runtime(store) as runtime:
        await (await runtime.start(short, "pen", id="short-1")).result()
    [start] = otel.named("start ")
    events = await store.read("short-1")
    assert events is not None
    context = start.context
    flags = int(context.trace_flags)
    assert events[0].traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"


async def test_a_client_started_run_executed_by_another_runtime_keeps_the_trace(
    otel: Otel, tmp_path: Path
) -> None:
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("enqueue") as enqueue:
        async with durable.Client(durable.FileStore(tmp_path)) as client:
            await client.start(short, "ink", id="queued")
    async with durable.Runtime(durable.FileStore(tmp_path)) as worker:  # takes it over
        [handle] = await worker.recover()
        assert await handle.result() == "r-ink"
    [run] = otel.named("run ")
    assert run.context.trace_id == enqueue.get_span_context().trace_id
    assert run.parent is not None and run.parent.span_id == enqueue.get_span_context().span_id


def _golden_workflows() -> ModuleType:
    name = "golden_v1_workflows"  # the name test_golden loads it under
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, GOLDEN / "workflows.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _resume_golden(tmp_path: Path) -> None:
    """Resume the golden journal a crash left with step 1 in flight (written before traces)."""
    workflows = _golden_workflows()
    workflows.reset()
    case = workflows.CASES["order-unfinished"]
    store = durable.FileStore(tmp_path)
    target = Path(store.journal_path("order-unfinished"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(GOLDEN / "order-unfinished.journal", target)
    durable.run(case.workflow, *case.args, id="order-unfinished", store=store, **case.kwargs)


def test_replay_emits_nothing_for_steps_completed_before_the_crash(otel: Otel, tmp_path: Path) -> None:
    _resume_golden(tmp_path / "a")
    [run] = otel.named("run ")
    assert _attributes(run)["durable.resumed"] is True
    # Step 0 (charge_payment) completed before the crash: replayed from the journal, no span.
    assert [(s.name, _attributes(s)["durable.seq"]) for s in otel.named("activity ")] == [
        ("activity golden.v1.send_email", 1)
    ]
    # A journal without a trace context gets a trace id of its run: the same in every process.
    first = run.context.trace_id
    otel.exporter.clear()
    _resume_golden(tmp_path / "b")
    [again] = otel.named("run ")
    assert again.context.trace_id == first


async def test_a_run_continued_as_new_stays_in_its_trace(otel: Otel) -> None:
    @durable.workflow(name="tel.countdown")
    def countdown(n: int):  # type: ignore[no-untyped-def]
        yield reserve(str(n))
        if n:
            yield durable.continue_as_new(n - 1)
        return "done"

    async with durable.Runtime(durable.MemoryStore()) as runtime:
        assert await (await runtime.start(countdown, 2, id="c")).result() == "done"
    runs = otel.named("run ")
    assert [_attributes(run).get("durable.incarnation", 0) for run in runs] == [0, 1, 2]
    assert len({span.context.trace_id for span in otel.spans()}) == 1


# --- metrics -------------------------------------------------------------------------------


async def test_metrics_count_steps_attempts_retries_and_failures(otel: Otel) -> None:
    await _run_order(durable.MemoryStore())
    wf = ("durable.workflow", "tel.order")
    reserve_key = (("durable.activity", "tel.reserve"), wf)
    charge_key = (("durable.activity", "tel.charge"), wf)
    assert otel.metric("durable.attempts") == {reserve_key: 1, charge_key: 2}
    assert otel.metric("durable.retries") == {charge_key: 1}
    kind = "durable.step.kind"
    assert otel.metric("durable.steps") == {
        (("durable.activity", "tel.reserve"), (kind, "activity"), wf): 1,
        (("durable.activity", "tel.charge"), (kind, "activity"), wf): 1,
        ((kind, "timer"), wf): 1,
        ((kind, "signal"), wf): 1,
    }
    assert otel.metric("durable.failures") == {}
    durations = otel.metric("durable.step.duration")
    assert durations[(("durable.activity", "tel.charge"), (kind, "activity"), wf)] == 1
    # Every kind of step has its duration, a signal wait without a timeout too (it
    # journals no start time: it counts from when the process began waiting).
    assert durations[((kind, "timer"), wf)] == 1
    assert durations[((kind, "signal"), wf)] == 1


async def test_a_step_that_fails_for_good_counts_as_a_failure(otel: Otel) -> None:
    @durable.activity(name="tel.broken", retries=1, initial_backoff="1ms")
    def broken() -> None:
        raise ValueError("no")

    @durable.workflow(name="tel.fails")
    def fails():  # type: ignore[no-untyped-def]
        yield broken()

    async with durable.Runtime(durable.MemoryStore()) as runtime:
        with pytest.raises(durable.WorkflowFailed):
            await (await runtime.start(fails, id="f")).result()
    key = (
        ("durable.activity", "tel.broken"),
        ("durable.step.kind", "activity"),
        ("durable.workflow", "tel.fails"),
    )
    assert otel.metric("durable.failures") == {key: 1}
    assert sum(otel.metric("durable.attempts").values()) == 2
    [run] = otel.named("run ")
    assert run.status.status_code is StatusCode.ERROR
    assert _attributes(run)["durable.outcome"] == "failed"


# --- when nothing is configured ---------------------------------------------------------


def _python(code: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_durable_does_not_import_opentelemetry(tmp_path: Path) -> None:
    out = _python(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import durable

        @durable.activity(name="a")
        def a() -> int:
            return 1

        @durable.workflow(name="w")
        def w():
            return (yield a())

        durable.run(w, id="r", store=durable.MemoryStore())
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """,
        tmp_path,
    )
    assert out.strip() == "[]"


def test_nothing_is_emitted_without_a_configured_provider(tmp_path: Path) -> None:
    # The API is loaded (an instrumented library imported it), but nobody set a provider.
    out = _python(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import opentelemetry.trace, opentelemetry.metrics
        import durable
        from durable import _telemetry

        @durable.activity(name="a")
        def a() -> int:
            return 1

        @durable.workflow(name="w")
        def w():
            return (yield a())

        store = durable.FileStore("store")
        durable.run(w, id="r", store=store)
        print(_telemetry._made)
        """,
        tmp_path,
    )
    assert out.strip() == "[]", "instruments were made without a provider"
    found = scan((tmp_path / "store" / "runs" / "r.journal").read_bytes(), "r")
    assert found.events[0].traceparent == ""


# --- a real crash ------------------------------------------------------------------------

LIFE = """
import json, os, signal, sys
sys.path.insert(0, {root!r})
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
import durable

class ToFile(SpanExporter):
    def export(self, spans):
        with open({spans!r}, "a") as out:
            for span in spans:
                out.write(json.dumps({{
                    "life": {life}, "name": span.name, "trace": span.context.trace_id,
                    "span": span.context.span_id, "parent": span.parent.span_id if span.parent else None,
                    "attributes": dict(span.attributes),
                }}) + "\\n")
        return SpanExportResult.SUCCESS

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ToFile()))
trace.set_tracer_provider(provider)

@durable.activity(name="crash.first")
def first() -> int:
    return 1

@durable.activity(name="crash.second")
def second() -> int:
    if {life} == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # in flight: its completion is never journaled
    return 2

@durable.workflow(name="crash.wf")
def wf():
    a = yield first()
    b = yield second()
    return a + b

print(durable.run(wf, id="crashed", store=durable.FileStore({store!r})))
"""


def test_one_trace_across_a_sigkill_and_a_resume_in_another_process(tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    lives = []
    for life in (1, 2):
        script = LIFE.format(root=str(ROOT), spans=str(spans_file), life=life, store=str(tmp_path / "store"))
        lives.append(
            subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
            )
        )
    assert lives[0].returncode == -9, lives[0].stderr
    assert lives[1].returncode == 0, lives[1].stderr
    assert lives[1].stdout.strip() == "3"
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    named = [(span["life"], span["name"]) for span in spans]
    # The killed life exported what ended before the kill; its run span never ended.
    assert named == [
        (1, "start crash.wf"),
        (1, "activity crash.first"),
        (2, "activity crash.second"),
        (2, "run crash.wf"),
    ]
    assert len({span["trace"] for span in spans}) == 1, "one trace id across the crash"
    start, first, second, resumed = spans
    assert resumed["parent"] == start["span"]  # the journaled context, read back by another process
    assert resumed["attributes"]["durable.resumed"] is True
    assert second["parent"] == resumed["span"]
    # The killed life's step hung from its own run span, which died with it.
    assert first["parent"] not in {start["span"], resumed["span"], None}
    assert second["attributes"]["durable.attempt"] == 1  # the killed attempt was never journaled
