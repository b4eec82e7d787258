"""Worker processes sharing a store: runs/s, steps/s and the takeover time after a SIGKILL.

Run it with ``.venv/bin/python bench/bench_workers.py`` (``--help`` for options;
``--dsn`` names the PostgreSQL server, default ``$DURABLE_TEST_PG`` or the test
server; ``--quick`` for modest sizes). It starts real ``durable worker``
processes and never asserts a timing.

Theory of operation
-------------------
*Throughput.* For 1, 2 and 4 ``durable worker`` processes (``--concurrency``
100, ``--poll`` 50ms) on one store (a fresh PostgreSQL schema, or a fresh
FileStore directory that the workers share through its file locks), a
``durable.Client`` in this process creates 400 runs (100 with ``--quick``) of
the ``steps`` workflow of ``_harness`` (10 async activities that return at
once), two ways:

* *backlog*: the runs are created while the workers are SIGSTOPped, and the
  clock starts at their SIGCONT: how fast the workers drain a queue;
* *live*: the runs are created while the workers run, and the clock starts at
  the first create: what a client feeding workers sees.

The clock stops at the last completion, read from the journals afterwards (the
last ``RunCompleted.t``: the worker's clock, wall time on this machine, just
before that record is committed; the first create is the first
``RunStarted.t``, the client's clock). This process only reads the workers'
stderr to know when every run is done, so its polling costs the workers
nothing. Everything shares the same two cores: the client, the workers and the
PostgreSQL server.

What bounds it, measured in the same script:

* the client's create rate (each create is one transaction, or one file
  created, fdatasynced and its directory fsynced): live runs/s cannot beat it;
* the CPU: one process running the same runs on a ``MemoryStore`` (no I/O, no
  other process) is what durable's Python costs per step on one core;
* PostgreSQL: the commits per second of one connection doing a small
  ``INSERT`` transaction in a loop (``synchronous_commit`` on: one WAL flush
  each). A worker opens each run in a transaction of its own, one run after
  the other, and releases it after its end in another, which the worker's
  event loop waits for; its steps go through group commit (one transaction for
  the steps of every run that synced meanwhile). For the backlog the bench
  also prints how many opens per run were rolled back because another worker
  got the run first (``xact_rollback`` of the database meanwhile);
* FileStore: fdatasyncs of 100 files from 16 threads per second (the workers
  run with the default ``sync="always"``: one fdatasync per step).

*Takeover.* 40 long-running runs (20 with ``--quick``; a workflow looping over
``durable.sleep(0.05)``, so each commits a record every 50 ms) on 2 and 4
workers (each with room for every run); once every run is held and ticking, the
worker holding the most runs is SIGKILLed. The figure is the time from the kill
until every run it held has a committed ``RunResumed`` record of a survivor, as
seen by reading those journals every 50 ms; the line after it gives the same
from the journals' own timestamps (the latest ``RunResumed.t`` of a survivor).
On PostgreSQL a survivor may take a run once the victim's lease has run out:
``lease_ttl`` after the victim's last commit or renewal for that run, then
within one ``--poll`` of the survivor's loop, plus opening the runs; the floor
printed is ``lease_ttl + poll``. On a FileStore the kernel drops the victim's
locks at once, so the floor is one ``--poll`` (plus a scan of the directory).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import _harness as h
import attrs
import bench_live
import trio

import durable
from durable import lowlevel as ll
from durable._core.durations import parse_duration
from durable._store_from import store_from

HERE = os.path.abspath(__file__)
SCRIPT = os.path.join(os.path.dirname(sys.executable), "durable")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
STEPS = 10
EXPECTED = STEPS * (STEPS - 1) // 2
WORKER_COUNTS = (1, 2, 4)
TAKEOVER_WORKERS = (2, 4)
TICK = 0.05
GUARD = 300.0  # seconds: a hang guard for each phase, never a timing target
_COMPLETED = re.compile(r"^worker: completed '([^']*)'$", re.MULTILINE)
#: A worker's line when it takes a run: "started", "resumed" or "taken over" (since issue 16;
#: "running" before).
_RUNNING = re.compile(r"^worker: (?:running|started|resumed|taken over) '([^']*)'", re.MULTILINE)


@durable.workflow(name="bench.workers.ticker")
def ticker(n: int, seconds: float) -> Any:
    """A long-running run: ``n`` durable timers of ``seconds``, one after the other."""
    for _ in range(n):
        yield durable.sleep(seconds)
    return n


@attrs.frozen
class Options:
    runs: int
    concurrency: int
    poll: str
    lease_ttl: str
    takeover_runs: int
    settle: float
    check: float
    repeats: int
    base: str | None
    dsn: str | None  # None: no PostgreSQL (unreachable or psycopg missing)


# --- worker processes -----------------------------------------------------------


class Workers:
    """``count`` ``durable worker`` processes on one store, stderr to files in ``directory``."""

    def __init__(self, store: str, count: int, *, poll: str, concurrency: int, directory: str) -> None:
        self.paths = [os.path.join(directory, f"worker-{i}.stderr") for i in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []
        limit = ["--concurrency", str(concurrency)]
        try:
            for path in self.paths:
                with open(path, "wb") as err:
                    self.procs.append(
                        subprocess.Popen(
                            [SCRIPT, "worker", HERE, "--store", store, "--poll", poll, *limit],
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=err,
                        )
                    )
            self.wait_for(lambda: all("worker: serving" in text for text in self.stderr()), "serving")
        except BaseException:
            self.stop()
            raise

    def stderr(self) -> list[str]:
        out = []
        for path in self.paths:
            with open(path, encoding="utf-8", errors="replace") as err:
                out.append(err.read())
        return out

    def completed(self) -> set[str]:
        return {run_id for text in self.stderr() for run_id in _COMPLETED.findall(text)}

    def running(self) -> dict[str, int]:
        """The pid of the worker that last said it runs each run."""
        return {
            run_id: proc.pid
            for proc, text in zip(self.procs, self.stderr(), strict=True)
            for run_id in _RUNNING.findall(text)
        }

    def wait_for(self, condition: Callable[[], bool], what: str, every: float = 0.05) -> None:
        deadline = time.monotonic() + GUARD
        while not condition():
            for proc, text in zip(self.procs, self.stderr(), strict=True):
                if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                    raise RuntimeError(f"a worker exited ({proc.returncode}) waiting for {what}:\n{text}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"hang guard: no {what} after {GUARD:.0f} s")
            time.sleep(every)

    def signal(self, number: int) -> None:
        for proc in self.procs:
            proc.send_signal(number)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- stores ---------------------------------------------------------------------------


def _pg_dsn(dsn: str, schema: str, lease_ttl: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}&lease_ttl={lease_ttl}"


def _pg_execute(dsn: str, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    import psycopg  # noqa: PLC0415 - only with a PostgreSQL server

    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []


@contextlib.contextmanager
def fresh_store(kind: str, options: Options) -> Iterator[tuple[str, str]]:
    """``(store argument, scratch directory)``: a fresh schema or FileStore directory, removed after."""
    with tempfile.TemporaryDirectory(dir=options.base) as directory:
        if kind == "file":
            store = os.path.join(directory, "store")
            os.mkdir(store)
            yield store, directory
            return
        assert options.dsn is not None
        from psycopg import sql  # noqa: PLC0415 - only with a PostgreSQL server

        schema = f"durable_bench_{uuid.uuid4().hex[:12]}"
        try:
            dsn = _pg_dsn(options.dsn, schema, options.lease_ttl)
            _make_tables(dsn)
            yield dsn, directory
        finally:
            _pg_execute(
                options.dsn, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


def _make_tables(dsn: str) -> None:
    """Make the store's tables before any worker starts.

    Otherwise the client's first create makes them while the workers look at the
    new schema, and a worker SIGSTOPped for the backlog in the middle of such a
    transaction holds the client's DDL up until its SIGCONT (creates fell from
    about 150/s to 2/s with 4 workers).
    """
    store = durable.PostgresStore(dsn)
    try:
        store._db.make_tables()
    finally:
        trio.run(store.aclose)


async def _create(
    store: str, calls: Sequence[tuple[str, durable.Workflow[..., Any], tuple[Any, ...]]]
) -> None:
    client = durable.Client(store)
    try:
        for run_id, workflow, args in calls:
            await client.start(workflow, *args, id=run_id)
    finally:
        await client.store.aclose()


async def _read_all(store: str, run_ids: Sequence[str]) -> dict[str, list[Any]]:
    target = store_from(store)
    try:
        journals = {}
        for run_id in run_ids:
            events = await target.read(run_id)
            if not events:
                raise RuntimeError(f"run {run_id!r} has no journal")
            journals[run_id] = events
        return journals
    finally:
        await target.aclose()


def _label(kind: str) -> str:
    return "PostgreSQL" if kind == "pg" else "FileStore"


# --- throughput -----------------------------------------------------------------------


@attrs.define
class Seen:
    """What each repeat of one configuration saw besides its time."""

    create_seconds: list[float] = attrs.Factory(list)
    shares: list[str] = attrs.Factory(list)
    #: PostgreSQL backlog: transactions the database rolled back meanwhile.
    rollbacks: list[int] = attrs.Factory(list)


def _rollbacks(dsn: str) -> int:
    """The database's ``xact_rollback`` (every session's: this bench's, and others' if any).

    A worker's open of a run that another worker holds is one: it locks the run's row,
    finds the other's lease live, and rolls back (``RunLockedError``).
    """
    rows = _pg_execute(dsn, "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()")
    return int(rows[0][0])


def throughput_once(
    kind: str, workers: int, options: Options, seen: Seen, *, backlog: bool
) -> Callable[[], float]:
    """Seconds from the first create (``backlog``: from the workers' SIGCONT) to the last
    completion of ``options.runs`` runs."""
    run_ids = [f"run-{i:05d}" for i in range(options.runs)]

    def once() -> float:
        with fresh_store(kind, options) as (store, directory):
            pool = Workers(
                store, workers, poll=options.poll, concurrency=options.concurrency, directory=directory
            )
            try:
                if backlog:  # the runs wait for the workers, which then start at the same moment
                    pool.signal(signal.SIGSTOP)
                trio.run(_create, store, [(run_id, h.steps, (STEPS,)) for run_id in run_ids])
                counting = backlog and options.dsn is not None and kind == "pg"
                before = _rollbacks(options.dsn) if counting and options.dsn else 0
                released = time.time()
                if backlog:
                    pool.signal(signal.SIGCONT)
                pool.wait_for(lambda: len(pool.completed()) == len(run_ids), "completion of every run")
                taken = pool.running()
            finally:
                pool.stop()
            if counting and options.dsn:  # the workers' sessions have ended: their counts are in
                seen.rollbacks.append(_rollbacks(options.dsn) - before)
            journals = trio.run(_read_all, store, run_ids)
        for run_id, events in journals.items():
            last = events[-1]
            if not isinstance(last, ll.RunCompleted) or ll.loads_value(last.result) != EXPECTED:
                raise RuntimeError(f"run {run_id!r} did not complete with {EXPECTED}: {last!r}")
        created = [events[0].t for events in journals.values()]
        first = min(created)
        seen.create_seconds.append(max(created) - first)
        takers = Counter(taken.values())
        seen.shares.append("/".join(str(n) for _, n in takers.most_common()))
        finished: float = max(events[-1].t for events in journals.values())
        return finished - (released if backlog else first)

    return once


def memory_once(runs: int) -> Callable[[], float]:
    """The CPU ceiling: the same runs in one process on a MemoryStore, all at once."""

    async def main() -> float:
        async with durable.Runtime(durable.MemoryStore(), poll=None) as runtime:
            start = time.perf_counter()
            handles = [await runtime.start(h.steps, STEPS, id=f"run-{i:05d}") for i in range(runs)]
            results = [await handle.result() for handle in handles]
            elapsed = time.perf_counter() - start
        if results != [EXPECTED] * runs:
            raise RuntimeError(f"the runs returned {sorted(set(results))!r}, not {EXPECTED}")
        return elapsed

    return lambda: trio.run(main)


def pg_commit_once(dsn: str, count: int) -> Callable[[], float]:
    """Seconds for ``count`` one-row INSERT transactions from one connection."""
    import psycopg  # noqa: PLC0415 - only with a PostgreSQL server
    from psycopg import sql  # noqa: PLC0415

    def once() -> float:
        schema = f"durable_bench_{uuid.uuid4().hex[:12]}"
        scratch = sql.Identifier(schema, "scratch")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            try:
                conn.execute(
                    sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, record bytea)").format(scratch)
                )
                insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(scratch)
                start = time.perf_counter()
                for i in range(count):
                    with conn.transaction():
                        conn.execute(insert, [i, bench_live.RECORD])
                return time.perf_counter() - start
            finally:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    return once


def collect_throughput(options: Options, kinds: Sequence[str]) -> list[h.Figure]:
    out: list[h.Figure] = []
    runs, steps = options.runs, options.runs * STEPS
    h.header(
        f"{runs} runs of {STEPS} async steps on 1, 2 and 4 workers (--concurrency {options.concurrency}, "
        f"--poll {options.poll}): a backlog (created while the workers are SIGSTOPped, timed from their "
        "SIGCONT) and live (created by the Client while the workers run, timed from the first create)"
    )
    configs = [(kind, n, backlog) for kind in kinds for n in WORKER_COUNTS for backlog in (True, False)]
    seen = {config: Seen() for config in configs}
    onces = [throughput_once(kind, n, options, seen[(kind, n, b)], backlog=b) for kind, n, b in configs]
    floors: list[Callable[[], float]] = [memory_once(runs)]
    if "pg" in kinds:
        assert options.dsn is not None
        floors.append(pg_commit_once(options.dsn, 500))
    if "file" in kinds:
        floors.append(bench_live.parallel_fdatasync_once(100, 10, options.base))
    timings = h.measure_interleaved(onces + floors, repeats=options.repeats)
    by_config = dict(zip(configs, timings, strict=False))
    rest = list(timings[len(configs) :])

    cpu = h.report(h.rate("CPU: one process, MemoryStore, same runs: steps/s", steps, rest.pop(0), "steps/s"))
    out.append(cpu)
    if "pg" in kinds:
        commit = h.rate("floor: PostgreSQL commits/s of one connection", 500, rest.pop(0), "commits/s")
        out.append(h.report(commit))
    if "file" in kinds:
        syncs = h.rate("floor: fdatasyncs of 100 files from 16 threads", 1000, rest.pop(0), "fdatasync/s")
        out.append(h.report(syncs))
    for kind in kinds:
        for n in WORKER_COUNTS:
            label = f"{_label(kind)}, {n} worker{'s' if n > 1 else ''}"
            timing, info = by_config[(kind, n, True)], seen[(kind, n, True)]
            out.append(h.report(h.rate(f"{label}, backlog: runs/s", runs, timing, "runs/s")))
            out.append(h.report(h.rate(f"{label}, backlog: steps/s", steps, timing, "steps/s", cpu.value)))
            per_run = ""
            if info.rollbacks:
                per_run = (
                    f"; opens that lost the run to another worker (rolled back), last repeat: "
                    f"{info.rollbacks[-1] / runs:.2f} per run"
                )
            print(f"      (runs taken per worker, last repeat: {info.shares[-1]}{per_run})", flush=True)
            timing, info = by_config[(kind, n, False)], seen[(kind, n, False)]
            create_rate = runs / statistics.median(info.create_seconds[-options.repeats :])
            out.append(h.report(h.rate(f"{label}, live: runs/s", runs, timing, "runs/s", create_rate)))
            print(
                f"      (x {STEPS} steps = {steps / timing.median:,.0f} steps/s; the client created the "
                f"runs at {create_rate:,.0f} runs/s; runs taken per worker: {info.shares[-1]})",
                flush=True,
            )
        one = by_config[(kind, 1, True)]
        for n in WORKER_COUNTS[1:]:
            # Same runs, so the ratio of rates is the inverse ratio of times, repeat by repeat.
            scaling = h.median_ratio(one, by_config[(kind, n, True)])
            out.append(
                h.report(h.Figure(f"{_label(kind)}, {n} workers / 1 worker, backlog: steps/s", scaling, "x"))
            )
    return out


# --- takeover ---------------------------------------------------------------------------


def _held_by(kind: str, store: str, options: Options, pool: Workers) -> dict[str, int]:
    """Which worker pid holds each run now (PostgreSQL: the lease; FileStore: the worker that
    said it runs it; no run is given up here)."""
    if kind == "pg":
        assert options.dsn is not None
        from psycopg import sql  # noqa: PLC0415 - only with a PostgreSQL server

        schema = store.split("schema=")[1].split("&", maxsplit=1)[0]
        rows = _pg_execute(
            options.dsn,
            sql.SQL("SELECT run_id, owner FROM {} WHERE status = 'open' AND owner IS NOT NULL").format(
                sql.Identifier(schema, "durable_runs")
            ),
        )
        return {run_id: int(owner.split(":")[-2]) for run_id, owner in rows}
    return pool.running()


def takeover_once(
    kind: str, workers: int, options: Options, from_journal: list[float], orphans: list[int]
) -> Callable[[], float]:
    """Seconds from the SIGKILL of a worker until every run it held has a survivor's RunResumed."""
    run_ids = [f"tick-{i:04d}" for i in range(options.takeover_runs)]

    def once() -> float:
        with fresh_store(kind, options) as (store, directory):
            pool = Workers(store, workers, poll=options.poll, concurrency=len(run_ids), directory=directory)
            try:
                trio.run(_create, store, [(run_id, ticker, (10**6, TICK)) for run_id in run_ids])
                pids = [proc.pid for proc in pool.procs]
                pool.wait_for(
                    lambda: len(_held_by(kind, store, options, pool)) == len(run_ids),
                    "every run held",
                    0.2,
                )
                time.sleep(options.settle)  # every run ticking, leases renewed, in steady state
                held = _held_by(kind, store, options, pool)
                victim_pid = Counter(held.values()).most_common(1)[0][0]
                victim = pool.procs[pids.index(victim_pid)]
                taken = sorted(run_id for run_id, pid in held.items() if pid == victim_pid)
                survivors = set(pids) - {victim_pid}
                killed_at = time.time()
                start = time.perf_counter()
                victim.kill()
                waiting = set(taken)
                last: dict[str, list[Any]] = {}

                def all_taken() -> bool:
                    for run_id, events in trio.run(_read_all, store, sorted(waiting)).items():
                        if any(isinstance(e, ll.RunResumed) and e.pid in survivors for e in events):
                            waiting.discard(run_id)
                            last[run_id] = events
                    return not waiting

                pool.wait_for(all_taken, "takeover of every run the victim held", options.check)
                elapsed = time.perf_counter() - start
            finally:
                pool.stop()
        resumed = [
            next(e.t for e in events if isinstance(e, ll.RunResumed) and e.pid in survivors)
            for events in last.values()
        ]
        from_journal.append(max(resumed) - killed_at)
        orphans.append(len(taken))
        return elapsed

    return once


def collect_takeover(options: Options, kinds: Sequence[str]) -> list[h.Figure]:
    out: list[h.Figure] = []
    ttl = parse_duration(options.lease_ttl, what="lease_ttl")
    poll = parse_duration(options.poll, what="poll")
    h.header(
        f"takeover: {options.takeover_runs} long-running runs (a durable.sleep({TICK}) loop) on 2 and 4 "
        f"workers, the one holding the most SIGKILLed (lease_ttl {options.lease_ttl}, --poll {options.poll})"
    )
    for kind in kinds:
        for n in TAKEOVER_WORKERS:
            from_journal: list[float] = []
            orphans: list[int] = []
            # No warm-up: the figure is dominated by the lease and the poll, not by caches.
            timing = h.measure(
                takeover_once(kind, n, options, from_journal, orphans), repeats=options.repeats, warmup=0
            )
            label = f"takeover, {_label(kind)}, {n} workers"
            # PostgreSQL: a survivor may take a run once its lease ran out (lease_ttl after the
            # victim's last commit or renewal of it), and looks within one poll. FileStore: the
            # kernel drops a killed process's locks at once; a survivor looks within one poll.
            floor = ttl + poll if kind == "pg" else poll
            why = "lease_ttl + poll" if kind == "pg" else "poll: the kernel drops the victim's locks at once"
            note = (
                f" (the lease runs out lease_ttl after the victim's last commit, up to one {TICK} s tick"
                " before the kill, so a figure a little under the floor is possible)"
                if kind == "pg"
                else ""
            )
            out.append(
                h.report(
                    h.Figure(
                        f"{label}: kill -> every run resumed (polled)",
                        timing.median,
                        "s",
                        floor,
                        "ref",
                        timing.spread,
                        timing.best,
                    )
                )
            )
            journal = statistics.median(from_journal)
            out.append(
                h.report(
                    h.Figure(f"{label}: kill -> last RunResumed.t (journal)", journal, "s", floor, "ref")
                )
            )
            print(
                f"      (floor = {why}, plus opening the runs{note}; runs the victim held: "
                f"{'/'.join(map(str, orphans))}; repeats (polled): "
                f"{', '.join(f'{t:.2f}' for t in timing.times)} s)",
                flush=True,
            )
    return out


# --- command line ----------------------------------------------------------------------


def _postgres(dsn: str) -> str | None:
    """Why PostgreSQL cannot be used, or None if it can."""
    try:
        import psycopg  # noqa: PLC0415 - the bench runs without it (FileStore only)

        with psycopg.connect(dsn, connect_timeout=3):
            return None
    except Exception as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)


