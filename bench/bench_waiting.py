"""Waiting runs: what one ``durable worker`` pays for runs that only wait (a timer, a signal).

Run it with ``.venv/bin/python bench/bench_waiting.py`` (``--help`` for options;
``--sizes 1000,10000,100000`` for the SPEC §8 sizes; ``--store pg`` for PostgreSQL,
``--store file --store pg`` for both; FileStore alone by default). It starts a real
``durable worker`` process and never asserts a timing.

Theory of operation
-------------------
A worker lets go of a run that only waits (``waiting_cache=0``) and takes it
back by replay when it is due; the store keeps a due index (``Store.due_runs``,
``next_due``). SPEC §8: with 100,000 runs waiting in one store (half on a
one-hour timer, half on a signal), one worker with ``--concurrency 100`` keeps
its resident memory bounded by its concurrency, starts a new run within 1 s,
resumes a signalled run within 1 s, and fires 1,000 timers due in the same
second within 2 s. The same at 10,000 and 1,000 waiting runs shows whether the
cost follows the due work or the waiting work.

*Set-up* (not a figure): for each size, a fresh store (a FileStore directory,
or a fresh PostgreSQL schema) gets the waiting runs as a worker leaves them,
through the Store API in this process: ``create`` with ``RunStarted``, then for
a timer its ``TimerStarted`` (deadline in one hour), for a signal wait its
``SignalAwaited``, then ``release(writer, due)`` (the deadline, or ``math.inf`` for a
signal). The FileStore of the set-up uses ``sync="none"`` (same bytes, no
fsyncs). Before that, one run of each kind goes through an in-process
``durable.Runtime(waiting_cache=0)`` and the bench checks that its journal has
the same records as the ones built by hand, so the shortcut cannot drift from
what the executor writes.

*The worker*: ``durable worker <module> --store ... --concurrency 100`` (and
``--poll`` if given; the worker's default is 200ms), one process, its module
(the workflows below) in a temporary directory. Every workflow ends with an
activity that writes ``time.time()`` to a file named after its run, so the
times below are wall-clock times of one machine, taken in the worker.

(a) memory: the worker's ``VmRSS`` (``/proc/<pid>/status``) once it has served
    for ``--settle`` seconds with nothing due, beside the same worker on an
    empty store of the same kind, started the same way. Target: at most 10 MB
    above the empty store's (100 KB for each of the 100 runs it may execute at
    once, far more than a run holds; a worker that kept 100 bytes per waiting run
    would exceed it at 100,000). The worker is the whole ``durable worker``
    process: what its start-up leaves in memory counts. Also printed: its CPU use
    while idle (clock ticks: steps of 0.33%), the time from its launch until it
    says it serves, and its ``VmHWM`` (peak) at the end.
(b) a new run: from ``durable.Client(store).start(...)`` of a run whose first
    activity writes the time, to that time. ``--repeats`` runs, one after the
    other at random moments; the figure is the slowest (each must start within
    1 s), the median beside it.
(c) a signal: from ``Client.signal(...)`` to a signal-waiting run, to the time its
    next activity writes. Same repeats, a different waiting run each time.
(d) 1,000 timers due in the same second: 1,000 more runs are built as in the
    set-up, while the worker runs, with their deadline at the whole second
    ``T`` a few seconds ahead (far enough to finish building them first). The
    figure is from ``T`` until the last of them has written its time (first
    one beside it, and when a quarter, half and three quarters had).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import _harness as h
import attrs
import trio

import durable
from durable import lowlevel as ll
from durable._core.values import encode_call
from durable._store_from import store_from

SCRIPT = os.path.join(os.path.dirname(sys.executable), "durable")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SIZES = (1_000,)  # the default, and run_all's (run_all --full: FULL_SIZES)
FULL_SIZES = (1_000, 10_000)
SOON = 1_000  # (d): runs whose timers are due in the same second
LONG = 3600.0  # the waiting timers: one hour
MEMORY_BUDGET = 10.0  # MB above the empty store's: 100 KB per run of --concurrency 100
GUARD = 600.0  # seconds: a hang guard for each wait, never a timing target
STAMPS = "DURABLE_BENCH_STAMPS"  # the worker's environment: where activities write times

#: The workflows the worker imports, written to a temporary directory. The activity
#: writes the time it runs to a file named after its tag (the run's id), atomically.
FLOWS = '''"""bench_waiting's workflows: each ends with an activity that writes the time."""

