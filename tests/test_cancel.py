"""Cancellation: Runtime.cancel, durable.Cancelled at the yield, cleanup, journaled, across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from click.testing import CliRunner

import durable
import sim
from durable._cli import main
from durable.lowlevel import CancelRequested, RunCancelled, StepCancelled

LOG: list[str] = []


@durable.activity
async def slow(label: str) -> str:
    try:
        await trio.sleep(3600)
    except trio.Cancelled:
        LOG.append(f"stopped {label}")
        raise
    return label


@durable.activity
async def undo(label: str) -> str:
    LOG.append(f"undid {label}")
    return label


@durable.workflow(name="tests.cancel.job")
def job(label: str):  # type: ignore[no-untyped-def]
    try:
        yield slow(label)
    except durable.Cancelled:
        yield undo(label)
        raise
    return "finished"


@durable.workflow(name="tests.cancel.handled")
def handled():  # type: ignore[no-untyped-def]
    try:
        yield durable.gather(slow("a"), slow("b"))
    except durable.Cancelled as cancelled:
        return f"handled: {cancelled.reason}"
    return "finished"


@pytest.fixture(autouse=True)
def _clear() -> None:
    LOG.clear()


async def test_cancel_throws_at_the_yield_stops_the_activity_and_runs_cleanup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(job, "x", id="j")
        await trio.sleep(10)
        await runtime.cancel("j", "customer asked")
        with pytest.raises(durable.Cancelled, match="customer asked"):
            await handle.result()
        assert handle.status == "cancelled"
    assert LOG == ["stopped x", "undid x"]
    events = await store.read("j")
    assert events is not None
    assert [type(e) for e in events if isinstance(e, CancelRequested | StepCancelled | RunCancelled)] == [
        CancelRequested,
        StepCancelled,
        RunCancelled,
    ]


async def test_a_workflow_that_handles_the_cancellation_ends_with_its_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        handle = await runtime.start(handled, id="h")
        await trio.sleep(5)
        await runtime.cancel("h", "enough")
        assert await handle.result() == "handled: enough"
        assert handle.status == "completed"
    assert sorted(LOG) == ["stopped a", "stopped b"]


async def test_a_run_loaded_nowhere_is_cancelled_on_recovery(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.start(job, "y", id="j")
        await trio.sleep(10)
    LOG.clear()
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.cancel("j")
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        [handle] = await runtime.recover()
        with pytest.raises(durable.Cancelled):
            await handle.result()
    assert LOG == ["undid y"]
    # Attaching again returns the journaled outcome.
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        again = await runtime.start(job, "y", id="j")
        assert again.status == "cancelled"


async def test_cancelling_a_finished_or_unknown_run_is_a_clear_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @durable.workflow(name="tests.cancel.quick")
    def quick():  # type: ignore[no-untyped-def]
        return (yield undo("q"))

    async with durable.Runtime(durable.MemoryStore()) as runtime:
        handle = await runtime.start(quick, id="q")
        await handle.result()
        with pytest.raises(durable.RunConflictError, match="has finished"):
            await runtime.cancel("q")
        with pytest.raises(durable.UnknownRunError):
            await runtime.cancel("nope")
        with pytest.raises(TypeError, match="reason"):
            await runtime.cancel("q", 42)  # type: ignore[arg-type]


def test_the_cli_cancels_a_run_loaded_nowhere(tmp_path: Path) -> None:
    async def start() -> None:
        async with durable.Runtime(tmp_path) as runtime:
            await runtime.start(job, "z", id="c")
            await trio.sleep(0.01)

    trio.run(start)
    done = CliRunner().invoke(main, ["cancel", "c", "--reason", "test", "--store", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert "cancellation of run 'c' requested" in done.output
    again = CliRunner().invoke(main, ["cancel", "missing", "--store", str(tmp_path)])
    assert again.exit_code == 2
    assert "no run 'missing'" in again.output


def test_cancellation_survives_every_crash_of_the_cleanup() -> None:
    @durable.workflow(name="tests.cancel.cancelled_at_start")
    def self_cancelling(x: Any):  # type: ignore[no-untyped-def]
        try:
            raise durable.Cancelled("sim", "stop")
        except durable.Cancelled:
            yield undo(x)
            raise

    report = sim.Simulator(hash_seeds=()).explore(self_cancelling, "w")
    assert report.ok, report.failure_text()
    assert isinstance(report.result, durable.Cancelled)
    assert report.result.reason == "stop"
