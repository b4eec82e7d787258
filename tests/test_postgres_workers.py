"""`durable worker` processes sharing one PostgreSQL schema: real processes, real signals.

Each test runs on its own schema (dropped at the end) and drives `durable worker`
subprocesses as an operator would: several workers share the runs a
`durable.Client` creates; SIGKILLed workers' runs are taken over once their
leases expire; a worker stalled (SIGSTOP) past its lease is fenced off when it
wakes; two processes creating the tables at once both succeed; the CLI verbs
reach runs a worker holds through the inbox and NOTIFY.

Timeouts here are hang guards only, never timing assertions.
"""

from __future__ import annotations

import collections
import json
import os
import signal
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
from psycopg import sql

import durable
from durable import lowlevel as ll
from durable._store_postgres import PostgresStore
from durable._store_postgres.schema import SCHEMA_VERSION

pytestmark = pytest.mark.postgres

SCRIPT = str(Path(sys.executable).parent / "durable")
GUARD = 120.0  # seconds: a hang guard, never a timing assertion

WORKFLOWS = textwrap.dedent(
    """
    import os
    import zlib

    import trio

    import durable


    def log(line):
        # One file per process: lines of several workers never interleave.
        path = os.path.join(os.environ["STEPS_DIR"], f"steps-{os.getpid()}.log")
        with open(path, "a") as out:
            out.write(line + "\\n")


    @durable.activity
    async def step(i):
        key = durable.activity_info().idempotency_key
        # 0.5 to 1.5 times STEP_SECONDS, by key: runs started together do not end together.
        spread = 0.5 + zlib.crc32(key.encode()) % 100 / 100
        await trio.sleep(float(os.environ.get("STEP_SECONDS", "0")) * spread)
        log(key)
        return i * i


    @durable.workflow(name="tests.pgworkers.job")
    def job(n):
        total = 0
        for i in range(n):
            total += yield step(i)
        return total


    @durable.activity
    async def hold(i):
        key = durable.activity_info().idempotency_key
        log("start " + key)
        await trio.sleep(float(os.environ.get("HOLD_SECONDS", "0")))
        log("done " + key)
        return i


    @durable.workflow(name="tests.pgworkers.fenced")
    def fenced():
        a = yield step(1)
        b = yield hold(2)
        c = yield step(3)
        return [a, b, c]


    @durable.workflow(name="tests.pgworkers.approval")
    def approval():
        return (yield durable.wait_signal("decision", timeout="1h"))
    """
)


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def schema() -> Iterator[str]:
    pgutil.require()
    name = pgutil.fresh_schema()
    yield name
    pgutil.drop_schema(name)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pgworkers_wf.py").write_text(WORKFLOWS)
    (tmp_path / "steps").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STEPS_DIR", str(tmp_path / "steps"))
    return tmp_path


def _workflows() -> Any:
    import importlib  # noqa: PLC0415 - the module exists only once the workspace is written

    return importlib.import_module("pgworkers_wf")


def store_dsn(schema: str, lease_ttl: str) -> str:
    return f"{pgutil.dsn()}?schema={schema}&lease_ttl={lease_ttl}"