def collect(
    *,
    repeats: int,
    base: str | None,
    quick: bool = False,
    dsn: str | None = None,
    stores: Sequence[str] = ("pg", "file"),
    only: str | None = None,
    concurrency: int = 100,
    poll: str = "50ms",
    lease_ttl: str = "2s",
    runs: int | None = None,
) -> list[h.Figure]:
    """Measure and print every figure; return them for the summary table."""
    dsn = dsn or os.environ.get("DURABLE_TEST_PG") or DEFAULT_DSN
    kinds = list(stores)
    if "pg" in kinds:
        why = _postgres(dsn)
        if why is not None:
            print(f"PostgreSQL at {dsn} cannot be used ({why}): FileStore only", flush=True)
            kinds.remove("pg")
    options = Options(
        runs=runs if runs is not None else 100 if quick else 400,
        concurrency=concurrency,
        poll=poll,
        lease_ttl=lease_ttl,
        takeover_runs=20 if quick else 40,
        settle=1.0 if quick else 2.0,
        check=0.05,
        repeats=repeats,
        base=base,
        dsn=dsn if "pg" in kinds else None,
    )
    out: list[h.Figure] = []
    if only in (None, "throughput"):
        out += collect_throughput(options, kinds)
    if only in (None, "takeover"):
        out += collect_takeover(options, kinds)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is kept (3)")
    parser.add_argument(
        "--dir", default=None, help="directory for FileStores and worker logs (default: $TMPDIR)"
    )
    parser.add_argument("--quick", action="store_true", help="100 runs, 20 for the takeover")
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs for the throughput (400; --quick 100): more than workers x --concurrency keeps every "
        "worker busy, as one worker claims up to its free capacity at once",
    )
    parser.add_argument(
        "--dsn", default=None, help="PostgreSQL server (default: $DURABLE_TEST_PG or the test one)"
    )
    parser.add_argument(
        "--store", dest="stores", action="append", choices=["pg", "file"], help="only this store"
    )
    parser.add_argument("--only", choices=["throughput", "takeover"], default=None, help="only these figures")
    parser.add_argument("--concurrency", type=int, default=100, help="each worker's --concurrency (100)")
    parser.add_argument("--poll", default="50ms", help="each worker's --poll (50ms)")
    parser.add_argument("--lease-ttl", default="2s", help="the PostgreSQL store's lease_ttl (2s)")
    options = parser.parse_args(argv)
    print(h.environment(), flush=True)
    figures = collect(
        repeats=options.repeats,
        base=options.dir,
        quick=options.quick,
        dsn=options.dsn,
        stores=options.stores or ("pg", "file"),
        only=options.only,
        concurrency=options.concurrency,
        poll=options.poll,
        lease_ttl=options.lease_ttl,
        runs=options.runs,
    )
    h.main_table(figures)


if __name__ == "__main__":
    main()
