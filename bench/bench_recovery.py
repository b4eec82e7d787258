"""Recovery: how fast unfinished runs resume when a runtime starts.

Run it with ``.venv/bin/python bench/bench_recovery.py`` (``--help`` for options).

Theory of operation
-------------------
A store is filled with unfinished runs of ``waiter``: one activity completed,
then a one-hour durable timer in progress, as a process that was killed
mid-sleep leaves them. Then, on the same ``FileStore`` (``sync="always"``):

* ``recover()`` of every run (target: 10,000 runs in <= 2 s): a fresh
  ``Runtime`` lists the unfinished runs, opens them (lock, scan, and one
  parallel round of fdatasyncs plus one directory fsync for the batch), replays
  each journal and launches it, so that each run is waiting on its timer again
  when ``recover()`` returns. Its floor is what the fsyncs alone cost: the
  same number of fdatasyncs issued from 16 threads (measured here);
* one crashed run resumed (target: within 50 ms of the runtime starting, with
  no polling delay): the time from entering ``Runtime`` to ``start`` of that
  run returning, replayed and running again.

The store is copied fresh for each repeat, so every repeat recovers the same
journals.

Then, on a store holding a long history: ``n`` finished runs (10,000, and
100,000 without ``--quick``) and nothing to do, the two looks a worker takes
(target: <= 5 ms at 100,000 finished runs: cost follows the unfinished runs,
never the history):

* ``recover()``: the unfinished runs (none), through the due index;
* ``due_runs()``: what a worker's poll asks for;
* ``durable ls --limit 50`` as a whole process, start-up included (target:
  <= 0.3 s at 100,000 runs): the 50 newest runs, found through the store's
  starts log without reading the other journals.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import _harness as h
import trio

import durable
from durable import lowlevel

SIZES = (2_000, 10_000)
QUICK_SIZES = (1_000, 2_000)
HISTORY_SIZES = (10_000, 100_000)
QUICK_HISTORY_SIZES = (10_000,)
FSYNC_THREADS = 16


@durable.workflow(name="bench.recovery.waiter")
def waiter(i: int) -> Any:
    """One step done, then a long durable sleep: a run that is unfinished for a while."""
    yield h.echo(i)
    yield durable.sleep("1h")
    return i


def make_store(n: int, base: str | None) -> str:
    """A FileStore directory holding ``n`` unfinished runs of :func:`waiter`."""
    path = tempfile.mkdtemp(prefix="durable-bench-recovery-", dir=base)

    async def fill() -> None:
        async with durable.Runtime(durable.FileStore(path, sync="none"), poll=None) as runtime:
            for i in range(n):
                await runtime.start(waiter, i, id=f"r{i}")
            await trio.sleep(0.2)  # every run reaches its timer; then the "process dies"

    trio.run(fill)
    return path


def copy_of(path: str) -> str:
    target = tempfile.mkdtemp(prefix="durable-bench-recovery-copy-", dir=os.path.dirname(path))
    os.rmdir(target)
    shutil.copytree(path, target)
    return target


def recover_once(path: str, n: int) -> float:
    copy = copy_of(path)

    async def recover() -> float:
        start = time.perf_counter()
        async with durable.Runtime(durable.FileStore(copy), poll=None) as runtime:
            handles = await runtime.recover()
            seconds = time.perf_counter() - start
            assert len(handles) == n, f"recovered {len(handles)} of {n} runs"
            return seconds

    try:
        return trio.run(recover)
    finally:
        shutil.rmtree(copy)


def resume_one_once(path: str) -> float:
    copy = copy_of(path)

    async def resume() -> float:
        start = time.perf_counter()
        async with durable.Runtime(durable.FileStore(copy), poll=None) as runtime:
            handle = await runtime.start(waiter, 7, id="r7")
            seconds = time.perf_counter() - start
            assert handle.status == "running"
            return seconds

    try:
        return trio.run(resume)
    finally:
        shutil.rmtree(copy)


def make_history(n: int, base: str | None) -> str:
    """A FileStore directory holding ``n`` finished runs (written through the store API:
    created, completed, ended, as a runtime leaves them; sync="none" to fill it fast)."""
    path = tempfile.mkdtemp(prefix="durable-bench-history-", dir=base)
    store = durable.FileStore(path, sync="none")
    args = lowlevel.dumps_value([[1], {}])
    result = lowlevel.dumps_value(1)

    async def fill() -> None:
        now = time.time()
        for i in range(n):
            writer = await store.create(lowlevel.RunStarted(f"done-{i}", "bench.history", args, now))
            assert writer is not None
            writer.append(lowlevel.RunCompleted(result, now))
            await writer.sync()
            writer.close()
            await store.ended(f"done-{i}", "completed")

    trio.run(fill)
    return path


def history_once(path: str, what: str) -> float:
    """One ``recover()`` (in a running Runtime) or one ``due_runs()`` on a fresh store object."""
    store = durable.FileStore(path)

    async def main() -> float:
        async with durable.Runtime(store, poll=None) as runtime:
            start = time.perf_counter()
            if what == "recover":
                found = await runtime.recover()
            else:
                found = await store.due_runs(time.time(), 100)
            seconds = time.perf_counter() - start
            assert not found, f"{what} found work in a store of finished runs"
            return seconds

    return trio.run(main)


def ls_once(path: str) -> float:
    """``durable ls --limit 50`` on the store, as a process: wall seconds."""
    command = [
        os.path.join(os.path.dirname(sys.executable), "durable"),
        "ls",
        "--limit",
        "50",
        "--store",
        path,
    ]
    # As an installed package runs: with its bytecode cached (the warm-up run writes it).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def history_figures(*, repeats: int, base: str | None, quick: bool) -> list[h.Figure]:
    figures = []
    for n in QUICK_HISTORY_SIZES if quick else HISTORY_SIZES:
        path = make_history(n, base)
        try:
            h.header(f"a worker's look for work in a store of {n:,} finished runs (FileStore)")
            recover, due, listing = h.measure_interleaved(
                [
                    functools.partial(history_once, path, "recover"),
                    functools.partial(history_once, path, "due"),
                    functools.partial(ls_once, path),
                ],
                repeats=repeats,
            )
            for name, timing in (
                (f"recover(), {n:,} finished runs", recover),
                (f"due_runs(), {n:,} finished runs", due),
            ):
                figures.append(
                    h.report(
                        h.Figure(name, timing.median * 1e3, "ms", 5, "<=", timing.spread, timing.best * 1e3)
                    )
                )
            ls_name = f"durable ls --limit 50, {n:,} runs (a process)"
            figures.append(
                h.report(h.Figure(ls_name, listing.median, "s", 0.3, "<=", listing.spread, listing.best))
            )
        finally:
            shutil.rmtree(path)
    return figures


def fsync_floor_once(path: str, n: int) -> float:
    """``n`` fdatasyncs of the store's journals from 16 threads at once."""
    import concurrent.futures  # noqa: PLC0415 - only for the floor

    runs = os.path.join(path, "runs")
    names = sorted(os.listdir(runs))[:n]
    fds = [os.open(os.path.join(runs, name), os.O_RDONLY) for name in names]
    try:
        with concurrent.futures.ThreadPoolExecutor(FSYNC_THREADS) as pool:
            start = time.perf_counter()
            list(pool.map(os.fdatasync, fds))
            return time.perf_counter() - start
    finally:
        for fd in fds:
            os.close(fd)