def wait_until(condition: Callable[[], Any], what: str, timeout: float = GUARD) -> Any:
    """Poll ``condition`` until it returns something true (a hang guard, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"hang guard: still waiting after {timeout:.0f} s for {what}")
        time.sleep(0.02)


class Worker:
    """One `durable worker` subprocess; its stdout and stderr go to files (never a full pipe)."""

    def __init__(
        self,
        workspace: Path,
        name: str,
        dsn: str,
        *,
        poll: str = "50ms",
        concurrency: int = 100,
        **env: str,
    ) -> None:
        self.name = name
        self.err_path = workspace / f"{name}.stderr"
        self.out_path = workspace / f"{name}.stdout"
        environment = dict(os.environ, STEPS_DIR=str(workspace / "steps"), **env)
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    SCRIPT,
                    "worker",
                    str(workspace / "pgworkers_wf.py"),
                    "--store",
                    dsn,
                    "--poll",
                    poll,
                    "--concurrency",
                    str(concurrency),
                ],
                env=environment,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, text: str) -> None:
        def found() -> bool:
            if text in self.stderr():
                return True
            if self.proc.poll() is not None:
                pytest.fail(f"worker {self.name} exited ({self.proc.returncode}): {self.stderr()}")
            return False

        try:
            wait_until(found, f"{text!r} in the stderr of worker {self.name}")
        except pytest.fail.Exception as exc:  # say what the worker did say: the next step to look at
            pytest.fail(f"{exc}\nits stderr:\n{self.stderr()}")

    def send(self, number: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(number)

    def stop(self) -> int:
        """SIGTERM, then wait for the exit: the exit code."""
        self.send(signal.SIGCONT)  # a stopped worker would never see the SIGTERM
        self.send(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=60)
            pytest.fail(f"worker {self.name} did not stop on SIGTERM: {self.stderr()}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=60)


def stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.proc.poll() is None:
            worker.send(signal.SIGCONT)
            worker.proc.kill()
            worker.proc.wait(timeout=60)


def table(schema: str, name: str) -> sql.Composable:
    return sql.Identifier(schema, name)


def runs_table(schema: str) -> list[tuple[Any, ...]]:
    """``(run_id, status, owner, epoch, next_index)`` of every run."""
    return pgutil.execute(
        sql.SQL("SELECT run_id, status, owner, epoch, next_index FROM {} ORDER BY run_id").format(
            table(schema, "durable_runs")
        )
    )


def owner_pid(owner: str | None) -> int | None:
    """The pid in a lease owner (``host:pid:random``)."""
    return None if owner is None else int(owner.split(":")[-2])


def read_journals(schema: str, run_ids: list[str]) -> dict[str, list[Any]]:
    """Every journal through ``store.read``: it checks indexes 0..n-1, checksums, no gap."""

    async def main() -> dict[str, list[Any]]:
        store = PostgresStore(pgutil.dsn(), schema=schema)
        try:
            found = {}
            for run_id in run_ids:
                events = await store.read(run_id)
                assert events is not None, run_id
                found[run_id] = events
            return found
        finally:
            await store.aclose()

    return trio.run(main)


def check_indexes_in_sql(schema: str) -> None:
    """Per run: the stored idx are exactly 0..next_index-1, each once."""
    rows = pgutil.execute(
        sql.SQL(
            "SELECT r.run_id, r.next_index, count(j.idx), count(DISTINCT j.idx), min(j.idx), max(j.idx)"
            " FROM {} AS r LEFT JOIN {} AS j ON j.run_id = r.run_id GROUP BY r.run_id, r.next_index"
        ).format(table(schema, "durable_runs"), table(schema, "durable_records"))
    )
    assert rows
    for run_id, next_index, count, distinct, low, high in rows:
        assert (count, distinct, low, high) == (next_index, next_index, 0, next_index - 1), run_id


def replay(workflow: Any, events: list[Any]) -> Any:
    """Feed a journal to the replay core with the current code; the outcome it reaches."""
    core = ll.Replay(workflow, events[0])
    for event in events[1:]:
        core.apply(event)
    return core.outcome


def completed_once(events: list[Any], steps: int) -> None:
    """One RunCompleted, at the end; each step scheduled and completed exactly once."""
    assert isinstance(events[0], ll.RunStarted)
    assert isinstance(events[-1], ll.RunCompleted)
    assert sum(isinstance(e, ll.RunCompleted | ll.RunFailed | ll.RunCancelled) for e in events) == 1
    done = [e.seq for e in events if isinstance(e, ll.ActivityCompleted)]
    scheduled = [e.seq for e in events if isinstance(e, ll.ActivityScheduled)]
    assert sorted(done) == list(range(steps)), done
    assert sorted(scheduled) == list(range(steps)), scheduled


def executions(workspace: Path) -> collections.Counter[str]:
    """How many times each idempotency key ran, over every worker's log."""
    counts: collections.Counter[str] = collections.Counter()
    for path in (workspace / "steps").glob("steps-*.log"):
        counts.update(path.read_text().split("\n"))
    counts.pop("", None)
    return counts


