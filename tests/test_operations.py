"""Operating runs with real processes: each state of ``durable ls`` reached as an operator
meets it (SPEC §11), ``show`` to now, a worker's log, and ``rm`` / ``prune``.

A run is held by a ``durable run`` process while its activity waits for a gate
file, SIGKILLed, taken over by a ``durable worker``; another is submitted by a
Client with no worker; another sleeps for an hour. ``durable ls --json`` is
asked at each point, as an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pgutil
import pytest
import trio
from click.testing import CliRunner

import durable
from durable._cli import main as cli
from durable._core import events as ev

FLOWS = textwrap.dedent(
    """
    import os
    import time

    import durable

    @durable.activity
    def gated(name):
        gate = os.path.join(os.environ["GATES"], name)
        while not os.path.exists(gate):
            time.sleep(0.01)
        return name

    @durable.workflow(name="ops.job")
    def job(name):
        return (yield gated(name))

    @durable.workflow(name="ops.sleeper")
    def sleeper():
        yield durable.sleep("1h")
        return "rested"

    @durable.activity
    def count(name):
        with open(os.path.join(os.environ["GATES"], "count.log"), "a") as log:
            log.write(name + "\\n")
        return name

    @durable.activity(retries=1, initial_backoff="10ms")
    def flaky(name):
        if not os.path.exists(os.path.join(os.environ["GATES"], "fixed")):
            raise ConnectionError("card service down")
        return "paid " + name

    @durable.workflow(name="ops.order")
    def order(name):
        yield count(name)
        return (yield flaky(name))

    @durable.workflow(name="ops.approval")
    def approval():
        return (yield durable.wait_signal("decision", timeout="1h"))
    """
)
DURABLE = str(Path(sys.executable).parent / "durable")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "ops_flows.py").write_text(FLOWS)
    (tmp_path / "gates").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GATES", str(tmp_path / "gates"))
    yield tmp_path


def spawn(workspace: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, GATES=str(workspace / "gates"))
    return subprocess.Popen(
        [DURABLE, *args], env=env, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def ls(store: str) -> dict[str, dict[str, Any]]:
    outcome = CliRunner().invoke(cli, ["ls", "--json", "--store", store])
    assert outcome.exit_code == 0, (outcome.stdout, outcome.stderr)
    return {row["id"]: row for row in json.loads(outcome.stdout)}


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until ``check()`` (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def status(store: str, run_id: str) -> str | None:
    if "://" not in store and not os.path.isdir(store):
        return None  # not made yet by the process that creates the run
    row = ls(store).get(run_id)
    return None if row is None else str(row["status"])


def submit(store: durable.lowlevel.Store | Any, workflow: str, *args: Any, run_id: str) -> None:
    """Start a run as a Client does, with no worker to take it."""
    import ops_flows  # noqa: PLC0415 - written by the fixture

    async def main() -> None:
        await durable.Client(store).start(getattr(ops_flows, workflow), *args, id=run_id)

    trio.run(main)


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL (if it still runs), and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    return err


def test_each_state_is_reached_by_real_processes_on_a_file_store(workspace: Path) -> None:
    store = str(workspace / "store")
    host = socket.gethostname()
    holder = spawn(workspace, "run", "ops_flows.py:job", "r1", "--id", "r1", "--store", store)
    sleeper = spawn(workspace, "run", "ops_flows.py:sleeper", "--id", "w1", "--store", store)
    worker = None
    try:
        wait_for("r1 running", lambda: status(store, "r1") == "running")
        wait_for("w1 waiting", lambda: status(store, "w1") == "waiting")
        submit(durable.FileStore(store), "job", "q1", run_id="q1")
        rows = ls(store)
        assert f"pid {holder.pid} on {host}" in rows["r1"]["held_by"], rows["r1"]
        assert "step 0 activity gated('r1'), attempt 1 in flight for" in rows["r1"]["doing"]
        assert rows["w1"]["waiting"].startswith("timer sleep(1h) (step 0), until ")
        assert f"pid {sleeper.pid} on {host}" in rows["w1"]["held_by"]  # held while it waits
        assert rows["q1"]["status"] == "queued" and rows["q1"]["held_by"] is None
        assert rows["q1"]["brief"] == "no process holds it"

        for process in (holder, sleeper):
            kill(process)
        rows = ls(store)
        assert rows["r1"]["status"] == rows["w1"]["status"] == "stalled", rows
        assert rows["r1"]["brief"] == f"pid {holder.pid} on {host} is gone"
        # No time of death for a process: the run's last record is when it surely ran.
        assert rows["r1"]["holder"]["stalled_since"] == rows["r1"]["last_event"]
        assert rows["q1"]["holder"] is None
        assert "that process is gone" in rows["r1"]["held_by"]
        shown = CliRunner().invoke(cli, ["show", "r1", "--store", store]).stdout
        assert "· stalled" in shown and "waits for  a worker to take it over, then step 0" in shown
        assert "so far" in shown

        worker = spawn(workspace, "worker", "ops_flows.py", "--store", store, "--poll", "50ms")
        for gate in ("r1", "q1"):
            (workspace / "gates" / gate).touch()
        wait_for("r1 and q1 completed", lambda: status(store, "r1") == status(store, "q1") == "completed")
        wait_for("w1 let go", lambda: ls(store)["w1"]["held_by"] is None)
    finally:
        for process in (holder, sleeper):
            kill(process)
        log = stop(worker) if worker is not None else ""
    assert f"worker: resumed 'r1' (ops.job) after a crash: pid {holder.pid} on {host} held it" in log, log
    assert "worker: started 'q1' (ops.job)" in log, log
    # The sleeper was killed while it waited: the worker takes it over and lets it go again.
    assert f"worker: resumed 'w1' (ops.sleeper) after a crash: pid {sleeper.pid} on {host}" in log
    rows = ls(store)
    assert rows["w1"]["status"] == "waiting" and rows["w1"]["held_by"] is None, rows["w1"]


def test_a_run_whose_lease_expired_is_stalled_on_postgresql(workspace: Path) -> None:
    pgutil.require()
    schema = pgutil.fresh_schema()
    store = f"{pgutil.dsn()}?schema={schema}&lease_ttl=1s"
    first = spawn(workspace, "worker", "ops_flows.py", "--store", store, "--poll", "50ms")
    second = None
    try:
        target = durable.PostgresStore(pgutil.dsn(), schema=schema)
        submit(target, "job", "p1", run_id="p1")
        trio.run(target.aclose)
        wait_for("p1 running", lambda: status(store, "p1") == "running")
        assert f":{first.pid}" not in str(ls(store)["p1"]["held_by"])  # shown as pid N on host
        assert f"pid {first.pid} on " in ls(store)["p1"]["held_by"]
        first.send_signal(signal.SIGSTOP)  # frozen: its lease is not renewed
        wait_for("p1 stalled", lambda: status(store, "p1") == "stalled")
        row = ls(store)["p1"]
        assert "its lease expired at" in row["held_by"], row
        assert row["brief"].startswith(f"pid {first.pid} on {socket.gethostname()}: its lease expired "), row
        assert row["brief"].endswith(" ago"), row
        assert row["holder"]["stalled_since"] == row["holder"]["lease_expires"] is not None, row
        kill(first)
        second = spawn(workspace, "worker", "ops_flows.py", "--store", store, "--poll", "50ms")
        (workspace / "gates" / "p1").touch()
        wait_for("p1 completed", lambda: status(store, "p1") == "completed")
    finally:
        kill(first)
        log = stop(second) if second is not None else ""
        pgutil.drop_schema(schema)
    # Frozen, not crashed: its lease expired, and another worker took the run over.
    assert f"worker: taken over 'p1' (ops.job) from pid {first.pid} on" in log, log
    assert "(its lease expired)" in log


def finished_run(store: durable.FileStore, run_id: str, ended: float) -> None:
    """A run that started and completed ``ended`` (epoch seconds), written as a run does."""

    async def main() -> None:
        writer = await store.create(ev.RunStarted(run_id, "ops.job", b"\x82\x80\xa0", ended - 1))
        assert writer is not None
        writer.append(ev.RunCompleted(b"\xf6", ended))
        await writer.sync()
        writer.close()

    trio.run(main)


def test_rm_and_prune_keep_what_has_not_finished(workspace: Path) -> None:
    path = workspace / "store"
    store = durable.FileStore(path)
    now = time.time()
    finished_run(store, "old", now - 40 * 86400)
    finished_run(store, "recent", now - 3600)
    submit(store, "job", "pending", run_id="pending")
    held = spawn(workspace, "run", "ops_flows.py:sleeper", "--id", "held", "--store", str(path))
    try:
        wait_for("held waiting", lambda: status(str(path), "held") == "waiting")
        runner = CliRunner()
        dry = runner.invoke(cli, ["prune", "--older-than", "30d", "--dry-run", "--store", str(path)])
        assert dry.exit_code == 0 and "would remove 'old'" in dry.stdout and "'recent'" not in dry.stdout
        assert set(ls(str(path))) == {"old", "recent", "pending", "held"}
        time.sleep(1.1)  # every run's last record is now over a second old
        args = ["prune", "--older-than", "1s", "--force", "--dry-run", "--store", str(path)]
        dry_forced = runner.invoke(cli, args)
        assert dry_forced.exit_code == 1, dry_forced.stdout  # a run kept, as the prune would say
        assert "would remove 'pending'" in dry_forced.stdout and "'held'" not in dry_forced.stdout
        assert f"kept 'held': run 'held' is held by pid {held.pid} on " in dry_forced.stderr
        assert "would remove 3 runs older than" in dry_forced.stdout  # old, recent, pending
        assert set(ls(str(path))) == {"old", "recent", "pending", "held"}
        pruned = runner.invoke(cli, ["prune", "--older-than", "30d", "--store", str(path)])
        assert pruned.exit_code == 0 and "removed 'old'" in pruned.stdout, pruned.stdout
        assert set(ls(str(path))) == {"recent", "pending", "held"}

        kept = runner.invoke(cli, ["rm", "recent", "pending", "held", "nope", "--store", str(path)])
        assert kept.exit_code == 2, kept.stdout  # a run that does not exist: a usage error
        assert "removed 'recent'" in kept.stdout
        assert "kept 'pending': it has not finished (--force removes it all the same)" in kept.stderr
        assert f"kept 'held': run 'held' is held by pid {held.pid} on {socket.gethostname()}" in kept.stderr
        assert "no run 'nope'" in kept.stderr
        assert "error: no run 'nope'" in kept.stderr  # worded as every usage error
        forced = runner.invoke(cli, ["rm", "pending", "held", "--force", "--store", str(path)])
        assert forced.exit_code == 1 and "removed 'pending'" in forced.stdout
        assert "kept 'held'" in forced.stderr  # never a run a live process holds
        assert set(ls(str(path))) == {"held"}
        assert not (path / "holders" / "pending").exists()
    finally:
        kill(held)


def test_prune_on_postgresql_removes_runs_and_their_rows() -> None:
    store = pgutil.fresh_store()

    async def main() -> None:
        try:
            for run_id in ("a", "b"):
                writer = await store.create(ev.RunStarted(run_id, "ops.job", b"\x82\x80\xa0", time.time()))
                assert writer is not None
                if run_id == "a":
                    writer.append(ev.RunCompleted(b"\xf6", time.time()))
                    await writer.sync()
                writer.close()
            await store.post("a", ev.SignalReceived("late", b"\xf6", time.time(), "m-1"))
            from durable._retention import prune  # noqa: PLC0415

            removed = await prune(store, time.time() + 60)
            assert [(r.run_id, r.outcome) for r in removed] == [("a", "removed")]
            assert await store.run_ids() == ["b"] and await store.messages("a") == []
            forced = await prune(store, time.time() + 60, force=True)
            assert [(r.run_id, r.outcome) for r in forced] == [("b", "removed")]
            assert await store.run_ids() == []
        finally:
            await store.aclose()

    trio.run(main)


def test_show_measures_an_unfinished_run_to_now_and_draws_cancellation_like_the_rest(
    workspace: Path,
) -> None:
    store = workspace / "store"
    submit(durable.FileStore(store), "approval", run_id="c1")
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["cancel", "c1", "--reason", "not needed", "--store", str(store)]).exit_code == 0
    )
    worker = spawn(workspace, "worker", "ops_flows.py", "--store", str(store), "--poll", "50ms")
    try:
        wait_for("c1 cancelled", lambda: status(str(store), "c1") == "cancelled")
    finally:
        stop(worker)
    shown = runner.invoke(cli, ["show", "c1", "--store", str(store)]).stdout
    assert "cancellation requested, reason 'not needed'" in shown, shown
    assert "run cancelled → cancelled: not needed" in shown
    assert "CancelRequested" not in shown and "message_id" not in shown


def test_retry_runs_a_failed_run_again_from_its_failed_step(workspace: Path) -> None:
    store = str(workspace / "store")
    failed = spawn(workspace, "run", "ops_flows.py:order", "o1", "--id", "o1", "--store", store)
    _, err = failed.communicate(timeout=60)
    assert failed.returncode == 1 and "card service down" in err, err
    runner = CliRunner()
    early = runner.invoke(cli, ["retry", "nope", "--store", store])
    assert early.exit_code == 2 and "no run 'nope'" in early.stderr
    (workspace / "gates" / "fixed").touch()  # the bug is fixed
    again = runner.invoke(cli, ["retry", "o1", "--reason", "card service back", "--store", store])
    assert again.exit_code == 0, again.stderr
    assert ls(store)["o1"]["status"] == "queued"
    twice = runner.invoke(cli, ["retry", "o1", "--store", store])
    assert twice.exit_code == 2 and "has not failed" in twice.stderr, twice.stderr
    worker = spawn(workspace, "worker", "ops_flows.py", "--store", store, "--poll", "50ms")
    try:
        wait_for("o1 completed", lambda: status(store, "o1") == "completed")
    finally:
        log = stop(worker)
    assert "worker: retried 'o1' (ops.order)" in log, log
    finished = spawn(workspace, "run", "ops_flows.py:order", "o1", "--id", "o1", "--store", store)
    out, err = finished.communicate(timeout=60)
    assert finished.returncode == 0 and out.strip() == "paid o1", (out, err)  # its recorded result
    assert (workspace / "gates" / "count.log").read_text() == "o1\n"  # step 0 never ran again
    shown = runner.invoke(cli, ["show", "o1", "--store", store]).stdout
    assert "run o1 · ops.order · completed" in shown
    assert "(superseded by the retry below)" in shown
    assert "retried (card service back): the failure above is superseded, step 1 runs again" in shown
    assert "retried at +" in shown and "attempt 1 completed" in shown


def test_a_worker_says_why_a_run_failed(workspace: Path) -> None:
    store = str(workspace / "store")
    submit(durable.FileStore(store), "order", "o2", run_id="o2")  # its card service is down
    log = workspace / "worker.stderr"
    with log.open("w") as err:  # a file, read while it runs: the line comes after the journal's end
        worker = subprocess.Popen(
            [DURABLE, "worker", "ops_flows.py", "--store", store, "--poll", "50ms"],
            env=dict(os.environ, GATES=str(workspace / "gates")),
            cwd=workspace,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_for("the worker's line", lambda: "worker: failed 'o2': " in log.read_text())
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    said = [line for line in log.read_text().splitlines() if line.startswith("worker: failed 'o2': ")]
    assert len(said) == 1 and "card service down" in said[0], log.read_text()
    assert status(store, "o2") == "failed"


def test_signal_warns_when_the_run_waits_for_another_name_and_show_draws_the_wait(workspace: Path) -> None:
    store = str(workspace / "store")

    async def park() -> None:  # as a worker does: the run waits, and is let go
        import ops_flows  # noqa: PLC0415 - written by the fixture

        async with durable.Runtime(durable.FileStore(store), waiting_cache=0) as runtime:
            await runtime.start(ops_flows.approval, id="a1")
            while runtime.running:
                await trio.sleep(0.01)

    trio.run(park)
    row = ls(store)["a1"]
    assert row["status"] == "waiting", row
    assert row["waiting"].startswith("signal 'decision' (step 0), until "), row
    shown = CliRunner().invoke(cli, ["show", "a1", "--store", store]).stdout
    assert "signal  " in shown and "wait_signal('decision', timeout=1h) → waiting" in shown, shown
    runner = CliRunner()
    typo = runner.invoke(cli, ["signal", "a1", "decisoin", "yes", "--store", store])
    assert typo.exit_code == 0, typo.stderr  # delivered all the same: signals may come early
    assert "warning: run 'a1' waits for the signal 'decision', not 'decisoin'" in typo.stderr
    right = runner.invoke(cli, ["signal", "a1", "decision", "yes", "--store", store])
    assert right.exit_code == 0 and "warning" not in right.stderr
    worker = spawn(workspace, "worker", "ops_flows.py", "--store", store, "--poll", "50ms")
    try:
        wait_for("a1 completed", lambda: status(store, "a1") == "completed")
    finally:
        stop(worker)
    shown = runner.invoke(cli, ["show", "a1", "--store", store]).stdout
    assert "wait_signal('decision', timeout=1h) → 'yes'" in shown, shown
    assert "signal 'decisoin' received" in shown


def test_a_run_in_a_retry_backoff_is_waiting_for_its_next_attempt() -> None:
    from durable import _timeline as tl  # noqa: PLC0415
    from durable._core.errors import ErrorInfo  # noqa: PLC0415
    from durable._states import mark_state  # noqa: PLC0415

    t0 = 1_764_000_000.0
    error = ErrorInfo("TimeoutError", "upstream timed out", "")
    events = [
        ev.RunStarted("b-1", "ops.backoff", b"\x82\x80\xa0", t0),
        ev.ActivityScheduled(0, "flaky", b"\x82\x81ax\xa0", t0 + 0.1),
        ev.AttemptFailed(0, 1, error, t0 + 6.2, t0 + 0.2),
    ]
    during = mark_state(tl.build("b-1", events), None, t0 + 3)
    assert during.status == "waiting", during
    assert during.waiting is not None and during.waiting.startswith(
        "attempt 2 of flaky('x') (step 0), after its backoff, until "
    )
    assert during.until == t0 + 6.2
    after = mark_state(tl.build("b-1", events), None, t0 + 10)  # due, and nobody took it
    assert after.status == "queued"
    assert (
        after.waiting
        == "a worker to take it, then step 0 activity flaky('x') (attempt 2 next, after its backoff)"
    )


def test_a_postgresql_worker_says_once_that_it_cannot_run_a_run_and_never_takes_it_again(
    workspace: Path,
) -> None:
    pgutil.require()
    schema = pgutil.fresh_schema()
    store = f"{pgutil.dsn()}?schema={schema}"
    (workspace / "newer.py").write_text(
        "import durable\n\n@durable.workflow(name='ops.newer')\ndef newer():\n    return 1\n    yield\n"
    )
    target = durable.PostgresStore(pgutil.dsn(), schema=schema)
    worker = None
    try:
        import newer  # noqa: PLC0415 - written above: a workflow the worker's code lacks

        async def main() -> None:
            await durable.Client(target).start(newer.newer, id="n-1")
            await target.aclose()

        trio.run(main)
        worker = spawn(workspace, "worker", "ops_flows.py", "--store", store, "--poll", "20ms")
        submit(durable.PostgresStore(pgutil.dsn(), schema=schema), "job", "j-1", run_id="j-1")
        (workspace / "gates" / "j-1").touch()
        wait_for("j-1 completed", lambda: status(store, "j-1") == "completed")
        time.sleep(1.0)  # fifty polls: a worker that spins takes n-1 fifty times more
        epochs = pgutil.execute(f'SELECT epoch FROM "{schema}".durable_runs WHERE run_id = %s', ["n-1"])
    finally:
        log = stop(worker) if worker is not None else ""
        pgutil.drop_schema(schema)
    assert log.count("cannot run 'n-1'") == 1 and log.count("gave up 'n-1'") == 1, log
    assert epochs[0][0] == 2, epochs  # made by the Client (1), taken once (its epoch counts takes)
