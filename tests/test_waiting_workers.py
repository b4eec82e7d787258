"""Waiting runs with real `durable worker` processes, on a FileStore and on PostgreSQL.

A worker lets a run go as soon as all it does is wait, so that ``--concurrency``
counts runs with work to do; the store's due index brings the run back when its
time comes or a message arrives. Here: more waiting runs than the worker's
concurrency, a signal to a run let go, timers that fall due while no worker is
up, workers (on trio and on asyncio) killed with SIGKILL while they let runs go
and take them back, and
two workers racing for the same due runs. Each step runs once: every activity
logs its idempotency key, and no key may appear twice.
"""

from __future__ import annotations

import collections
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pgutil
import pytest
import trio

import durable

WORKFLOWS = textwrap.dedent(
    """
    import asyncio
    import os
    import durable
    import sniffio

    @durable.activity
    async def note(label):
        if sniffio.current_async_library() == "asyncio":  # asyncio code on a worker on asyncio
            await asyncio.sleep(0.001)
        with open(os.environ["STEPS_LOG"], "a") as log:
            log.write(durable.activity_info().idempotency_key + "\\n")
        return label

    @durable.workflow(name="tests.waiting_workers.nap")
    def nap(seconds):
        yield note("before")
        yield durable.sleep(seconds)
        yield note("after")
        return "rested"

    @durable.workflow(name="tests.waiting_workers.naps")
    def naps(times, seconds):
        for n in range(times):
            yield note(n)
            yield durable.sleep(seconds)
        return times

    @durable.workflow(name="tests.waiting_workers.quick")
    def quick():
        return (yield note("quick"))

    @durable.workflow(name="tests.waiting_workers.approval")
    def approval():
        yield note("asked")
        decision = yield durable.wait_signal("decision")
        yield note(decision)
        return decision
    """
)