def _first_resumed(events: list[Any]) -> int:
    """The index of the first RunResumed (the journal's length if there is none)."""
    return next((i for i, e in enumerate(events) if isinstance(e, ll.RunResumed)), len(events))


def resumed_by(events: list[Any]) -> list[int]:
    """The pids of the processes that opened the run, in order (its RunResumed records)."""
    return [e.pid for e in events if isinstance(e, ll.RunResumed)]


def start_runs(dsn: str, workflow: Any, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    async def main() -> None:
        client = durable.Client(dsn)
        try:
            for run_id, args in calls:
                await client.start(workflow, *args, id=run_id)
        finally:
            await client.store.aclose()

    trio.run(main)


# -- many workers, two of them killed ------------------------------------------------------

RUNS = 200
STEPS = 8
EXPECTED = sum(i * i for i in range(STEPS))


def test_four_workers_share_200_runs_and_two_sigkilled_workers_runs_are_taken_over(
    workspace: Path, schema: str
) -> None:
    pgutil.require()
    wf = _workflows()
    dsn = store_dsn(schema, "2s")
    workers = [
        Worker(workspace, f"w{i}", dsn, poll="50ms", concurrency=40, STEP_SECONDS="0.1") for i in range(4)
    ]
    try:
        for worker in workers:
            worker.wait_for("worker: serving")
        run_ids = [f"pg-{i:03d}" for i in range(RUNS)]
        start_runs(dsn, wf.job, [(run_id, (STEPS,)) for run_id in run_ids])

        def ended() -> int:
            return sum(row[1] == "ended" for row in runs_table(schema))

        # Some runs done, and workers in the middle of others: pick the two holding the most.
        def victims_found() -> list[Worker] | None:
            rows = runs_table(schema)
            done = sum(row[1] == "ended" for row in rows)
            held = collections.Counter(owner_pid(row[2]) for row in rows if row[1] == "open" and row[2])
            if done == RUNS:
                pytest.fail("every run ended before two workers could be killed in the middle of theirs")
            if done < 10:
                return None
            busy = [w for w in workers if held[w.pid] >= 3]
            return sorted(busy, key=lambda w: held[w.pid], reverse=True)[:2] if len(busy) >= 2 else None

        victims = wait_until(victims_found, "two workers holding runs while some runs are done")
        killed_at = time.time()
        for victim in victims:
            assert "worker: started 'pg-" in victim.stderr()
            victim.kill()
        survivors = [w for w in workers if w not in victims]
        victim_pids = {w.pid for w in victims}
        survivor_pids = {w.pid for w in survivors}
        time.sleep(0.5)  # a COMMIT already sent by a victim is done by now
        orphans = [
            row[0] for row in runs_table(schema) if row[1] == "open" and owner_pid(row[2]) in victim_pids
        ]
        assert orphans, "the killed workers held no unfinished runs"

        wait_until(lambda: ended() == RUNS, "every run to end")
        for worker in survivors:
            assert worker.stop() == 0, worker.stderr()
            assert "SIGTERM received, stopping" in worker.stderr()
    finally:
        stop_all(workers)

    # Every run completed once, with the crash-free result, on contiguous journals.
    journals = read_journals(schema, run_ids)
    check_indexes_in_sql(schema)
    for run_id, events in journals.items():
        completed_once(events, STEPS)
        assert ll.loads_value(events[-1].result) == EXPECTED, run_id
        assert replay(wf.job, events) == ll.Returned(events[-1].result), run_id
    # Survivors released every lease (a victim may have been killed between a run's end and its release).
    kept = [row for row in runs_table(schema) if row[1] != "ended" or owner_pid(row[2]) in survivor_pids]
    assert kept == []
    assert pgutil.execute(sql.SQL("SELECT count(*) FROM {}").format(table(schema, "durable_inbox"))) == [(0,)]

    # The survivors took the victims' runs over and completed them: each says it ran them, and
    # their ends are stamped after the kill. Only a recovery writes a RunResumed (a run's first
    # start does not), and only survivors recovered runs.
    run_by_survivors = {
        line.split("'")[1]
        for worker in survivors
        for line in worker.stderr().splitlines()
        if line.startswith(("worker: started '", "worker: resumed '", "worker: taken over '"))
    }
    assert set(orphans) <= run_by_survivors
    assert all(journals[run_id][-1].t > killed_at for run_id in orphans)
    assert all(set(resumed_by(events)) <= survivor_pids for events in journals.values())
    in_the_middle = [
        run_id
        for run_id in orphans
        if _first_resumed(journals[run_id]) < len(journals[run_id])
        and any(
            isinstance(e, ll.ActivityCompleted) for e in journals[run_id][: _first_resumed(journals[run_id])]
        )
    ]
    assert in_the_middle, "no run was taken over in the middle (after a victim had journaled a step)"

    # Each activity ran at least once (a killed worker's step may run again: at-least-once).
    counts = executions(workspace)
    expected_keys = {f"{run_id}/{seq}" for run_id in run_ids for seq in range(STEPS)}
    assert set(counts) == expected_keys
    again = {key for key, n in counts.items() if n > 1}
    print(f"{len(orphans)} runs taken over; {len(again)} steps ran more than once")


# -- a stalled worker is fenced off -------------------------------------------------------


def _stop_outside_a_transaction(worker: Worker, schema: str) -> None:
    """SIGSTOP the worker, but not in the middle of one of its transactions on this schema.

    A worker frozen inside a transaction (a lease renewal) would keep the run's row
    locked, and nothing could take the run over: not what this test is about. The
    worker is the only client of the schema, so any lock on its tables is the worker's.
    """
    for _ in range(50):
        worker.send(signal.SIGSTOP)
        time.sleep(0.05)
        locks = pgutil.execute(
            "SELECT count(*) FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = %s",
            [schema],
        )
        if locks == [(0,)]:
            return
        worker.send(signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail("could not stop the worker outside a transaction")


def test_a_worker_stalled_past_its_lease_is_fenced_off_and_the_run_completes_once(
    workspace: Path, schema: str
) -> None:
    pgutil.require()
    wf = _workflows()
    dsn = store_dsn(schema, "1.5s")
    start_runs(dsn, wf.fenced, [("f-1", ())])
    first = Worker(workspace, "a", dsn, poll="100ms", HOLD_SECONDS="3")
    workers = [first]
    try:
        log_a = workspace / "steps" / f"steps-{first.pid}.log"
        wait_until(lambda: log_a.exists() and "start f-1/1" in log_a.read_text(), "A to start step 1")
        _stop_outside_a_transaction(first, schema)
        second = Worker(workspace, "b", dsn, poll="100ms", HOLD_SECONDS="0")
        workers.append(second)
        second.wait_for("worker: completed 'f-1'")
        continued_at = time.time()
        first.send(signal.SIGCONT)
        first.wait_for("worker: let go 'f-1'")
        assert "done f-1/1" in log_a.read_text()  # A did finish the step, and tried to journal it
        assert first.proc.poll() is None  # giving a run up does not stop the worker
        for worker in workers:
            assert worker.stop() == 0, worker.stderr()
    finally:
        stop_all(workers)

    # It goes on where it is held now: let go, not "gave up" (which asks for a person).
    let_go = [line for line in first.stderr().splitlines() if "let go 'f-1'" in line]
    assert len(let_go) == 1 and "moved to another worker" in let_go[0], first.stderr()
    assert "gave up" not in first.stderr() and "gave up" not in second.stderr()

    (events,) = read_journals(schema, ["f-1"]).values()
    check_indexes_in_sql(schema)
    completed_once(events, 3)
    assert ll.loads_value(events[-1].result) == [1, 2, 9]
    assert replay(wf.fenced, events) == ll.Returned(events[-1].result)
    # A journaled step 0 (and, maybe, that step 1 started); B recovered the run after that
    # and wrote the rest; nothing of A's after the takeover: A's completion of step 1 would
    # be stamped after the SIGCONT.
    kinds = [type(e).__name__ for e in events if not isinstance(e, ll.RunResumed)]
    assert kinds == ["RunStarted"] + ["ActivityScheduled", "ActivityCompleted"] * 3 + ["RunCompleted"]
    assert resumed_by(events)[-1] == second.pid
    taken_at = len(events) - 1 - [type(e) for e in reversed(events)].index(ll.RunResumed)
    done = {e.seq: i for i, e in enumerate(events) if isinstance(e, ll.ActivityCompleted)}
    assert done[0] < taken_at < done[1]
    assert all(e.t < continued_at for e in events)
    steps_run = executions(workspace)
    assert steps_run["done f-1/1"] == 2  # A's (refused) and B's
    assert steps_run["f-1/0"] == 1 and steps_run["f-1/2"] == 1


# -- two processes create the tables at once ------------------------------------------------

CREATE_TABLES = textwrap.dedent(
    """
    import sys

    import trio

    from durable._store_postgres import PostgresStore

    store = PostgresStore(sys.argv[1], schema=sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()


    async def main():
        try:
            await trio.to_thread.run_sync(store._db.make_tables)  # what a first write does
            print(await store.run_ids(), flush=True)
        finally:
            await store.aclose()


    trio.run(main)
    """
)


def _advisory_waiters(key: int) -> int:
    """Sessions waiting for the advisory lock ``key`` (the store's schema lock)."""
    rows = pgutil.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
        [(key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF],
    )
    return int(rows[0][0])


def test_two_processes_creating_the_tables_at_once_both_succeed_and_a_third_start_does_no_ddl(
    schema: str,
) -> None:
    pgutil.require()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE_TABLES, pgutil.dsn(), schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        for process in processes:  # both go at once: neither finds the tables
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=GUARD) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=60)
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert out == "[]\n"
    versions = pgutil.execute(
        sql.SQL("SELECT version FROM {}").format(table(schema, "durable_schema_version"))
    )
    assert versions == [(SCHEMA_VERSION,)]
    for name in ("durable_runs", "durable_records", "durable_inbox"):
        found = pgutil.execute("SELECT to_regclass(%s)", [f'"{schema}".{name}'])
        assert found[0][0] is not None, name

    # A third start on tables of this version does no DDL: it never takes the schema's
    # lock, so it goes through while another session holds that lock.
    key = PostgresStore(pgutil.dsn(), schema=schema)._db.tables.lock_key
    fresh = pgutil.fresh_schema()
    fresh_key = PostgresStore(pgutil.dsn(), schema=fresh)._db.tables.lock_key
    import psycopg  # noqa: PLC0415 - pgutil.require() checked it is installed

    try:
        with psycopg.connect(pgutil.dsn(), autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s), pg_advisory_lock(%s)", [key, fresh_key])
            third = subprocess.run(
                [SCRIPT, "ls", "--store", store_dsn(schema, "30s")],
                capture_output=True,
                text=True,
                timeout=GUARD,
            )
            assert third.returncode == 0, third.stderr
            assert "no runs in" in third.stdout
            # Reading a fresh schema creates nothing, so it takes no lock either.
            reader = subprocess.run(
                [SCRIPT, "ls", "--store", store_dsn(fresh, "30s")],
                capture_output=True,
                text=True,
                timeout=GUARD,
            )
            assert reader.returncode == 2, reader.stderr
            assert f"no durable store in schema '{fresh}'" in reader.stderr
            # Whereas a first write (a fresh schema) waits for that lock to create its tables.
            first = subprocess.Popen(
                [sys.executable, "-c", CREATE_TABLES, pgutil.dsn(), fresh],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert first.stdout is not None and first.stdin is not None
                assert first.stdout.readline() == "ready\n"
                first.stdin.write("go\n")
                first.stdin.flush()
                wait_until(lambda: _advisory_waiters(fresh_key) == 1, "the first write to wait for the lock")
                assert first.poll() is None
                holder.execute("SELECT pg_advisory_unlock_all()")
                out, err = first.communicate(timeout=GUARD)
            finally:
                if first.poll() is None:
                    first.kill()
                    first.communicate(timeout=60)
            assert first.returncode == 0, err
            assert out == "[]\n"
    finally:
        pgutil.drop_schema(fresh)


# -- the CLI verbs on runs a worker holds ----------------------------------------------------


def _listening(channel: str) -> bool:
    rows = pgutil.execute("SELECT count(*) FROM pg_stat_activity WHERE query = %s", [f'LISTEN "{channel}"'])
    return int(rows[0][0]) > 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # os.environ, not the inherited C environment: that may hold a COLUMNS set by readline
    # (in this process, not in os.environ), which would wrap the rows of `durable ls`.
    env = dict(os.environ)
    done = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=GUARD, env=env)
    assert done.returncode == 0, done.stderr
    return done