import os
import time

import durable


@durable.activity
async def stamp(tag: str) -> float:
    now = time.time()
    directory = os.environ["DURABLE_BENCH_STAMPS"]
    with open(os.path.join(directory, "." + tag), "w") as out:
        out.write(repr(now))
    os.rename(os.path.join(directory, "." + tag), os.path.join(directory, tag))
    return now


@durable.workflow(name="bench.waiting.sleeper")
def sleeper(tag: str, seconds: float):
    yield durable.sleep(seconds)
    return (yield stamp(tag))


@durable.workflow(name="bench.waiting.listener")
def listener(tag: str):
    yield durable.wait_signal("go")
    return (yield stamp(tag))


@durable.workflow(name="bench.waiting.newcomer")
def newcomer(tag: str):
    return (yield stamp(tag))
'''


@attrs.frozen
class Options:
    repeats: int
    base: str | None
    poll: str | None  # None: the worker's default
    concurrency: int
    settle: float
    dsn: str | None  # None: no PostgreSQL


# --- the workflows and the journals a worker leaves -----------------------------------


def load_flows(directory: str) -> Any:
    """Write the workflow module to ``directory`` and import it (the worker imports the same file)."""
    path = os.path.join(directory, "bench_waiting_flows.py")
    with open(path, "w") as out:
        out.write(FLOWS)
    sys.path.insert(0, directory)
    try:
        module = importlib.import_module("bench_waiting_flows")
    finally:
        sys.path.remove(directory)
    return module, path


async def build(store: durable.Store, kind: str, run_id: str, *, fire_at: float | None = None) -> None:
    """Leave ``run_id`` waiting as a worker leaves it (see :func:`check_shapes`): a
    ``"timer"`` run asleep until ``fire_at`` (default: in one hour), a ``"signal"`` run
    waiting for the signal ``go``."""
    now = time.time()
    if kind == "timer":
        due = now + LONG if fire_at is None else fire_at
        # Started LONG seconds before it is due, as if a worker had journaled it then.
        started = ll.RunStarted(
            run_id, "bench.waiting.sleeper", encode_call((run_id, LONG), {}, what="bench"), now
        )
        first: ll.Event = ll.TimerStarted(0, LONG, due, due - LONG)
    else:
        due = math.inf
        started = ll.RunStarted(
            run_id, "bench.waiting.listener", encode_call((run_id,), {}, what="bench"), now
        )
        first = ll.SignalAwaited(0, "go", now)  # a signal wait is journaled (since issue 16)
    writer = await store.create(started)
    if writer is None:
        raise RuntimeError(f"run {run_id!r} exists already")
    writer.append(first)
    if writer.syncs:
        await writer.sync()
    await store.release(writer, due)


async def build_many(store: durable.Store, calls: Sequence[tuple[str, str, float | None]]) -> None:
    """:func:`build` each ``(kind, run_id, fire_at)``, a few at a time (a PostgreSQL store
    commits them together)."""
    todo = iter(calls)

    async def builder() -> None:
        for kind, run_id, fire_at in todo:
            await build(store, kind, run_id, fire_at=fire_at)

    async with trio.open_nursery() as nursery:
        for _ in range(16):
            nursery.start_soon(builder)


def check_shapes(flows: Any, base: str | None) -> None:
    """The journals :func:`build` writes hold what a runtime that lets its waiting runs go
    (``waiting_cache=0``, as ``durable worker``) leaves: same records, times aside."""

    def shape(events: list[ll.Event]) -> list[tuple[Any, ...]]:
        return [
            (
                type(e).__name__,
                getattr(e, "workflow", None),
                getattr(e, "args", None),
                getattr(e, "seconds", 0),
            )
            for e in events
        ]

    async def main(directory: str) -> None:
        real = durable.FileStore(os.path.join(directory, "real"), sync="none")
        async with durable.Runtime(real, waiting_cache=0, poll=0.05) as runtime:
            await runtime.start(flows.sleeper, "timer", LONG, id="timer")
            await runtime.start(flows.listener, "signal", id="signal")
            with trio.fail_after(10):
                while runtime.running:
                    await trio.sleep(0.01)
        built = durable.FileStore(os.path.join(directory, "built"), sync="none")
        for kind in ("timer", "signal"):
            await build(built, kind, kind)
            expected, got = await real.read(kind), await built.read(kind)
            if expected is None or got is None or shape(expected) != shape(got):
                raise RuntimeError(
                    f"a {kind} run's built journal {got!r} is not what a worker leaves: {expected!r}"
                )
        if await built.due_runs(time.time() + LONG / 2, 10) != []:
            raise RuntimeError("built runs are due before their time")

    with tempfile.TemporaryDirectory(dir=base) as directory:
        trio.run(main, directory)


# --- the worker process -----------------------------------------------------------------


class Worker:
    """One ``durable worker`` process on ``store``; its stderr goes to a file in ``directory``."""

    def __init__(self, store: str, module: str, stamps: str, directory: str, options: Options) -> None:
        self.log = os.path.join(directory, f"worker-{uuid.uuid4().hex[:8]}.stderr")
        poll = [] if options.poll is None else ["--poll", options.poll]
        command = [SCRIPT, "worker", module, "--store", store, "--concurrency", str(options.concurrency)]
        launched = time.perf_counter()
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [*command, *poll],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, STAMPS: stamps},
            )
        try:
            self.wait_for(lambda: "worker: serving" in self.stderr(), "serving")
        except BaseException:
            self.stop()
            raise
        #: Seconds from the launch until the worker said it serves.
        self.start_up = time.perf_counter() - launched

    def stderr(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as err:
            return err.read()

    def wait_for(self, condition: Any, what: str, every: float = 0.02) -> None:
        deadline = time.monotonic() + GUARD
        while not condition():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the worker exited ({self.proc.returncode}) waiting for {what}:\n{self.stderr()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"hang guard: no {what} after {GUARD:.0f} s")
            time.sleep(every)

    def status(self, field: str) -> float:
        """A memory figure of /proc/<pid>/status (``VmRSS``, ``VmHWM``), in MB."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc/{self.proc.pid}/status")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def settle(self, seconds: float) -> tuple[float, float]:
        """Wait ``seconds`` with nothing due; ``(VmRSS in MB, share of a core used meanwhile)``."""
        cpu, start = self.cpu_seconds(), time.perf_counter()
        time.sleep(seconds)
        busy = (self.cpu_seconds() - cpu) / (time.perf_counter() - start)
        return self.status("VmRSS"), busy

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- stores ---------------------------------------------------------------------------


def _label(kind: str) -> str:
    return "PostgreSQL" if kind == "pg" else "FileStore"


@contextlib.contextmanager
def fresh_store(kind: str, options: Options, directory: str) -> Iterator[str]:
    """A fresh FileStore directory in ``directory``, or a fresh PostgreSQL schema (dropped after)."""
    if kind == "file":
        path = os.path.join(directory, f"store-{uuid.uuid4().hex[:8]}")
        os.mkdir(path, 0o700)
        yield path
        return
    assert options.dsn is not None
    import psycopg  # noqa: PLC0415 - only with a PostgreSQL server
    from psycopg import sql  # noqa: PLC0415

    schema = f"bench_waiting_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{options.dsn}{'&' if '?' in options.dsn else '?'}schema={schema}"
    finally:
        with psycopg.connect(options.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def setup_store(store: str) -> durable.Store:
    """The store the set-up writes through: without fsyncs for a FileStore (same bytes)."""
    if store.startswith("postgresql://"):
        return store_from(store)
    return durable.FileStore(store, sync="none")


async def _build_store(store: str, calls: Sequence[tuple[str, str, float | None]]) -> float:
    """Build the runs; the seconds it took."""
    target = setup_store(store)
    try:
        start = time.perf_counter()
        await build_many(target, calls)
        return time.perf_counter() - start
    finally:
        await target.aclose()


# --- the figures of one store and size ----------------------------------------------------


def _stamp(stamps: str, tag: str) -> float | None:
    try:
        with open(os.path.join(stamps, tag)) as f:
            return float(f.read())
    except FileNotFoundError:
        return None


async def _until_stamped(stamps: str, tag: str) -> float:
    with trio.fail_after(GUARD):
        while (t := _stamp(stamps, tag)) is None:
            await trio.sleep(0.002)
    return t


async def latencies(store: str, flows: Any, stamps: str, options: Options) -> tuple[list[float], list[float]]:
    """(b) and (c): seconds from ``start`` of a new run, and from ``signal`` to a waiting
    run, to the time its activity wrote; ``options.repeats`` of each, taking turns."""
    client = durable.Client(store)
    new, signalled = [], []
    try:
        for i in range(options.repeats):
            await trio.sleep(random.uniform(0.1, 0.5))  # at random moments of the worker's poll
            tag = f"new-{i}"
            sent = time.time()
            await client.start(flows.newcomer, tag, id=tag)
            new.append(await _until_stamped(stamps, tag) - sent)
            await trio.sleep(random.uniform(0.1, 0.5))
            tag = f"signal-{i:06d}"
            sent = time.time()
            await client.signal(tag, "go")
            signalled.append(await _until_stamped(stamps, tag) - sent)
    finally:
        await client.store.aclose()
    return new, signalled


def due_together(store: str, stamps: str, build_rate: float) -> tuple[list[float], float]:
    """(d): build SOON runs due at the whole second T a few seconds ahead; ``(seconds from T
    to each time written, sorted; seconds of margin the building left before T)``."""
    lead = 3 + 1.5 * SOON / build_rate  # build them, then a few seconds
    due = float(math.ceil(time.time() + lead))
    tags = [f"soon-{i:04d}" for i in range(SOON)]
    trio.run(_build_store, store, [("timer", tag, due) for tag in tags])
    margin = due - time.time()
    deadline = time.monotonic() + max(0.0, margin) + GUARD
    while sum(name.startswith("soon-") for name in os.listdir(stamps)) < SOON:
        if time.monotonic() > deadline:
            raise RuntimeError(f"hang guard: the {SOON} timers did not all fire within {GUARD:.0f} s")
        time.sleep(0.02)
    times = [_stamp(stamps, tag) for tag in tags]
    return sorted(t - due for t in times if t is not None), margin


def one_size(
    kind: str, n: int, flows: Any, module: str, options: Options, empty_rss: float, directory: str
) -> list[h.Figure]:
    label = f"{_label(kind)}, {n:,} waiting"
    h.header(
        f"{label} ({n // 2:,} on a {LONG / 3600:g}-hour timer, {n - n // 2:,} on a signal); one worker, "
        f"--concurrency {options.concurrency}, --poll {options.poll or 'default (200ms)'}"
    )
    stamps = tempfile.mkdtemp(dir=directory, prefix="stamps-")
    with fresh_store(kind, options, directory) as store:
        calls = [("timer", f"timer-{i:06d}", None) for i in range(n // 2)]
        calls += [("signal", f"signal-{i:06d}", None) for i in range(n - n // 2)]
        took = trio.run(_build_store, store, calls)
        rate = n / took
        print(f"  set-up: {n:,} waiting runs built in {took:.1f} s ({rate:,.0f} runs/s)", flush=True)
        worker = Worker(store, module, stamps, directory, options)
        try:
            rss, busy = worker.settle(options.settle)
            new, signalled = trio.run(latencies, store, flows, stamps, options)
            fired, margin = due_together(store, stamps, rate)
            peak = worker.status("VmHWM")
        finally:
            worker.stop()
    figures = [
        h.report(h.Figure(f"{label}: worker start-up to 'serving'", worker.start_up, "s")),
        h.report(h.Figure(f"{label}: (a) worker VmRSS, idle", rss, "MB", empty_rss + MEMORY_BUDGET, "<=")),
        h.report(h.Figure(f"{label}: (a) worker CPU while idle", busy * 100, "% of a core")),
        h.report(h.Figure(f"{label}: (b) start() to first activity, slowest", max(new), "s", 1.0, "<=")),
        h.report(
            h.Figure(f"{label}: (c) signal() to next activity, slowest", max(signalled), "s", 1.0, "<=")
        ),
        h.report(
            h.Figure(f"{label}: (d) {SOON:,} timers due in one second: last fired", fired[-1], "s", 2.0, "<=")
        ),
    ]
    quarters = ", ".join(f"{fired[len(fired) * q // 4 - 1]:.2f}" for q in (1, 2, 3))
    print(
        f"      (b) median {statistics.median(new):.3f} s, (c) median {statistics.median(signalled):.3f} s "
        f"of {options.repeats} each; (d) first fired {fired[0]:.3f} s after its second began, a quarter, "
        f"half, three quarters by {quarters} s (built {margin:.1f} s before that second); "
        f"worker VmHWM (peak) {peak:.1f} MB",
        flush=True,
    )
    if margin < 0:
        print("      (d) is not valid: the runs were still being built when they came due", flush=True)
    return figures


def empty_store(kind: str, module: str, options: Options, directory: str) -> float:
    """The same worker on an empty store of the same kind: its idle VmRSS (MB)."""
    with fresh_store(kind, options, directory) as store:
        stamps = tempfile.mkdtemp(dir=directory, prefix="stamps-")
        worker = Worker(store, module, stamps, directory, options)
        try:
            rss, busy = worker.settle(options.settle)
        finally:
            worker.stop()
    h.report(h.Figure(f"{_label(kind)}, empty store: worker start-up to 'serving'", worker.start_up, "s"))
    h.report(h.Figure(f"{_label(kind)}, empty store: worker VmRSS, idle", rss, "MB"))
    h.report(h.Figure(f"{_label(kind)}, empty store: worker CPU while idle", busy * 100, "% of a core"))
    return rss


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
    sizes: Sequence[int] | None = None,
    stores: Sequence[str] = ("file",),
    dsn: str | None = None,
    poll: str | None = None,
    concurrency: int = 100,
    settle: float = 3.0,
) -> list[h.Figure]:
    """Measure and print every figure; return them for the summary table."""
    if sizes is None:
        sizes = SIZES if quick else FULL_SIZES
    dsn = dsn or os.environ.get("DURABLE_TEST_PG") or DEFAULT_DSN
    kinds = list(stores)
    if "pg" in kinds:
        why = _postgres(dsn)
        if why is not None:
            print(f"PostgreSQL at {dsn} cannot be used ({why}): skipped", flush=True)
            kinds.remove("pg")
    options = Options(repeats, base, poll, concurrency, settle, dsn if "pg" in kinds else None)
    figures: list[h.Figure] = []
    with tempfile.TemporaryDirectory(dir=base) as directory:
        flows, module = load_flows(directory)
        check_shapes(flows, base)
        for kind in kinds:
            h.header(f"{_label(kind)}: the same worker on an empty store")
            empty_rss = empty_store(kind, module, options, directory)
            for n in sizes:
                figures += one_size(kind, n, flows, module, options, empty_rss, directory)
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="new runs and signals timed per size (5)")
    parser.add_argument("--dir", default=None, help="directory for FileStores and worker logs ($TMPDIR)")
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="waiting runs, comma-separated (1000)"
    )
    parser.add_argument(
        "--store", dest="stores", action="append", choices=["file", "pg"], help="file (default), pg"
    )
    parser.add_argument("--dsn", default=None, help="PostgreSQL server ($DURABLE_TEST_PG or the test one)")
    parser.add_argument("--poll", default=None, help="the worker's --poll (its default: 200ms)")
    parser.add_argument("--concurrency", type=int, default=100, help="the worker's --concurrency (100)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds the idle worker runs before (a)")
    options = parser.parse_args(argv)
    print(h.environment(), flush=True)
    figures = collect(
        repeats=options.repeats,
        base=options.dir,
        sizes=[int(size) for size in options.sizes.split(",")],
        stores=options.stores or ("file",),
        dsn=options.dsn,
        poll=options.poll,
        concurrency=options.concurrency,
        settle=options.settle,
    )
    h.main_table(figures)


if __name__ == "__main__":
    main()
