"""durable.Client and the `durable worker` verb: hand runs to a worker process, stop it, restart it.

Every worker runs on trio and on asyncio (``--loop``): the ``workspace`` fixture
asks for ``loop`` (tests/conftest.py), and the activities sleep with the loop they
run on, so that on asyncio they are asyncio code.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
    import trio

    @durable.activity
    async def step(i):
        seconds = float(os.environ.get("STEP_SECONDS", "0"))
        if sniffio.current_async_library() == "asyncio":
            await asyncio.sleep(seconds)
        else:
            await trio.sleep(seconds)
        with open(os.environ["STEPS_LOG"], "a") as log:
            log.write(durable.activity_info().idempotency_key + "\\n")
        return i

    @durable.workflow(name="tests.worker.job")
    def job(n):
        total = 0
        for i in range(n):
            total += yield step(i)
        return total

    @durable.workflow(name="tests.worker.nap")
    def nap(seconds):
        yield durable.sleep(seconds)
        return "rested"

    @durable.workflow(name="tests.worker.approval")
    def approval():
        return (yield durable.wait_signal("decision", timeout="1h"))
    """
)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str) -> Path:
    (tmp_path / "worker_wf.py").write_text(WORKFLOWS)
    (tmp_path / "loop").write_text(loop)  # the loop of the workers _worker starts
    (tmp_path / "store").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STEPS_LOG", str(tmp_path / "steps.log"))
    return tmp_path


def _module(workspace: Path) -> object:
    return importlib.import_module("worker_wf")