def test_durable_signal_cancel_ls_and_show_work_on_runs_a_worker_holds_on_postgres(
    workspace: Path, schema: str
) -> None:
    pgutil.require()
    wf = _workflows()
    dsn = store_dsn(schema, "30s")
    start_runs(dsn, wf.approval, [("pa", ()), ("pb", ())])
    # --poll 1h: the worker notices the messages only through NOTIFY.
    worker = Worker(workspace, "w", dsn, poll="1h")
    channel = PostgresStore(pgutil.dsn(), schema=schema)._db.tables.channel
    try:

        def waiting(run_id: str) -> bool:
            (events,) = read_journals(schema, [run_id]).values()
            return any(isinstance(e, ll.TimerStarted) for e in events)

        wait_until(lambda: waiting("pa") and waiting("pb"), "the worker to hold both runs")
        wait_until(lambda: _listening(channel), "the worker to LISTEN")

        async def outcome(run_id: str) -> Any:
            client = durable.Client(dsn)
            try:
                with trio.fail_after(GUARD):  # a hang guard
                    handle = await client.start(wf.approval, id=run_id)  # attaches to the run
                    return await handle.result()
            finally:
                await client.store.aclose()

        sent = _cli("signal", "pa", "decision", "{'ok': True}", "--store", dsn)
        assert "signal 'decision' sent to run 'pa'" in sent.stdout
        assert trio.run(outcome, "pa") == {"ok": True}
        cancelled = _cli("cancel", "pb", "--reason", "not needed", "--store", dsn)
        assert "cancellation of run 'pb' requested" in cancelled.stdout
        with pytest.raises(durable.Cancelled, match="not needed"):
            trio.run(outcome, "pb")
        worker.wait_for("worker: cancelled 'pb'")
        assert "worker: completed 'pa'" in worker.stderr()

        listed = json.loads(_cli("ls", "--json", "--store", dsn).stdout)
        assert {(row["id"], row["workflow"], row["status"]) for row in listed} == {
            ("pa", "tests.pgworkers.approval", "completed"),
            ("pb", "tests.pgworkers.approval", "cancelled"),
        }
        rows = {line.split()[0]: line.split() for line in _cli("ls", "--store", dsn).stdout.splitlines()}
        assert rows["pa"][1:3] == ["tests.pgworkers.approval", "completed"]
        assert rows["pb"][1:3] == ["tests.pgworkers.approval", "cancelled"]
        shown = json.loads(_cli("show", "pa", "--json", "--store", dsn).stdout)
        assert (shown["id"], shown["status"]) == ("pa", "completed")
        text = _cli("show", "pb", "--store", dsn).stdout
        assert text.splitlines()[0] == "run pb · tests.pgworkers.approval · cancelled"
        assert "cancellation requested, reason 'not needed'" in text and "cancelled: not needed" in text
        assert worker.stop() == 0, worker.stderr()
    finally:
        stop_all([worker])

    journals = read_journals(schema, ["pa", "pb"])
    signals = [e for e in journals["pa"] if isinstance(e, ll.SignalReceived)]
    assert len(signals) == 1 and signals[0].message_id  # journaled once, from the inbox
    assert isinstance(journals["pb"][-1], ll.RunCancelled)
    assert sum(isinstance(e, ll.CancelRequested) for e in journals["pb"]) == 1
    assert pgutil.execute(sql.SQL("SELECT count(*) FROM {}").format(table(schema, "durable_inbox"))) == [(0,)]