def collect(*, repeats: int, base: str | None, quick: bool = False) -> list[h.Figure]:
    """Measure and print every recovery figure; return those for the summary table."""
    figures = []
    for n in QUICK_SIZES if quick else SIZES:
        path = make_store(n, base)
        try:
            h.header(f"recovery of {n:,} unfinished runs (FileStore, sync='always')")
            recovered, floor = h.measure_interleaved(
                [functools.partial(recover_once, path, n), functools.partial(fsync_floor_once, path, n)],
                repeats=repeats,
            )
            scaled = 10_000 / n
            h.report(h.Figure("fdatasync floor (16 threads)", floor.median, "s"))
            figures.append(
                h.report(
                    h.Figure(
                        f"recover() of {n:,} runs, scaled to 10,000",
                        recovered.median * scaled,
                        "s",
                        2.0,
                        "<=",
                        recovered.spread,
                        recovered.best * scaled,
                    )
                )
            )
            if n == max(QUICK_SIZES if quick else SIZES):
                one = h.measure(functools.partial(resume_one_once, path), repeats=repeats)
                figures.append(
                    h.report(
                        h.Figure(
                            f"one crashed run resumed (store of {n:,} runs)",
                            one.median * 1e3,
                            "ms",
                            50,
                            "<=",
                            one.spread,
                            one.best * 1e3,
                        )
                    )
                )
        finally:
            shutil.rmtree(path)
    return figures + history_figures(repeats=repeats, base=base, quick=quick)


def main(argv: Sequence[str] | None = None) -> None:
    options = h.arguments(__doc__.splitlines()[0], argv)
    h.main_table(collect(repeats=options.repeats, base=options.dir, quick=options.quick))


if __name__ == "__main__":
    main()
