"""Retrying a failed run: ``Runtime.retry``, ``Client.retry`` (SPEC §11, issue 16).

A run fails (an activity's retries exhausted, or the workflow's own bug), the bug
is fixed, and the run is retried: the journal keeps its history and gets a
``RunRetried``; the steps that completed before the failure are replayed, never
run again (the activities here count their calls); the failed step runs again
with attempt numbers from 1; and the run completes. The replay rule itself is
tested without trio in ``test_machine.py``.

Every runtime test runs on both loops (``loop``) and on every store (``store``):
MemoryStore, FileStore, PostgreSQL. At the end, real processes: a ``durable
worker`` that takes a run a Client retried, and processes SIGKILLed at each point
of a retry.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import loops
import pgutil
import pytest
import trio

import durable
import sim
from durable._asyncio import on_trio
from durable._core import events as ev
from durable._core.errors import RunNotRetryableError
from durable._core.values import dumps, encode_call
from durable.lowlevel import check_replay
from sim._disk import Crasher

pytestmark = pytest.mark.usefixtures("loop")

#: What the activities did: (step name, n, attempt), in order.
CALLS: list[tuple[str, int, int]] = []
#: The activities that fail (a bug "fixed" by removing it), and the workflow bug.
BROKEN: set[int] = set()
BUGS: set[str] = set()


@pytest.fixture(params=["memory", "file", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[durable.Store]:
    CALLS.clear()
    BROKEN.clear()
    BUGS.clear()
    if request.param == "memory":
        yield durable.MemoryStore()
    elif request.param == "file":
        yield durable.FileStore(tmp_path / "store")
    else:
        made = pgutil.fresh_store()
        yield made
        trio.run(made.aclose)  # its connections (the test server allows only so many), its schema


@durable.activity(name="tests.retry.step", retries=1, initial_backoff=0.001)
async def step(n: int) -> int:
    CALLS.append(("step", n, durable.activity_info().attempt))
    await loops.sleep(0)
    if n in BROKEN:
        raise OSError(f"step {n} is broken")
    return n


@durable.workflow(name="tests.retry.three")
def three():  # type: ignore[no-untyped-def]
    total = 0
    for n in (10,) if "a fix that changes the past" in BUGS else (1, 2, 3):
        total += yield step(n)
    return total


@durable.workflow(name="tests.retry.buggy")
def buggy():  # type: ignore[no-untyped-def]
    first = yield step(1)
    if "workflow" in BUGS:
        raise KeyError("a bug in the workflow itself")
    return first + (yield step(2))


@durable.workflow(name="tests.retry.fan")
def fan():  # type: ignore[no-untyped-def]
    first = yield step(1)
    rest = yield durable.gather(step(2), step(3))
    return first + sum(rest)


@durable.workflow(name="tests.retry.child")
def child(n: int):  # type: ignore[no-untyped-def]
    return (yield step(n)) * 10


@durable.workflow(name="tests.retry.parent")
def parent():  # type: ignore[no-untyped-def]
    first = yield step(1)
    return first + (yield child(2))


@durable.workflow(name="tests.retry.waits")
def waits():  # type: ignore[no-untyped-def]
    return (yield durable.wait_signal("go"))


async def failed_run(store: durable.Store, workflow: Any, run_id: str) -> None:
    """Run ``workflow`` as ``run_id`` until it fails."""
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(workflow, id=run_id)
        with pytest.raises(durable.WorkflowFailed):
            await handle.result()


@on_trio  # a store's own methods run on trio: from asyncio, through durable's guest
async def events_of(store: durable.Store, run_id: str) -> list[ev.Event]:
    events = await store.read(run_id)
    assert events is not None
    return events


def kinds(events: list[ev.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


# --- Runtime.retry ------------------------------------------------------------------


async def test_a_fixed_activity_runs_again_from_attempt_1_and_the_earlier_steps_do_not(
    store: durable.Store,
) -> None:
    BROKEN.add(2)
    await failed_run(store, three, "r")
    assert CALLS == [("step", 1, 1), ("step", 2, 1), ("step", 2, 2)]
    BROKEN.clear()  # the bug is fixed
    CALLS.clear()
    async with loops.deadline(60), durable.Runtime(store) as runtime:
        handle = await runtime.retry("r", "smtp fixed")
        assert await handle.result() == 6
    assert CALLS == [("step", 2, 1), ("step", 3, 1)]  # step 1 replayed; step 2 afresh
    events = await events_of(store, "r")
    assert kinds(events).count("RunFailed") == 1  # the history stays
    retried = [e for e in events if isinstance(e, ev.RunRetried)]
    assert [e.reason for e in retried] == ["smtp fixed"]
    assert isinstance(events[events.index(retried[0]) - 1], ev.RunFailed)
    assert isinstance(events[-1], ev.RunCompleted)


async def test_a_workflow_that_raised_by_itself_goes_on_with_the_fixed_code(store: durable.Store) -> None:
    BUGS.add("workflow")
    await failed_run(store, buggy, "r")
    BUGS.clear()
    CALLS.clear()
    async with loops.deadline(60), durable.Runtime(store) as runtime:
        assert await (await runtime.retry("r")).result() == 3
    assert CALLS == [("step", 2, 1)]


async def test_a_run_retried_before_the_fix_fails_again_and_a_second_retry_completes_it(
    store: durable.Store,
) -> None:
    BROKEN.add(2)
    await failed_run(store, three, "r")
    CALLS.clear()
    async with loops.deadline(60), durable.Runtime(store) as runtime:
        with pytest.raises(durable.WorkflowFailed, match="step 2 is broken"):
            await (await runtime.retry("r", "too early")).result()
        assert CALLS == [("step", 2, 1), ("step", 2, 2)]  # fresh attempts, then failed again
        BROKEN.clear()
        CALLS.clear()
        assert await (await runtime.retry("r", "fixed now")).result() == 6
    assert CALLS == [("step", 2, 1), ("step", 3, 1)]
    events = await events_of(store, "r")
    assert [e.reason for e in events if isinstance(e, ev.RunRetried)] == ["too early", "fixed now"]
    assert kinds(events).count("RunFailed") == 2


async def test_a_failed_gather_runs_again_only_its_steps_that_did_not_complete(store: durable.Store) -> None:
    BROKEN.add(3)
    await failed_run(store, fan, "r")
    BROKEN.clear()
    CALLS.clear()
    async with loops.deadline(60), durable.Runtime(store) as runtime:
        assert await (await runtime.retry("r")).result() == 6
    assert ("step", 1, 1) not in CALLS and ("step", 3, 1) in CALLS
    assert all(attempt == 1 for _, _, attempt in CALLS)


async def test_a_failed_child_run_is_retried_with_its_parent(store: durable.Store) -> None:
    BROKEN.add(2)
    await failed_run(store, parent, "p")
    BROKEN.clear()
    CALLS.clear()
    async with loops.deadline(60), durable.Runtime(store) as runtime:
        assert await (await runtime.retry("p")).result() == 21
    assert CALLS == [("step", 2, 1)]
    child_events = await events_of(store, "p/1")
    assert "RunRetried" in kinds(child_events) and isinstance(child_events[-1], ev.RunCompleted)


# --- Client.retry: journaled and made due, for a worker or a recovery ----------------


async def test_a_run_a_client_retried_is_finished_by_recover(store: durable.Store) -> None:
    BROKEN.add(2)
    await failed_run(store, three, "r")
    BROKEN.clear()
    CALLS.clear()
    handle = await durable.Client(store).retry("r", "fixed")
    assert (handle.run_id, handle.workflow) == ("r", three.name)
    assert await handle.status() == "queued"  # retried: no longer failed, left for a worker
    assert kinds(await events_of(store, "r"))[-2:] == ["RunFailed", "RunRetried"]
    assert CALLS == []  # the client executes nothing
    async with loops.deadline(60), durable.Runtime(store) as runtime:
        recovered = await runtime.recover()
        assert [h.run_id for h in recovered] == ["r"]
        assert await recovered[0].result() == 6
    assert await handle.result() == 6
    assert CALLS == [("step", 2, 1), ("step", 3, 1)]


async def test_a_run_a_client_retried_is_taken_by_a_worker_loop(store: durable.Store) -> None:
    BROKEN.add(1)
    await failed_run(store, three, "r")
    BROKEN.clear()
    await durable.Client(store).retry("r")
    async with loops.deadline(60), durable.Runtime(store, waiting_cache=0) as runtime:
        taken = await runtime.take_due(limit=10)
        assert [h.run_id for h in taken] == ["r"]
        assert await taken[0].result() == 6


# --- durable replay: a retried journal checks with the fixed code --------------------


async def test_the_replay_check_of_a_retried_journal_passes_with_the_fixed_code(store: durable.Store) -> None:
    BROKEN.add(2)
    await failed_run(store, three, "r")
    BROKEN.clear()
    await durable.Client(store).retry("r")
    unfinished = check_replay(await events_of(store, "r"), [three])
    assert unfinished.ok, str(unfinished)
    assert unfinished.summary == "replayed OK (2 steps, retried once)"
    assert unfinished.details == (
        "unfinished: step 1 was retried; it runs again on recovery: activity tests.retry.step(2)",
    )
    async with loops.deadline(60), durable.Runtime(store) as runtime:
        assert await (await runtime.start(three, id="r")).result() == 6  # start resumes it too
    done = check_replay(await events_of(store, "r"), [three])
    assert done.ok and done.details == (), str(done)


async def test_a_fixed_workflow_bug_checks_as_retried(store: durable.Store) -> None:
    BUGS.add("workflow")
    await failed_run(store, buggy, "r")
    BUGS.clear()  # fixed: the code no longer raises where the journal's run did
    events = await events_of(store, "r")
    assert check_replay(events, [buggy]).verdict == "diverged"  # the failure itself differs
    retried = check_replay(events, [buggy], as_retried=True)
    assert retried.ok, str(retried)
    assert retried.details == ("unfinished: on recovery, step 1 starts: activity tests.retry.step(2)",)


async def test_a_fix_that_does_not_replay_the_journal_is_refused_before_anything_is_written(
    store: durable.Store,
) -> None:
    BROKEN.add(2)
    await failed_run(store, three, "r")
    BUGS.add("a fix that changes the past")
    async with durable.Runtime(store) as runtime:
        with pytest.raises(durable.NonDeterminismError) as diverged:
            await runtime.retry("r")
    assert diverged.value.seq == 0
    assert kinds(await events_of(store, "r"))[-1] == "RunFailed"


# --- what cannot be retried ---------------------------------------------------------


async def test_retrying_a_run_that_has_not_failed_is_a_clear_error(store: durable.Store) -> None:
    async with loops.deadline(60), durable.Runtime(store) as runtime:
        assert await (await runtime.start(three, id="done")).result() == 6
        with pytest.raises(RunNotRetryableError, match="'done' cannot be retried: it completed") as done:
            await runtime.retry("done")
        assert (done.value.run_id, done.value.status) == ("done", "completed")
        assert isinstance(done.value, durable.RunConflictError)

        await runtime.start(waits, id="waiting")
        with pytest.raises(RunNotRetryableError, match="it has not failed") as running:
            await runtime.retry("waiting")
        assert running.value.status == "running"
        with pytest.raises(RunNotRetryableError, match="it has not failed"):
            await durable.Client(store).retry("waiting")

        await runtime.cancel("waiting", "no longer needed")
        with pytest.raises(durable.Cancelled):
            await (await runtime.start(waits, id="waiting")).result()
        with pytest.raises(RunNotRetryableError, match="it was cancelled") as cancelled:
            await runtime.retry("waiting")
        assert cancelled.value.status == "cancelled"

        with pytest.raises(durable.UnknownRunError, match="no run 'nobody'"):
            await runtime.retry("nobody")
        with pytest.raises(durable.UnknownRunError):
            await durable.Client(store).retry("nobody")
    assert CALLS == [("step", 1, 1), ("step", 2, 1), ("step", 3, 1)]


async def test_a_run_retried_already_and_not_taken_yet_says_so(store: durable.Store) -> None:
    BROKEN.add(1)
    await failed_run(store, three, "r")
    client = durable.Client(store)
    await client.retry("r")
    with pytest.raises(RunNotRetryableError, match="retried already") as again:
        await client.retry("r")
    assert again.value.status == "retried"


async def test_retrying_a_run_whose_workflow_is_not_defined_here_journals_nothing(
    store: durable.Store,
) -> None:
    t = time.time()
    await journal(
        store,
        ev.RunStarted("old", "tests.retry.gone", encode_call((), {}, what="test"), t),
        ev.RunFailed(durable.ErrorInfo("KeyError", "'x'"), t),
    )
    async with durable.Runtime(store) as runtime:
        with pytest.raises(durable.UnknownWorkflowError, match=r"tests\.retry\.gone") as unknown:
            await runtime.retry("old")
    assert unknown.value.run_id == "old"
    assert kinds(await events_of(store, "old")) == ["RunStarted", "RunFailed"]


@on_trio
async def hold(store: durable.Store, run_id: str) -> Any:
    """Open the run, as another process would hold it (trying again for a moment: on
    PostgreSQL the runtime that ran it may still be letting its lease go)."""
    for _ in range(50):
        try:
            return await store.open(run_id)
        except durable.RunLockedError:
            await trio.sleep(0.05)
    return await store.open(run_id)


async def test_retrying_a_run_another_process_holds_is_run_locked_error(store: durable.Store) -> None:
    BROKEN.add(1)
    await failed_run(store, three, "r")
    opened = await hold(store, "r")  # as another process would
    assert opened is not None
    try:
        with pytest.raises(durable.RunLockedError):
            await durable.Client(store).retry("r")
    finally:
        opened.writer.close()
    assert kinds(await events_of(store, "r"))[-1] == "RunFailed"


@on_trio
async def journal(store: durable.Store, *events: ev.Event) -> None:
    """Write a finished journal by hand."""
    assert isinstance(events[0], ev.RunStarted)
    writer = await store.create(events[0])
    assert writer is not None
    for event in events[1:]:
        writer.append(event)
    await writer.sync()
    writer.close()
    await store.ended(events[0].run_id)


async def test_a_child_run_that_was_cancelled_cannot_run_again(store: durable.Store) -> None:
    """The parent failed because its child run was cancelled (``durable cancel q/1``):
    its step cannot run again, since a cancelled run never does."""
    t = time.time()
    cancelled = durable.ErrorInfo("Cancelled", "by hand")
    await journal(
        store,
        ev.RunStarted("q", parent.name, encode_call((), {}, what="test"), t),
        ev.ActivityScheduled(0, step.name, encode_call((1,), {}, what="test"), t),
        ev.ActivityCompleted(0, dumps(1), 1, t),
        ev.ChildStarted(1, child.name, encode_call((2,), {}, what="test"), "q/1", t),
        ev.ChildCompleted(1, dumps(None), cancelled, t),
        ev.RunFailed(durable.ErrorInfo("durable.ChildWorkflowError", "cancelled"), t),
    )
    await journal(
        store,
        ev.RunStarted("q/1", child.name, encode_call((2,), {}, what="test"), t),
        ev.RunCancelled("by hand", t),
    )
    with pytest.raises(RunNotRetryableError, match="child run 'q/1', which was cancelled") as refused:
        await durable.Client(store).retry("q")
    assert (refused.value.child_id, refused.value.step, refused.value.status) == ("q/1", 1, "failed")
    assert kinds(await events_of(store, "q"))[-1] == "RunFailed"  # nothing written


# --- the time budget of a step that runs again ---------------------------------------


@durable.activity(name="tests.retry.budgeted", retries=3, total_timeout="1m")
async def budgeted(n: int) -> int:
    CALLS.append(("budgeted", n, durable.activity_info().attempt))
    await trio.sleep(1)  # a spent budget would stop it here
    if n in BROKEN:
        raise OSError("down")
    return n


@durable.workflow(name="tests.retry.with_budget")
def with_budget():  # type: ignore[no-untyped-def]
    return (yield budgeted(7))


@pytest.mark.trio_only  # a virtual clock: a day passes between the failure and the retry
async def test_a_step_run_again_gets_its_whole_time_budget_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    CALLS.clear()
    BROKEN.clear()
    BROKEN.add(7)
    await failed_run(store, with_budget, "r")
    assert [attempt for _, _, attempt in CALLS] == [1, 2, 3, 4]
    await trio.sleep(86400)  # far past the step's total_timeout of a minute
    BROKEN.clear()
    CALLS.clear()
    async with durable.Runtime(store) as runtime:
        assert await (await runtime.retry("r")).result() == 7
    assert CALLS == [("budgeted", 7, 1)]


# --- real processes: a worker, and SIGKILL at every point of a retry -------------------

PROCESS_WORKFLOWS = textwrap.dedent(
    """
    import os
    import durable

    @durable.activity(name="tests.retry.p_step", retries=1, initial_backoff="1ms")
    def p_step(n):
        attempt = durable.activity_info().attempt
        with open(os.environ["STEPS_LOG"], "a") as log:
            log.write(f"{n} {attempt}\\n")
        if str(n) in os.environ.get("BROKEN", "").split(","):
            raise OSError(f"step {n} is broken")
        if str(n) == os.environ.get("KILL_IN_STEP") and not os.path.exists(os.environ["KILLED_ONCE"]):
            open(os.environ["KILLED_ONCE"], "w").close()
            os.kill(os.getpid(), 9)  # the process dies while the step runs again
        return n

    @durable.workflow(name="tests.retry.p_job")
    def p_job():
        total = 0
        for n in (1, 2, 3):
            total += yield p_step(n)
        return total
    """
)

#: One life of a retry: ``python retry_driver.py STORE fail|retry|recover [KILL_POINT]``.
DRIVER = textwrap.dedent(
    """
    import os
    import sys

    import trio

    import durable
    from durable.lowlevel import Hooks
    import retry_wf

    store_path, what = sys.argv[1], sys.argv[2]
    kill = sys.argv[3] if len(sys.argv) > 3 else ""
    store = durable.FileStore(store_path)

    def die():
        os.kill(os.getpid(), 9)

    def dying_after(method):
        async def call(*args, **kwargs):
            result = await method(*args, **kwargs)
            die()
        return call

    def dying_before(method):
        async def call(*args, **kwargs):
            die()
        return call

    if kill == "after-release":  # made due, before the marker
        store.release = dying_after(store.release)
    if kill == "before-wake":  # the marker durable, the second announcement not made
        store.wake = dying_before(store.wake)

    class Killer(Hooks):
        async def point(self, name, run_id, seq):
            if kill == "after-marker" and name == "recovering":  # journaled, nothing run yet
                die()

    async def main():
        async with durable.Runtime(store, hooks=Killer()) as runtime:
            if what == "fail":
                handle = await runtime.start(retry_wf.p_job, id="job")
                try:
                    await handle.result()
                except durable.WorkflowFailed:
                    print("failed")
                return
            if what == "retry":
                handle = await runtime.retry("job", "fixed")
                print("result", await handle.result())
                return
            for handle in await runtime.recover():
                print("result", await handle.result())

    trio.run(main)
    """
)


@pytest.fixture
def processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "retry_wf.py").write_text(PROCESS_WORKFLOWS)
    (tmp_path / "retry_driver.py").write_text(DRIVER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def life(workspace: Path, *argv: str, broken: str = "", kill_in_step: str = "") -> tuple[int, str]:
    env = dict(
        os.environ,
        STEPS_LOG=str(workspace / "steps.log"),
        KILLED_ONCE=str(workspace / "killed-once"),
        BROKEN=broken,
        KILL_IN_STEP=kill_in_step,
        PYTHONPATH=str(workspace),
    )
    done = subprocess.run(
        [sys.executable, str(workspace / "retry_driver.py"), str(workspace / "store"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode, done.stdout


def executions(workspace: Path) -> list[tuple[int, int]]:
    lines = (workspace / "steps.log").read_text().split()
    return [(int(n), int(attempt)) for n, attempt in zip(lines[::2], lines[1::2], strict=True)]


@pytest.mark.trio_only  # the lives are processes on trio; the test itself awaits nothing
@pytest.mark.parametrize("kill", ["after-release", "before-wake", "after-marker", "in-step"])
def test_a_retry_killed_at_any_point_loses_nothing_and_runs_no_completed_step_again(
    processes: Path, kill: str
) -> None:
    assert life(processes, "fail", broken="2") == (0, "failed\n")
    assert executions(processes) == [(1, 1), (2, 1), (2, 2)]
    code, _ = life(processes, "retry", kill, kill_in_step="2" if kill == "in-step" else "")
    assert code == -signal.SIGKILL
    store = durable.FileStore(processes / "store")
    events = trio.run(store.read, "job")
    assert events is not None
    marked = kinds(events).count("RunRetried")
    assert marked == (0 if kill == "after-release" else 1)  # durable once written
    # The next life finishes it: a recovery finds a run whose marker is journaled; a run
    # still failed (killed before the marker) is retried again.
    code, out = life(processes, "recover" if marked else "retry")
    assert (code, out) == (0, "result 6\n")
    # Step 1 completed before the failure: never again. The failed step afresh, from
    # attempt 1; killed in flight, its attempt 1 runs again (it never failed).
    in_flight = [(2, 1)] if kill == "in-step" else []
    assert executions(processes)[3:] == [*in_flight, (2, 1), (3, 1)]
    events = trio.run(store.read, "job")
    assert events is not None
    assert kinds(events).count("RunRetried") == 1 and kinds(events).count("RunFailed") == 1
    assert isinstance(events[-1], ev.RunCompleted)
    assert sum(1 for e in events if isinstance(e, ev.ActivityCompleted) and e.seq == 0) == 1


def test_a_worker_process_takes_a_run_a_client_retried(processes: Path, loop: str) -> None:
    assert life(processes, "fail", broken="2") == (0, "failed\n")
    env = dict(os.environ, STEPS_LOG=str(processes / "steps.log"), PYTHONPATH=str(processes))
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "durable"),
            "worker",
            str(processes / "retry_wf.py"),
            "--store",
            str(processes / "store"),
            "--poll",
            "20ms",
            "--loop",
            loop,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        async def main() -> int:
            handle = await durable.Client(processes / "store").retry("job", "fixed")
            with trio.fail_after(60):  # a hang guard, not a timing assertion
                return int(await handle.result())

        assert trio.run(main) == 6
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert executions(processes)[3:] == [(2, 1), (3, 1)]


# --- a power loss at every point of a retry (the simulated disk) --------------------------


HISTORY = ["RunStarted", "ActivityScheduled", "ActivityCompleted", "ActivityScheduled"]


async def _failed_on(store: durable.FileStore) -> None:
    t = time.time()
    writer = await store.create(ev.RunStarted("r", three.name, encode_call((), {}, what="test"), t))
    assert writer is not None
    for event in (
        ev.ActivityScheduled(0, step.name, encode_call((1,), {}, what="test"), t),
        ev.ActivityCompleted(0, dumps(1), 1, t),
        ev.ActivityScheduled(1, step.name, encode_call((2,), {}, what="test"), t),
        ev.ActivityFailed(1, durable.ErrorInfo("OSError", "down"), 2, t),
        ev.RunFailed(durable.ErrorInfo("durable.ActivityError", "down"), t),
    ):
        writer.append(event)
    await writer.sync()
    writer.close()
    await store.ended("r")


async def _retry_on(store: durable.FileStore) -> None:
    await durable.Client(store).retry("r")


async def _after_the_crash(store: durable.FileStore) -> tuple[list[str], list[str], list[str]]:
    events = await store.read("r")
    assert events is not None
    return kinds(events), await store.unfinished(), await store.due_runs(time.time() + 1, 10)


def _retry_crash_points() -> int:
    disk = sim.SimDisk()
    trio.run(_failed_on, durable.FileStore("/s", fs=disk))
    disk.crasher = Crasher()
    trio.run(_retry_on, durable.FileStore("/s", fs=disk))
    return len(disk.crasher.points)


@pytest.mark.trio_only
@pytest.mark.parametrize("how", ["kill", "drop", "torn"])
def test_after_a_power_loss_at_any_point_of_a_retry_the_run_is_failed_or_found(how: str) -> None:
    """Either the marker is lost (the run is still failed: retry it again) or it is durable
    and the run is listed unfinished and due (recovery and workers find it)."""
    points = _retry_crash_points()
    assert points > 5
    outcomes = set()
    for crash_at in range(1, points + 1):
        disk = sim.SimDisk()
        trio.run(_failed_on, durable.FileStore("/s", fs=disk))
        disk.crasher = Crasher(crash_at)
        with pytest.raises(sim.SimulatedCrash):
            trio.run(_retry_on, durable.FileStore("/s", fs=disk))
        disk.crash(how, random.Random(crash_at))
        disk.crasher = Crasher()
        journal, unfinished, due = trio.run(_after_the_crash, durable.FileStore("/s", fs=disk))
        where = f"crash at point {crash_at} ({how})"
        assert journal[:6] == [*HISTORY, "ActivityFailed", "RunFailed"], where  # nothing lost
        if journal[-1] == "RunFailed":
            outcomes.add("failed")
            trio.run(_retry_on, durable.FileStore("/s", fs=disk))  # retried again, at once
            journal, unfinished, due = trio.run(_after_the_crash, durable.FileStore("/s", fs=disk))
        else:
            outcomes.add("retried")
        assert journal[-2:] == ["RunFailed", "RunRetried"], where
        assert unfinished == ["r"] and due == ["r"], where
    assert outcomes == {"failed", "retried"}


# --- heartbeats: a step run again starts without the failed attempts' details ----------


@durable.activity(name="tests.retry.beating", retries=0)
async def beating(n: int) -> Any:
    info = durable.activity_info()
    CALLS.append(("beating", n, info.attempt))
    seen = info.heartbeat_details
    durable.heartbeat({"done": 90})
    if n in BROKEN:
        raise OSError("a bug at 90%")
    return seen


@durable.workflow(name="tests.retry.long_import")
def long_import():  # type: ignore[no-untyped-def]
    return (yield beating(5))


async def test_a_step_run_again_does_not_read_the_failed_attempts_heartbeats(store: durable.Store) -> None:
    BROKEN.add(5)
    await failed_run(store, long_import, "r")
    assert "AttemptHeartbeat" in kinds(await events_of(store, "r"))
    BROKEN.clear()
    async with loops.deadline(60), durable.Runtime(store) as runtime:
        # Fresh attempts: the superseded AttemptHeartbeat is not their details.
        assert await (await runtime.retry("r")).result() is None