def _worker(workspace: Path, step_seconds: float = 0.0, store: str | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, STEP_SECONDS=str(step_seconds), STEPS_LOG=str(workspace / "steps.log"))
    script = Path(sys.executable).parent / "durable"
    return subprocess.Popen(
        [
            str(script),
            "worker",
            str(workspace / "worker_wf.py"),
            "--store",
            store or str(workspace / "store"),
            "--poll",
            "20ms",
            "--loop",
            (workspace / "loop").read_text(),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(worker: subprocess.Popen[str], how: signal.Signals = signal.SIGTERM) -> str:
    worker.send_signal(how)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    return err


def test_a_worker_runs_what_a_client_starts(workspace: Path) -> None:
    wf = _module(workspace)
    worker = _worker(workspace)
    try:

        async def main() -> int:
            client = durable.Client(workspace / "store")
            handle = await client.start(wf.job, 4, id="job-1")  # type: ignore[attr-defined]
            with trio.fail_after(60):  # a hang guard, not a timing assertion
                return int(await handle.result())

        assert trio.run(main) == 6
    finally:
        err = _stop(worker)
    assert "started 'job-1'" in err
    assert "SIGTERM received, stopping" in err


def test_ctrl_c_stops_a_worker_cleanly_in_the_middle_of_a_run(workspace: Path) -> None:
    """SIGINT as SIGTERM: the activity in flight is cancelled, the worker exits 0."""
    wf = _module(workspace)
    worker = _worker(workspace, step_seconds=3600)

    async def start() -> None:
        await durable.Client(workspace / "store").start(wf.job, 2, id="interrupted")  # type: ignore[attr-defined]

    async def in_flight() -> bool:
        events = await durable.FileStore(workspace / "store").read("interrupted") or []
        return any(type(event).__name__ == "ActivityScheduled" for event in events)

    trio.run(start)
    deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
    while not trio.run(in_flight):
        assert time.monotonic() < deadline and worker.poll() is None
        time.sleep(0.02)
    err = _stop(worker, signal.SIGINT)
    assert "SIGINT received, stopping" in err
    assert "worker stopped; its unfinished runs resume" in err


def test_a_worker_stopped_by_sigterm_mid_run_resumes_after_a_restart_and_runs_each_step_once(
    workspace: Path,
) -> None:
    wf = _module(workspace)
    log = workspace / "steps.log"

    async def start() -> None:
        await durable.Client(workspace / "store").start(wf.job, 8, id="job-2")  # type: ignore[attr-defined]

    trio.run(start)
    first = _worker(workspace, step_seconds=0.05)
    deadline = time.monotonic() + 60
    while not (log.exists() and len(log.read_text().split()) >= 2) and time.monotonic() < deadline:
        time.sleep(0.02)
    _stop(first)
    done_before = len(log.read_text().split())
    assert 1 <= done_before <= 8
    second = _worker(workspace)
    try:

        async def wait() -> int:
            handle = await durable.Client(workspace / "store").start(wf.job, 8, id="job-2")  # type: ignore[attr-defined]
            with trio.fail_after(60):
                return int(await handle.result())

        assert trio.run(wait) == 28
    finally:
        _stop(second)
    keys = log.read_text().split()
    assert sorted(keys) == sorted(f"job-2/{i}" for i in range(8))  # each step once, none lost


def test_a_client_signals_and_cancels_runs_no_worker_holds(workspace: Path) -> None:
    wf = _module(workspace)

    async def main() -> None:
        client = durable.Client(workspace / "store")
        approval = await client.start(wf.approval, id="a")  # type: ignore[attr-defined]
        await client.signal("a", "decision", "approved")
        other = await client.start(wf.approval, id="b")  # type: ignore[attr-defined]
        await client.cancel("b", "not needed")
        assert await approval.status() == "queued"  # no worker took it yet
        async with durable.Runtime(workspace / "store") as runtime:
            for handle in await runtime.recover():
                with contextlib.suppress(durable.Cancelled):
                    await handle.result()
        assert await approval.result() == "approved"
        with pytest.raises(durable.Cancelled, match="not needed"):
            await other.result()
        with pytest.raises(durable.RunConflictError, match="already exists"):
            await client.start(wf.job, 3, id="a")  # type: ignore[attr-defined]
        with pytest.raises(durable.UnknownRunError):
            await client.signal("nope", "decision")

    trio.run(main)


def _held(workspace: Path, run_id: str) -> None:
    """Wait until a worker has taken the run (its journal shows the wait's timer)."""

    async def look() -> bool:
        events = await durable.FileStore(workspace / "store").read(run_id)
        return bool(events) and any(type(e).__name__ == "TimerStarted" for e in events or [])

    deadline = time.monotonic() + 60
    while not trio.run(look):
        assert time.monotonic() < deadline, f"no worker took {run_id!r}"
        time.sleep(0.02)


def test_a_client_signals_and_cancels_runs_a_worker_took(workspace: Path) -> None:
    wf = _module(workspace)
    worker = _worker(workspace)
    try:

        async def start(run_id: str) -> durable.ClientHandle:
            return await durable.Client(workspace / "store").start(wf.approval, id=run_id)  # type: ignore[attr-defined]

        approval, other = trio.run(start, "held-a"), trio.run(start, "held-b")
        _held(workspace, "held-a")
        _held(workspace, "held-b")

        async def main() -> None:
            client = durable.Client(workspace / "store")
            await client.signal("held-a", "decision", {"by": "carol"})
            await client.cancel("held-b", "not needed")
            with trio.fail_after(60):  # a hang guard, not a timing assertion
                assert await approval.result() == {"by": "carol"}
                with pytest.raises(durable.Cancelled, match="not needed"):
                    await other.result()
            with pytest.raises(durable.RunConflictError, match="has finished"):
                await client.signal("held-a", "decision", "again")

        trio.run(main)
    finally:
        _stop(worker)
    # Every message taken: posted to the inbox while the worker held the run, or
    # journaled at once while the run, waiting, was let go (then no inbox at all).
    inbox = workspace / "store" / "inbox"
    assert not inbox.exists() or os.listdir(inbox) == []

    async def journal() -> list[object]:
        return list(await durable.FileStore(workspace / "store").read("held-a") or [])

    signals = [e for e in trio.run(journal) if type(e).__name__ == "SignalReceived"]
    assert len(signals) == 1 and signals[0].message_id  # type: ignore[attr-defined]


def test_durable_signal_and_cancel_reach_runs_a_worker_holds(workspace: Path) -> None:
    wf = _module(workspace)
    script = str(Path(sys.executable).parent / "durable")
    store = str(workspace / "store")
    worker = _worker(workspace)
    try:

        async def start(run_id: str) -> durable.ClientHandle:
            return await durable.Client(store).start(wf.approval, id=run_id)  # type: ignore[attr-defined]

        approval, other = trio.run(start, "cli-a"), trio.run(start, "cli-b")
        _held(workspace, "cli-a")
        _held(workspace, "cli-b")
        for verb in (["signal", "cli-a", "decision", "{'ok': True}"], ["cancel", "cli-b", "--reason", "no"]):
            done = subprocess.run(
                [script, *verb, "--store", store], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr

        async def results() -> None:
            with trio.fail_after(60):  # a hang guard, not a timing assertion
                assert await approval.result() == {"ok": True}
                with pytest.raises(durable.Cancelled, match="no"):
                    await other.result()

        trio.run(results)
    finally:
        _stop(worker)


def test_worker_needs_a_module_that_imports(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "durable"
    done = subprocess.run(
        [str(script), "worker", str(tmp_path / "missing.py"), "--store", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: no such file")


def test_a_worker_whose_store_cannot_be_reached_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text("import durable\n")
    script = Path(sys.executable).parent / "durable"
    done = subprocess.run(
        [
            str(script),
            "worker",
            str(tmp_path / "wf.py"),
            "--store",
            "postgresql://nobody:secret@127.0.0.1:1/none?connect_timeout=2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot connect to PostgreSQL at 127.0.0.1:1/none")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "secret" not in done.stderr


@pytest.mark.postgres
def test_a_worker_rides_out_its_database_connections_being_killed(workspace: Path) -> None:
    # The database restarting looks like this to a worker: every connection dropped.
    # Only this test's connections are killed (its own application_name).
    pgutil.require()
    schema, app = pgutil.fresh_schema(), f"durable-test-{os.getpid()}-{time.monotonic_ns()}"
    dsn = f"{pgutil.dsn()}?schema={schema}&lease_ttl=2s"
    wf = _module(workspace)
    log = workspace / "steps.log"
    worker = _worker(workspace, step_seconds=0.2, store=f"{dsn}&application_name={app}")
    try:

        async def start() -> durable.ClientHandle:
            return await durable.Client(dsn).start(wf.job, 10, id="job-pg")  # type: ignore[attr-defined]

        handle = trio.run(start)
        deadline = time.monotonic() + 60
        while not (log.exists() and len(log.read_text().split()) >= 2):
            assert time.monotonic() < deadline, "the worker never started the run"
            time.sleep(0.02)
        pgutil.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", [app]
        )

        async def result() -> int:
            with trio.fail_after(120):  # a hang guard, not a timing assertion
                return int(await handle.result())

        assert trio.run(result) == 45
    finally:
        err = _stop(worker)
        pgutil.drop_schema(schema)
    assert "Traceback" not in err
    keys = log.read_text().split()
    assert set(keys) == {f"job-pg/{i}" for i in range(10)}  # every step ran; some maybe twice


@pytest.mark.postgres
def test_a_timer_that_fell_due_while_no_worker_held_its_run_fires_on_the_worker_that_takes_it(
    workspace: Path,
) -> None:
    pgutil.require()
    schema = pgutil.fresh_schema()
    dsn = f"{pgutil.dsn()}?schema={schema}&lease_ttl=2s"
    wf = _module(workspace)
    try:

        async def sleep_then_stop() -> None:
            # A process starts the run, which journals its timer's deadline, and stops.
            async with durable.Runtime(dsn) as runtime:
                await runtime.start(wf.nap, 1.0, id="nap-1")  # type: ignore[attr-defined]
                await trio.sleep(0.2)

        trio.run(sleep_then_stop)
        time.sleep(1.5)  # the deadline passes while no process holds the run
        worker = _worker(workspace, store=dsn)
        try:

            async def result() -> str:
                handle = await durable.Client(dsn).start(wf.nap, 1.0, id="nap-1")  # type: ignore[attr-defined]
                with trio.fail_after(60):  # a hang guard, not a timing assertion
                    return str(await handle.result())

            assert trio.run(result) == "rested"
        finally:
            err = _stop(worker)
        assert "resumed 'nap-1'" in err

        async def events() -> list[object]:
            store = durable.PostgresStore(dsn)
            try:
                return list(await store.read("nap-1") or [])
            finally:
                await store.aclose()

        names = [type(e).__name__ for e in trio.run(events)]
        assert names.count("TimerStarted") == 1 and names.count("TimerFired") == 1
    finally:
        pgutil.drop_schema(schema)


def test_a_worker_reports_a_damaged_journal_once_and_runs_the_others(workspace: Path) -> None:
    wf = _module(workspace)

    async def start() -> None:
        await durable.Client(workspace / "store").start(wf.job, 2, id="fine")  # type: ignore[attr-defined]
        store = durable.FileStore(workspace / "store")
        call = durable.lowlevel.dumps_value([[2], {}])
        writer = await store.create(durable.lowlevel.RunStarted("broken", "tests.worker.job", call, 1.0))
        assert writer is not None
        writer.append(durable.lowlevel.RunResumed(2.0, 1))  # a later record: record 0 was durable
        await writer.sync()
        writer.close()

    trio.run(start)
    path = Path(durable.FileStore(workspace / "store").journal_path("broken"))
    data = bytearray(path.read_bytes())
    data[30] ^= 0xFF  # damage inside record 0
    path.write_bytes(bytes(data))
    worker = _worker(workspace)
    try:

        async def wait() -> int:
            handle = await durable.Client(workspace / "store").start(wf.job, 2, id="fine")  # type: ignore[attr-defined]
            with trio.fail_after(60):  # a hang guard, not a timing assertion
                return int(await handle.result())

        assert trio.run(wait) == 1
        time.sleep(0.5)  # some more polls
    finally:
        err = _stop(worker)
    lines = [line for line in err.splitlines() if "'broken'" in line]
    assert len(lines) == 2, err  # "cannot run", then "gave up ... damaged": once each
    assert "cannot run 'broken'" in lines[0] and "damaged" in lines[1]