STORES = ["file", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "postgres":
        pgutil.require()
        schema = pgutil.fresh_schema()
        # A short lease: the runs of a killed worker are taken over within seconds.
        yield f"{pgutil.dsn()}?schema={schema}&lease_ttl=2s"
        pgutil.drop_schema(schema)
        return
    (tmp_path / "store").mkdir()
    yield str(tmp_path / "store")


@pytest.fixture
def wf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "waiting_wf.py").write_text(WORKFLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STEPS_LOG", str(tmp_path / "steps.log"))
    sys.modules.pop("waiting_wf", None)
    return importlib.import_module("waiting_wf")


def start_worker(
    tmp_path: Path, store_url: str, *, concurrency: int = 100, poll: str = "50ms", loop: str = "trio"
) -> subprocess.Popen[str]:
    script = Path(sys.executable).parent / "durable"
    return subprocess.Popen(
        [
            str(script),
            "worker",
            str(tmp_path / "waiting_wf.py"),
            "--store",
            store_url,
            "--poll",
            poll,
            "--concurrency",
            str(concurrency),
            "--loop",
            loop,
        ],
        env=dict(os.environ, STEPS_LOG=str(tmp_path / "steps.log")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(worker: subprocess.Popen[str]) -> str:
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    return err


def kill(worker: subprocess.Popen[str]) -> None:
    worker.kill()
    worker.communicate(timeout=60)


def steps(tmp_path: Path) -> list[str]:
    log = tmp_path / "steps.log"
    return log.read_text().split() if log.exists() else []


def assert_each_step_once(tmp_path: Path) -> None:
    twice = [key for key, count in collections.Counter(steps(tmp_path)).items() if count > 1]
    assert twice == [], f"steps executed more than once: {twice}"


def wait_until(condition: Any, what: str, timeout: float = 60) -> None:
    """Poll ``condition`` (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)


def start_runs(store_url: str, workflow: Any, args: tuple[Any, ...], ids: list[str]) -> None:
    async def main() -> None:
        client = durable.Client(store_url)
        for run_id in ids:
            await client.start(workflow, *args, id=run_id)

    trio.run(main)


def results(
    store_url: str, workflow: Any, args: tuple[Any, ...], ids: list[str], timeout: float = 90
) -> list[Any]:
    async def main() -> list[Any]:
        client = durable.Client(store_url)
        with trio.fail_after(timeout):  # a hang guard, not a timing assertion
            return [await (await client.start(workflow, *args, id=run_id)).result() for run_id in ids]

    return trio.run(main)


def test_more_waiting_runs_than_the_worker_has_room_for_all_start_and_all_end(
    wf: Any, tmp_path: Path, store_url: str
) -> None:
    """The issue's measurement: five runs that nap, one worker with room for two. Before,
    c2-c4 started only when c0 and c1 had finished their naps."""
    ids = [f"c{n}" for n in range(5)]
    worker = start_worker(tmp_path, store_url, concurrency=2)
    try:
        start_runs(store_url, wf.nap, (3,), ids)
        wait_until(lambda: len(steps(tmp_path)) >= 5, "all five began")
        assert len(steps(tmp_path)) == 5  # all five asleep at once: none has woken yet
        assert results(store_url, wf.nap, (3,), ids) == ["rested"] * 5
    finally:
        stop(worker)
    assert len(steps(tmp_path)) == 10
    assert_each_step_once(tmp_path)


def test_a_full_worker_takes_the_next_due_run_as_soon_as_one_of_its_runs_ends(
    wf: Any, tmp_path: Path, store_url: str
) -> None:
    """Not at its next poll (an hour here): a slot freed is work to look for. Three runs
    wait for a worker with room for one; nothing in the store changes once it starts."""
    ids = ["q0", "q1", "q2"]
    start_runs(store_url, wf.quick, (), ids)
    worker = start_worker(tmp_path, store_url, concurrency=1, poll="1h")
    try:
        assert results(store_url, wf.quick, (), ids, timeout=60) == ["quick"] * 3
    finally:
        stop(worker)
    assert_each_step_once(tmp_path)


def test_a_signal_brings_back_a_run_the_worker_let_go(wf: Any, tmp_path: Path, store_url: str) -> None:
    worker = start_worker(tmp_path, store_url, concurrency=1)
    try:
        start_runs(store_url, wf.approval, (), ["a1", "a2"])  # room for one: both wait, let go
        wait_until(lambda: len(steps(tmp_path)) == 2, "both asked")

        async def decide() -> None:
            client = durable.Client(store_url)
            await client.signal("a2", "decision", "yes")
            await client.signal("a1", "decision", "no")

        trio.run(decide)
        assert results(store_url, wf.approval, (), ["a1", "a2"]) == ["no", "yes"]
    finally:
        stop(worker)
    assert_each_step_once(tmp_path)


def test_timers_that_fall_due_while_no_worker_is_up_fire_when_one_comes(
    wf: Any, tmp_path: Path, store_url: str
) -> None:
    ids = ["t1", "t2", "t3"]
    worker = start_worker(tmp_path, store_url)
    try:
        start_runs(store_url, wf.nap, (2,), ids)
        wait_until(lambda: len(steps(tmp_path)) == 3, "all three asleep")
    finally:
        err = stop(worker)
    time.sleep(2.5)  # every timer falls due while no worker is up
    assert len(steps(tmp_path)) == 3
    worker = start_worker(tmp_path, store_url)
    try:
        assert results(store_url, wf.nap, (2,), ids) == ["rested"] * 3
    finally:
        err = stop(worker)
    assert all(f"resumed {run_id!r}" in err for run_id in ids), err
    assert_each_step_once(tmp_path)


def test_two_workers_race_for_due_runs_and_each_step_runs_once(
    wf: Any, tmp_path: Path, store_url: str
) -> None:
    """At most one process executes a run at a time, across letting go and taking back."""
    ids = [f"r{n}" for n in range(10)]
    workers = [start_worker(tmp_path, store_url, concurrency=3) for _ in range(2)]
    try:
        start_runs(store_url, wf.naps, (2, 1), ids)
        assert results(store_url, wf.naps, (2, 1), ids) == [2] * 10
    finally:
        errs = [stop(worker) for worker in workers]
    assert len(steps(tmp_path)) == 20
    assert_each_step_once(tmp_path)
    assert all("worker: started" in err or "worker: resumed" in err for err in errs), errs  # both took runs


def test_workers_killed_while_they_let_runs_go_and_take_them_back_lose_nothing(
    wf: Any, tmp_path: Path, store_url: str, loop: str
) -> None:
    """SIGKILL at arbitrary moments of runs that nap and wake again and again: while a
    worker lets a run go, while it takes one back, while it replays. Nothing is lost
    and every run ends; a step may run again only if the kill came between its effect
    and its record (the at-least-once window), never otherwise."""
    ids = [f"k{n}" for n in range(8)]
    start_runs(store_url, wf.naps, (4, 1), ids)
    for kill_after in (0.7, 1.3, 0.9, 1.6):
        worker = start_worker(tmp_path, store_url, concurrency=4, loop=loop)
        time.sleep(kill_after)
        kill(worker)
    worker = start_worker(tmp_path, store_url, concurrency=4, loop=loop)
    try:
        assert results(store_url, wf.naps, (4, 1), ids) == [4] * 8
    finally:
        stop(worker)
    done = set(steps(tmp_path))
    assert done == {f"{run_id}/{seq}" for run_id in ids for seq in range(0, 8, 2)}, sorted(done)
