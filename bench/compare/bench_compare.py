"""durable beside its peers in one run: durabletask-python's replay, DBOS Transact on SQLite and PostgreSQL.

Run it by hand in a venv of its own (``bench/compare/README.md`` says how to
make it): ``/work/compare-venv/bin/python bench/compare/bench_compare.py``
(``--quick`` for modest sizes, ``--help`` for the options). It prints figures
and never asserts one.

Theory of operation
-------------------
Every figure of durable is measured in turns with the peer's figure it is
compared with (and the floor that bounds both), within each repeat, so that
the ratios hold on a virtual machine whose speed drifts; the ratio printed is
the median of the repeat-by-repeat ratios.

1. *Replay.* durable: the cut journal of ``bench_replay.py`` (``n`` completed
   activities, the last one in flight) resumed by ``durable.run`` on a fresh
   copy (read, scan, replay, run the last activity, complete), and
   ``scan`` + ``Replay`` of its bytes alone. durabletask-python: its
   orchestration executor (``durabletask.worker._OrchestrationExecutor``, what
   the worker calls for each work item the sidecar sends) driven directly,
   with no sidecar, on the history of the same workflow (``n`` activities
   scheduled and completed, one turn each, the last one scheduled; the new
   events complete it): the history already parsed into protobuf messages,
   and, beside it, the ``OrchestratorRequest`` parsed from its bytes first.
   Each engine completes the workflow, so both results are checked.
2. *SQLite.* DBOS Transact on SQLite (its default system database, in a
   process of its own: ``_dbos_peer.py``) beside durable's ``FileStore``
   (``sync="always"``): one workflow of ``n`` sequential steps, and ``k``
   workflows of 3 steps one after the other (durable: in one ``Runtime``, as
   DBOS runs them in its launched process, and by ``durable.run`` each). Then
   the start-up to a resumed workflow: a process crashed in the third step of a
   3-step workflow; a fresh process resumes it; from its spawn until it has the
   result (imports, start-up, recovery, the last step).
3. *PostgreSQL.* The same workloads on the server: DBOS with its tables in a
   schema of their own, durable's ``PostgresStore`` in another; beside them the
   server's single-client commit floor, ``pgbench -c 1 -N`` in a database of
   its own (a psycopg loop of one-row ``INSERT`` transactions when pgbench is
   missing, and always as a reference: what a Python client gets).
4. *Workers.* 1, 2 and 4 ``durable worker`` processes on one PostgreSQL schema
   drain a backlog of runs of 10 steps (``bench_workers.py``'s backlog
   measurement): total steps/s, beside the same commit floor.

The schemas, the database and the temporary directories are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # bench/: the harness and the benches reused here

import _harness as h  # noqa: E402
import attrs  # noqa: E402
import bench_replay  # noqa: E402
import bench_workers  # noqa: E402
import trio  # noqa: E402

import durable  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DBOS_PEER = os.path.join(HERE, "_dbos_peer.py")
DURABLE_CHILD = os.path.join(HERE, "_durable_child.py")
GUARD = 600.0  # seconds: a hang guard for a peer's answer, never a timing target
WORKER_COUNTS = (1, 2, 4)


@attrs.frozen
class Sizes:
    replay: tuple[int, ...]  # activities per replayed journal
    steps: int  # steps of the one sequential workflow
    three: int  # 3-step workflows, one after the other
    pgbench: int  # pgbench transactions per repeat
    worker_runs: int  # runs of 10 steps for the workers
    worker_concurrency: int  # each worker's --concurrency


FULL = Sizes(
    replay=(1_000, 10_000), steps=1_000, three=100, pgbench=1_000, worker_runs=800, worker_concurrency=100
)
QUICK = Sizes(replay=(1_000,), steps=200, three=30, pgbench=300, worker_runs=300, worker_concurrency=50)


# --- the comparison table -----------------------------------------------------


@attrs.frozen
class Row:
    """durable's figure beside a peer's (or a floor's), and how many times better durable is."""

    figure: str
    durable: h.Figure
    peer: h.Figure | None
    peer_name: str
    #: how many times better durable is (a rate: durable / peer; a cost: peer / durable),
    #: the median of the repeat-by-repeat ratios; None without a peer figure.
    ratio: float | None
    #: the SPEC §8 target this row is checked against, as text, and its test.
    target: str = "-"
    passed: bool | None = None

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "-"
        return "pass" if self.passed else "miss"


def _cell(figure: h.Figure | None) -> str:
    return "-" if figure is None else f"{h.number(figure.value)} {figure.unit}"


def table(rows: Sequence[Row]) -> str:
    head = ("figure", "durable", "peer", "peer's figure", "ratio", "target", "result")
    lines = [head]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append(
            (row.figure, _cell(row.durable), row.peer_name, _cell(row.peer), ratio, row.target, row.verdict)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(out)


def ratio_of_rates(mine: h.Timing, theirs: h.Timing, my_count: int, their_count: int) -> float:
    """durable's rate / the peer's, repeat by repeat (a rate is count / seconds)."""
    return statistics.median(
        (my_count / a) / (their_count / b) for a, b in zip(mine.times, theirs.times, strict=True)
    )


def ratio_of_costs(mine: h.Timing, theirs: h.Timing) -> float:
    """The peer's cost / durable's for the same count, repeat by repeat."""
    return h.median_ratio(theirs, mine)


def _spread(figure: h.Figure | None) -> str:
    return "" if figure is None or figure.spread is None else f" (spread {figure.spread:.0%})"


def show(row: Row) -> Row:
    """Print a row as soon as it is measured, with the spread of each figure's repeats."""
    ratio = "" if row.ratio is None else f"  -> durable {row.ratio:.2f}x"
    peer = "" if row.peer is None else f"   {row.peer_name}: {_cell(row.peer)}{_spread(row.peer)}"
    target = "" if row.target == "-" else f"  [target {row.target}: {row.verdict}]"
    print(
        f"  {row.figure}\n      durable: {_cell(row.durable)}{_spread(row.durable)}{peer}{ratio}{target}",
        flush=True,
    )
    return row


# --- peers in processes of their own -------------------------------------------------


def child_env(pycache: str) -> dict[str, str]:
    """The environment of the child processes: bytecode cached in ``pycache``, outside the repository.

    The machines set PYTHONDONTWRITEBYTECODE, so each process would compile
    durable (an editable install) from source while the peers' installed
    packages come compiled; with one prefix for both, the warm-up call caches
    everyone's bytecode and the timed calls start as an installed package does.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    return env


class Peer:
    """A child process answering commands (one a line) with a line ``@@ VALUE``."""

    def __init__(self, args: Sequence[str], log_path: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log: TextIO = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self.read()  # ready

    def read(self) -> float:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self._log.flush()
                with open(self.log_path, encoding="utf-8", errors="replace") as err:
                    raise RuntimeError(f"{self.proc.args!r} exited ({self.proc.wait()}):\n{err.read()}")
            if line.startswith("@@ "):
                return float(line[3:])
        raise RuntimeError(f"hang guard: no answer from {self.proc.args!r} in {GUARD:.0f} s")

    def ask(self, command: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run_child(args: Sequence[str], env: dict[str, str], log_path: str) -> float:
    """Spawn a child that prints ``@@ WALL_TIME`` and exits; seconds from the spawn to that time."""
    with open(log_path, "w", encoding="utf-8") as log:
        start = time.time()
        out = subprocess.run(
            [sys.executable, *args],
            check=False,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            timeout=GUARD,
        )
    done = [float(line[3:]) for line in out.stdout.splitlines() if line.startswith("@@ ")]
    if out.returncode != 0 or not done:
        with open(log_path, encoding="utf-8", errors="replace") as err:
            raise RuntimeError(f"{args!r} exited ({out.returncode}):\n{out.stdout}\n{err.read()}")
    return done[0] - start


def crash_child(args: Sequence[str], env: dict[str, str], log_path: str) -> None:
    """Spawn a child that must die in its third step (exit status 3)."""
    with open(log_path, "w", encoding="utf-8") as log:
        out = subprocess.run(
            [sys.executable, *args], check=False, stdout=log, stderr=log, env=env, timeout=GUARD
        )
    if out.returncode != 3:
        with open(log_path, encoding="utf-8", errors="replace") as err:
            raise RuntimeError(f"{args!r} exited ({out.returncode}), not in its third step:\n{err.read()}")


# --- 1. replay: durabletask-python's orchestration executor ---------------------------


def dt_echo(ctx: Any, i: int) -> int:
    """durabletask's activity (never called here: replay feeds its recorded results)."""
    return i


def dt_steps(ctx: Any, n: int) -> Any:
    """durabletask's orchestrator: ``n`` activities one after the other, like ``_harness.steps``."""
    total = 0
    for i in range(n):
        total += yield ctx.call_activity(dt_echo, input=i)
    return total


class DurableTaskHistory:
    """The history the sidecar would send to resume ``dt_steps(n + 1)`` after its last activity completed.

    Past events: ``orchestratorStarted``, ``executionStarted``, then for each
    activity the turn that scheduled it (``taskScheduled``,
    ``orchestratorCompleted``) and the turn its completion opened
    (``orchestratorStarted``, ``taskCompleted``), the last activity scheduled.
    New events: a turn with the last activity's ``taskCompleted``. Replaying
    them completes the orchestration, as durable's resume completes its run.
    """

    def __init__(self, n: int) -> None:
        from durabletask import worker  # noqa: PLC0415 - a peer: imported when measured
        from durabletask.internal import helpers  # noqa: PLC0415
        from durabletask.internal import orchestrator_service_pb2 as pb  # noqa: PLC0415
        from durabletask.serialization import JsonDataConverter  # noqa: PLC0415

        self.n = n
        self.registry = worker._Registry()
        self.name = self.registry.add_orchestrator(dt_steps)
        self.registry.add_activity(dt_echo)
        # The worker's own logger (durabletask.internal.shared.get_logger) has no level;
        # WARNING here skips its per-replay debug summaries: the peer's faster setting.
        self.logger = logging.Logger("durabletask-worker", logging.WARNING)
        self.converter = JsonDataConverter()
        self.executor_class = worker._OrchestrationExecutor
        self.pb = pb
        old = [
            helpers.new_orchestrator_started_event(),
            helpers.new_execution_started_event(self.name, "bench", str(n + 1)),
        ]
        for i in range(n):
            old.append(helpers.new_task_scheduled_event(i + 1, "dt_echo", str(i)))
            old.append(helpers.new_orchestrator_completed_event())
            old.append(helpers.new_orchestrator_started_event())
            old.append(helpers.new_task_completed_event(i + 1, str(i)))
        old.append(helpers.new_task_scheduled_event(n + 1, "dt_echo", str(n)))
        old.append(helpers.new_orchestrator_completed_event())
        new = [helpers.new_orchestrator_started_event(), helpers.new_task_completed_event(n + 1, str(n))]
        self.old, self.new = old, new
        self.request = pb.OrchestratorRequest(
            instanceId="bench", pastEvents=old, newEvents=new
        ).SerializeToString()
        self.expected = str((n + 1) * n // 2)
        self.check(self.execute(self.old, self.new))

    def execute(self, old: Sequence[Any], new: Sequence[Any]) -> Any:
        executor = self.executor_class(self.registry, self.logger, data_converter=self.converter)
        return executor.execute("bench", old, new)

    def from_bytes(self) -> Any:
        request = self.pb.OrchestratorRequest()
        request.ParseFromString(self.request)
        return self.execute(request.pastEvents, request.newEvents)

    def check(self, result: Any) -> None:
        actions = list(result.actions)
        if len(actions) != 1 or actions[0].completeOrchestration.result.value != self.expected:
            raise RuntimeError(f"durabletask's replay of {self.n} activities returned {actions!r}")

    def preparsed_once(self) -> Callable[[], float]:
        return lambda: h.timed(lambda: self.execute(self.old, self.new))

    def bytes_once(self) -> Callable[[], float]:
        self.check(self.from_bytes())
        return lambda: h.timed(self.from_bytes)


def collect_replay(sizes: Sizes, repeats: int, base: str | None) -> list[Row]:
    rows: list[Row] = []
    h.header(
        "1. replay of completed activities: durable (durable.run of a cut journal; scan + Replay of its "
        "bytes) vs durabletask-python's orchestration executor (a history of protobuf messages; the "
        "OrchestratorRequest parsed from bytes first)"
    )
    for n in sizes.replay:
        journal = bench_replay.Journal(n, base)
        history = DurableTaskHistory(n)
        onces = [
            bench_replay.resume_once(journal, base),
            history.preparsed_once(),
            bench_replay.scan_and_replay_once(journal),
            history.bytes_once(),
        ]
        resume, preparsed, scan_replay, from_bytes = h.measure_interleaved(onces, repeats=repeats)
        mine = h.cost(f"durable resume via durable.run, {n:,} activities", n, resume, 5.0)
        theirs = h.cost(f"durabletask execute, pre-parsed, {n:,}", n, preparsed, None, "ref")
        rows.append(
            show(
                Row(
                    f"replay {n:,}: us per activity, durable.run vs pre-parsed",
                    mine,
                    theirs,
                    "durabletask",
                    ratio_of_costs(resume, preparsed),
                    "<= 5 us (durable)",
                    mine.value <= 5.0,
                )
            )
        )
        mine = h.cost(f"durable scan + Replay, {n:,} activities", n, scan_replay, 5.0)
        theirs = h.cost(f"durabletask parse + execute, {n:,}", n, from_bytes, None, "ref")
        rows.append(
            show(
                Row(
                    f"replay {n:,}: us per activity, from bytes (scan+Replay vs parse+execute)",
                    mine,
                    theirs,
                    "durabletask",
                    ratio_of_costs(scan_replay, from_bytes),
                )
            )
        )
    return rows


# --- 2. and 3.: one workflow of n steps, 3-step workflows ---------------------------------


def durable_steps_once(store: durable.Store, n: int) -> Callable[[], float]:
    expected = n * (n - 1) // 2

    def once() -> float:
        result: list[int] = []
        elapsed = h.timed(lambda: result.append(durable.run(h.steps, n, store=store)))
        if result != [expected]:
            raise RuntimeError(f"steps({n}) returned {result!r}")
        return elapsed

    return once


def durable_three_runtime_once(store: durable.Store, k: int) -> Callable[[], float]:
    """``k`` 3-step runs one after the other in one Runtime (its start and stop not timed)."""

    async def main() -> float:
        async with durable.Runtime(store) as runtime:
            start = time.perf_counter()
            results = []
            for _ in range(k):
                handle = await runtime.start(h.steps, 3)
                results.append(await handle.result())
            elapsed = time.perf_counter() - start
        if results != [3] * k:
            raise RuntimeError(f"3-step runs returned {sorted(set(results))!r}")
        return elapsed

    return lambda: trio.run(main)


def durable_three_run_once(store: durable.Store, k: int) -> Callable[[], float]:
    """``k`` 3-step runs, each by ``durable.run`` (a Runtime started and stopped per run)."""

    def once() -> float:
        results: list[int] = []
        elapsed = h.timed(lambda: results.extend(durable.run(h.steps, 3, store=store) for _ in range(k)))
        if results != [3] * k:
            raise RuntimeError(f"3-step runs returned {sorted(set(results))!r}")
        return elapsed

    return once


def workload_rows(
    label: str, peer_name: str, sizes: Sizes, timings: dict[str, h.Timing], steps_target: float | None
) -> list[Row]:
    """Rows for the two workloads, from timings named ``steps``, ``peer steps``, ``three``..."""
    n, k = sizes.steps, sizes.three
    mine = h.rate(f"durable {label} steps/s", n, timings["steps"], "steps/s")
    theirs = h.rate(f"{peer_name} steps/s", n, timings["peer steps"], "steps/s")
    ratio = ratio_of_rates(timings["steps"], timings["peer steps"], n, n)
    target = "-" if steps_target is None else f">= {steps_target:g}x {peer_name}"
    rows = [
        show(
            Row(
                f"{label}: one workflow of {n:,} steps, steps/s",
                mine,
                theirs,
                peer_name,
                ratio,
                target,
                None if steps_target is None else ratio >= steps_target,
            )
        )
    ]
    theirs = h.rate(f"{peer_name} 3-step workflows/s", k, timings["peer three"], "workflows/s")
    for key, how in (("three", "in one Runtime"), ("three run", "durable.run each")):
        mine = h.rate(f"durable {label} 3-step workflows/s ({how})", k, timings[key], "workflows/s")
        rows.append(
            show(
                Row(
                    f"{label}: 3-step workflows/s, one at a time (durable: {how})",
                    mine,
                    theirs,
                    peer_name,
                    ratio_of_rates(timings[key], timings["peer three"], k, k),
                )
            )
        )
    return rows


def _measure_named(
    onces: dict[str, Callable[[], float]], repeats: int, warmup: int = 1
) -> dict[str, h.Timing]:
    timings = h.measure_interleaved(list(onces.values()), repeats=repeats, warmup=warmup)
    return dict(zip(onces, timings, strict=True))


def collect_sqlite(sizes: Sizes, repeats: int, scratch: str) -> list[Row]:
    h.header(
        f"2. SQLite: DBOS Transact (its SQLite system database) vs durable's FileStore(sync='always'): "
        f"a workflow of {sizes.steps:,} steps, {sizes.three} workflows of 3 steps one at a time"
    )
    store = durable.FileStore(os.path.join(scratch, "filestore"), sync="always")
    dbos = Peer(
        [DBOS_PEER, "serve", f"sqlite:///{os.path.join(scratch, 'dbos.sqlite')}"],
        os.path.join(scratch, "dbos-sqlite.log"),
    )
    try:
        timings = _measure_named(
            {
                "steps": durable_steps_once(store, sizes.steps),
                "peer steps": lambda: dbos.ask(f"steps {sizes.steps}"),
                "three": durable_three_runtime_once(store, sizes.three),
                "three run": durable_three_run_once(store, sizes.three),
                "peer three": lambda: dbos.ask(f"three {sizes.three}"),
            },
            repeats,
        )
    finally:
        dbos.close()
    return workload_rows("SQLite/FileStore", "DBOS", sizes, timings, None)


def startup_once(kind: str, scratch: str, env: dict[str, str]) -> Callable[[], float]:
    """Seconds from a fresh process's spawn to the result of the 3-step workflow it resumes."""
    count = [0]

    def once() -> float:
        count[0] += 1
        run_id = f"resume-{count[0]}"
        where = os.path.join(scratch, f"startup-{kind}-{count[0]}")
        os.mkdir(where)
        log = os.path.join(where, "log")
        if kind == "durable":
            script, store = DURABLE_CHILD, os.path.join(where, "store")
        else:
            script, store = DBOS_PEER, f"sqlite:///{os.path.join(where, 'dbos.sqlite')}"
        crash_child([script, "crash", store, run_id], env, log)
        return run_child([script, "resume", store, run_id], env, log)

    return once


def collect_startup(repeats: int, scratch: str) -> list[Row]:
    h.header(
        "2b. start-up to a resumed workflow: a process crashed in the third step of a 3-step workflow "
        "(SQLite / FileStore); from a fresh process's spawn until it has the workflow's result"
    )
    env = child_env(os.path.join(scratch, "pycache"))
    durable_t, dbos_t = h.measure_interleaved(
        [startup_once("durable", scratch, env), startup_once("dbos", scratch, env)], repeats=repeats
    )
    mine = h.Figure(
        "durable start-up to resumed",
        durable_t.median * 1e3,
        "ms",
        None,
        "ref",
        durable_t.spread,
        durable_t.best * 1e3,
    )
    theirs = h.Figure(
        "DBOS start-up to resumed", dbos_t.median * 1e3, "ms", None, "ref", dbos_t.spread, dbos_t.best * 1e3
    )
    return [
        show(
            Row(
                "SQLite/FileStore: process start-up to a resumed workflow",
                mine,
                theirs,
                "DBOS",
                ratio_of_costs(durable_t, dbos_t),
            )
        )
    ]


# --- 3. PostgreSQL ---------------------------------------------------------------------------


def _pg(dsn: str, query: Any) -> None:
    import psycopg  # noqa: PLC0415 - only with a PostgreSQL server

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query)


@contextlib.contextmanager
def pg_schema(dsn: str, prefix: str) -> Iterator[str]:
    """A schema name unique to this run, dropped (with what is in it) afterwards."""
    from psycopg import sql  # noqa: PLC0415

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield schema
    finally:
        _pg(dsn, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


class PgBench:
    """``pgbench -c 1 -N`` in a database of its own: the server's single-client commit rate."""

    def __init__(self, dsn: str, transactions: int) -> None:
        from psycopg import conninfo, sql  # noqa: PLC0415

        self.database = f"durable_compare_pgbench_{uuid.uuid4().hex[:10]}"
        self.transactions = transactions
        self.admin = dsn
        _pg(dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        self.conninfo = conninfo.make_conninfo(dsn, dbname=self.database)
        self._pgbench("-i", "-q", "-s", "1")

    def _pgbench(self, *args: str) -> str:
        out = subprocess.run(
            ["pgbench", *args, self.conninfo], check=False, capture_output=True, text=True, timeout=GUARD
        )
        if out.returncode != 0:
            raise RuntimeError(f"pgbench {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
        return out.stdout

    def once(self) -> float:
        """Seconds for the transactions at the rate pgbench reports (connection time excluded)."""
        text = self._pgbench("-c", "1", "-N", "-n", "-t", str(self.transactions))
        match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text)
        if match is None:
            raise RuntimeError(f"no tps in pgbench's output:\n{text}")
        return self.transactions / float(match.group(1))

    def close(self) -> None:
        from psycopg import sql  # noqa: PLC0415

        _pg(self.admin, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.database)))


def commit_floor(dsn: str, transactions: int) -> tuple[str, Callable[[], float], Callable[[], None]]:
    """``(what, once, close)`` of the server's single-client commit floor."""
    if shutil.which("pgbench") is not None:
        bench = PgBench(dsn, transactions)
        return "pgbench -c 1 -N", bench.once, bench.close
    return "psycopg loop of one-row INSERTs", bench_workers.pg_commit_once(dsn, transactions), lambda: None


def collect_postgres(sizes: Sizes, repeats: int, scratch: str, dsn: str) -> list[Row]:
    h.header(
        f"3. PostgreSQL: DBOS Transact vs durable's PostgresStore, each in a schema of its own, beside the "
        f"server's single-client commit floor: a workflow of {sizes.steps:,} steps, {sizes.three} workflows "
        "of 3 steps one at a time"
    )
    floor_name, floor_once, floor_close = commit_floor(dsn, sizes.pgbench)
    try:
        with pg_schema(dsn, "durable_compare") as mine_schema, pg_schema(dsn, "dbos_compare") as dbos_schema:
            store = durable.PostgresStore(dsn, schema=mine_schema)
            dbos = Peer([DBOS_PEER, "serve", dsn, dbos_schema], os.path.join(scratch, "dbos-pg.log"))
            try:
                timings = _measure_named(
                    {
                        "steps": durable_steps_once(store, sizes.steps),
                        "peer steps": lambda: dbos.ask(f"steps {sizes.steps}"),
                        "three": durable_three_runtime_once(store, sizes.three),
                        "three run": durable_three_run_once(store, sizes.three),
                        "peer three": lambda: dbos.ask(f"three {sizes.three}"),
                        "floor": floor_once,
                        "psycopg": bench_workers.pg_commit_once(dsn, sizes.pgbench),
                    },
                    repeats,
                )
            finally:
                dbos.close()
                trio.run(store.aclose)
    finally:
        floor_close()
    rows = workload_rows("PostgreSQL", "DBOS", sizes, timings, 3.0)
    n = sizes.steps
    mine = rows[0].durable
    floor = h.rate(f"floor: {floor_name}", sizes.pgbench, timings["floor"], "commits/s")
    fraction = ratio_of_rates(timings["steps"], timings["floor"], n, sizes.pgbench)
    rows.insert(
        1,
        show(
            Row(
                f"PostgreSQL: {n:,} steps, steps/s vs the commit floor",
                mine,
                floor,
                floor_name,
                fraction,
                ">= 0.8 of the floor",
                fraction >= 0.8,
            )
        ),
    )
    psycopg_floor = h.rate(
        "psycopg loop of one-row INSERT transactions", sizes.pgbench, timings["psycopg"], "commits/s"
    )
    rows.insert(
        2,
        show(
            Row(
                f"PostgreSQL: {n:,} steps, steps/s vs a psycopg commit loop",
                mine,
                psycopg_floor,
                "psycopg INSERT loop",
                ratio_of_rates(timings["steps"], timings["psycopg"], n, sizes.pgbench),
            )
        ),
    )
    rows.append(show(transactions_per_step(dsn, n, scratch)))
    return rows


# --- 3b. transactions per step ------------------------------------------------------------

_STATS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"


def _transactions(admin: str, database: str) -> int:
    import psycopg  # noqa: PLC0415

    time.sleep(1.0)  # a backend reports its counts as it exits; give the last ones time to end
    with psycopg.connect(admin) as conn:
        row = conn.execute(_STATS, [database]).fetchone()
    assert row is not None
    return int(row[0])


@contextlib.contextmanager
def pg_database(dsn: str, prefix: str) -> Iterator[tuple[str, str]]:
    """``(name, URL)`` of a database of its own on the server, dropped afterwards."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    from psycopg import sql  # noqa: PLC0415

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _pg(dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name, urlsplit(dsn)._replace(path=f"/{name}").geturl()
    finally:
        _pg(dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def transactions_per_step(dsn: str, n: int, scratch: str) -> Row:
    """Transactions per step of one workflow of ``n`` steps, from ``pg_stat_database``.

    Each system gets a database of its own, so the counts are its sessions' alone
    (read-only ones included, and DBOS's background polls while it runs). durable:
    one ``durable.run`` (its store made and closed around it). DBOS: a process that
    launches, runs the workflow and stops, less one that only launches and stops.
    """
    h.header(
        f"3b. PostgreSQL transactions per step: one workflow of {n:,} steps, each system in a database "
        "of its own"
    )
    with pg_database(dsn, "durable_compare_tx") as (database, url):

        def run(steps: int) -> None:
            store = durable.PostgresStore(url)
            try:
                durable.run(h.steps, steps, store=store)
            finally:
                trio.run(store.aclose)

        run(3)  # the tables
        before = _transactions(dsn, database)
        run(n)
        mine = (_transactions(dsn, database) - before) / n
    with pg_database(dsn, "dbos_compare_tx") as (database, url):
        log = os.path.join(scratch, "dbos-tx.log")
        Peer([DBOS_PEER, "serve", url], log).close()  # the tables
        start = _transactions(dsn, database)
        Peer([DBOS_PEER, "serve", url], log).close()
        launched = _transactions(dsn, database)
        peer = Peer([DBOS_PEER, "serve", url], log)
        try:
            peer.ask(f"steps {n}")
        finally:
            peer.close()
        theirs = (_transactions(dsn, database) - launched - (launched - start)) / n
    return Row(
        f"PostgreSQL: transactions per step ({n:,} steps, pg_stat_database)",
        h.Figure("durable transactions per step", mine, "tx/step"),
        h.Figure("DBOS transactions per step", theirs, "tx/step"),
        "DBOS",
        theirs / mine,
    )


# --- 4. workers --------------------------------------------------------------------------


def collect_workers(sizes: Sizes, repeats: int, base: str | None, dsn: str) -> list[Row]:
    runs, steps = sizes.worker_runs, sizes.worker_runs * bench_workers.STEPS
    h.header(
        f"4. PostgreSQL, 1, 2 and 4 `durable worker` processes on one schema: a backlog of {runs} runs of "
        f"{bench_workers.STEPS} steps (--concurrency {sizes.worker_concurrency}, --poll 50ms), total "
        "steps/s, beside the commit floor"
    )
    options = bench_workers.Options(
        runs=runs,
        concurrency=sizes.worker_concurrency,
        poll="50ms",
        lease_ttl="30s",
        takeover_runs=0,
        settle=0.0,
        check=0.05,
        repeats=repeats,
        base=base,
        dsn=dsn,
    )
    seen = {n: bench_workers.Seen() for n in WORKER_COUNTS}
    floor_name, floor_once, floor_close = commit_floor(dsn, sizes.pgbench)
    try:
        onces = [
            bench_workers.throughput_once("pg", n, options, seen[n], backlog=True) for n in WORKER_COUNTS
        ]
        # Each repeat starts fresh workers on a fresh schema: nothing to warm up.
        *timings, floor_t = h.measure_interleaved([*onces, floor_once], repeats=repeats, warmup=0)
    finally:
        floor_close()
    floor = h.rate(f"floor: {floor_name}", sizes.pgbench, floor_t, "commits/s")
    rows = []
    for n, timing in zip(WORKER_COUNTS, timings, strict=True):
        mine = h.rate(f"{n} workers steps/s", steps, timing, "steps/s")
        rows.append(
            show(
                Row(
                    f"PostgreSQL, {n} worker{'s' if n > 1 else ''}: backlog steps/s vs the commit floor",
                    mine,
                    floor,
                    floor_name,
                    ratio_of_rates(timing, floor_t, steps, sizes.pgbench),
                )
            )
        )
        print(f"      (runs taken per worker, last repeat: {seen[n].shares[-1]})", flush=True)
    for n, timing in zip(WORKER_COUNTS[1:], timings[1:], strict=True):
        one = rows[0].durable
        rows.append(
            show(
                Row(
                    f"PostgreSQL, {n} workers / 1 worker: steps/s",
                    rows[WORKER_COUNTS.index(n)].durable,
                    one,
                    "1 worker",
                    ratio_of_rates(timing, timings[0], steps, steps),
                    "grows until the cores are busy",
                )
            )
        )
    return rows


# --- command line ---------------------------------------------------------------------------


def versions() -> str:
    parts = []
    for package in ("durabletask", "dbos", "psycopg", "SQLAlchemy", "protobuf"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:  # a missing peer is reported, not fatal
            parts.append(f"{package} (not installed)")
    pgbench = shutil.which("pgbench")
    if pgbench is not None:
        parts.append(
            subprocess.run([pgbench, "--version"], check=False, capture_output=True, text=True).stdout.strip()
        )
    return "peers: " + ", ".join(parts)


def server_version(dsn: str) -> str:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit'), "
            "current_setting('fsync')"
        ).fetchone()
    assert row is not None
    return f"PostgreSQL server {row[0]} (synchronous_commit {row[1]}, fsync {row[2]})"


SECTIONS = ("replay", "sqlite", "startup", "postgres", "workers")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats; the median is kept (5; workers 3)"
    )
    parser.add_argument("--quick", action="store_true", help="modest sizes (about a minute and a half)")
    parser.add_argument(
        "--dir", default=None, help="directory for the stores' temporary files (default: $TMPDIR)"
    )
    parser.add_argument(
        "--dsn", default=None, help="PostgreSQL server URL (default: $DURABLE_TEST_PG or the test one)"
    )
    parser.add_argument("--only", action="append", choices=SECTIONS, help="only this section (repeatable)")
    options = parser.parse_args(argv)
    sizes = QUICK if options.quick else FULL
    repeats = options.repeats if not options.quick else min(options.repeats, 3)
    dsn = options.dsn or os.environ.get("DURABLE_TEST_PG") or DEFAULT_DSN
    sections = options.only or list(SECTIONS)
    print(h.environment(), flush=True)
    print(versions(), flush=True)
    why = bench_workers._postgres(dsn)
    if why is None:
        print(server_version(dsn), flush=True)
    elif {"postgres", "workers"} & set(sections):
        print(f"PostgreSQL at {dsn} cannot be used ({why}): its sections are skipped", flush=True)
        sections = [s for s in sections if s not in ("postgres", "workers")]
    start = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=options.dir, prefix="bench-compare-") as scratch:
        if "replay" in sections:
            rows += collect_replay(sizes, repeats, options.dir)
        if "sqlite" in sections:
            rows += collect_sqlite(sizes, repeats, scratch)
        if "startup" in sections:
            rows += collect_startup(min(repeats, 3), scratch)
        if "postgres" in sections:
            rows += collect_postgres(sizes, repeats, scratch, dsn)
        if "workers" in sections:
            rows += collect_workers(sizes, min(repeats, 3), options.dir, dsn)
    print(
        "\nratio: how many times better durable's figure is than the peer's (a rate: durable / peer; a "
        "cost: peer / durable; above 1, durable is ahead), the median of the repeat-by-repeat ratios\n"
    )
    print(table(rows))
    print(f"\n{h.environment()}\n{versions()}")
    print(
        f"({time.perf_counter() - start:.0f} s; medians of {repeats} repeats after one warm-up; start-up: "
        f"{min(repeats, 3)} repeats; workers: {min(repeats, 3)} repeats, no warm-up)"
    )


if __name__ == "__main__":
    main()
