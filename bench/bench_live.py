"""Live execution: durable steps per second, beside the floor each is bounded by.

Run it with ``.venv/bin/python bench/bench_live.py`` (``--help`` for options).

Theory of operation
-------------------
A step is one activity call: journal ``ActivityScheduled``, run the activity,
journal ``ActivityCompleted``, make it durable as the store's ``sync`` mode
says, feed the result to the workflow. Each case runs the ``steps`` workflow
(``n`` async activities that return at once) inside a ``durable.Runtime`` and
times ``start`` to ``result`` on a fresh store, so the figure is what durable
adds per step:

* ``FileStore(sync="none")``: pure CPU cost (SPEC §8: >= 70,000 steps/s), at
  two sizes to show that a live run never replays its own history (N steps, O(N));
* ``MemoryStore``: the same without a file (target: FileStore within 90% of it);
* ``FileStore(sync="always")``: one fdatasync per step, so it is bounded by the
  single-thread fdatasync floor measured here (``os.write`` + ``os.fdatasync``
  of a record-sized append to a temporary file); target: within 85% of it.
  Beside it, for information, the same with each record written over space
  written and made durable beforehand (``os.pwrite`` + ``os.fdatasync``): what a
  journal that reserved its space ahead could reach, since such an fdatasync
  has no metadata to write;
* sync activities (``FileStore(sync="none")``): each attempt is handed to a
  worker thread with ``trio.to_thread.run_sync``, so the step rate is bounded
  by that hand-off, measured here too;
* ``FileStore(sync="batch")`` with 100 runs at once in one Runtime: group
  commit (target >= 15,000 durable steps/s). Its floor is how many
  fdatasyncs of different files 16 threads complete per second, measured
  here; the same 100 runs with ``sync="none"`` show the CPU ceiling.

A live figure and its floor are measured in turns within each repeat, so that
the ratio between them holds even when the machine's speed drifts.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import _harness as h
import attrs
import trio

import durable

RECORD = b"r" * 80  # about one ActivityScheduled + ActivityCompleted pair
THREADS = 16  # what FileStore's group commit issues at once
RUNS = 100


@attrs.frozen
class Sizes:
    """How many steps each case runs."""

    none: int
    none_small: int
    always: int
    sync_activities: int
    steps_per_run: int
    parallel_rounds: int


FULL = Sizes(
    none=10_000, none_small=1_000, always=1_000, sync_activities=2_000, steps_per_run=100, parallel_rounds=20
)
QUICK = Sizes(
    none=5_000, none_small=500, always=300, sync_activities=1_000, steps_per_run=30, parallel_rounds=10
)


# --- durable, live -----------------------------------------------------------


def live_once(
    make_store: Callable[[str], durable.Store], workflow: durable.Workflow[..., Any], n: int, base: str | None
) -> Callable[[], float]:
    """Seconds from ``start`` to ``result`` of one run of ``n`` steps on a fresh store."""
    expected = n * (n - 1) // 2

    async def main(store: durable.Store) -> float:
        async with durable.Runtime(store) as runtime:
            start = time.perf_counter()
            handle = await runtime.start(workflow, n, id="live")
            result = await handle.result()
            elapsed = time.perf_counter() - start
        if result != expected:
            raise RuntimeError(f"the run returned {result!r}, not {expected}")
        return elapsed

    def once() -> float:
        with tempfile.TemporaryDirectory(dir=base) as directory:
            return trio.run(main, make_store(directory))

    return once


def concurrent_once(sync: str, runs: int, steps: int, base: str | None) -> Callable[[], float]:
    """Seconds for ``runs`` runs of ``steps`` steps each, all at once in one Runtime.

    The clock starts once every run is created (each creation fsyncs its new
    journal and the directory, whatever the sync mode), when the runs start
    stepping.
    """
    expected = steps * (steps - 1) // 2

    async def main(store: durable.Store) -> float:
        async with durable.Runtime(store) as runtime:
            handles = [await runtime.start(h.steps, steps, id=f"run-{i}") for i in range(runs)]
            start = time.perf_counter()
            results = [await handle.result() for handle in handles]
            elapsed = time.perf_counter() - start
        if results != [expected] * runs:
            raise RuntimeError(f"the runs returned {sorted(set(results))!r}, not {expected}")
        return elapsed

    def once() -> float:
        with tempfile.TemporaryDirectory(dir=base) as directory:
            return trio.run(main, durable.FileStore(directory, sync=sync))

    return once


# --- floors ------------------------------------------------------------------


def fdatasync_once(count: int, base: str | None) -> Callable[[], float]:
    """Seconds for ``count`` record-sized appends, each followed by fdatasync, from one thread."""

    def once() -> float:
        with tempfile.TemporaryDirectory(dir=base) as directory:
            fd = os.open(os.path.join(directory, "floor"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, RECORD)
                os.fdatasync(fd)
                start = time.perf_counter()
                for _ in range(count):
                    os.write(fd, RECORD)
                    os.fdatasync(fd)
                return time.perf_counter() - start
            finally:
                os.close(fd)

    return once


def overwrite_fdatasync_once(count: int, base: str | None) -> Callable[[], float]:
    """Seconds for ``count`` record-sized writes over space written (zeros) and made durable
    beforehand, each followed by fdatasync, from one thread.

    Not durable's pattern (its journals grow by appends): a file whose size and
    blocks do not change needs no metadata in its fdatasync, only the data, so this
    shows what a journal that reserved its space ahead could reach.
    """

    def once() -> float:
        with tempfile.TemporaryDirectory(dir=base) as directory:
            fd = os.open(os.path.join(directory, "floor"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.write(fd, bytes(len(RECORD) * (count + 1)))
                os.fsync(fd)
                start = time.perf_counter()
                for at in range(0, len(RECORD) * count, len(RECORD)):
                    os.pwrite(fd, RECORD, at)
                    os.fdatasync(fd)
                return time.perf_counter() - start
            finally:
                os.close(fd)

    return once


def parallel_fdatasync_once(files: int, rounds: int, base: str | None) -> Callable[[], float]:
    """Seconds for ``rounds`` appends + fdatasyncs of each of ``files`` files, from 16 threads."""

    def worker(fds: list[int]) -> None:
        for _ in range(rounds):
            for fd in fds:
                os.write(fd, RECORD)
                os.fdatasync(fd)

    def once() -> float:
        with tempfile.TemporaryDirectory(dir=base) as directory:
            fds = [
                os.open(os.path.join(directory, f"f{i}"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
                for i in range(files)
            ]
            try:
                threads = [threading.Thread(target=worker, args=(fds[i::THREADS],)) for i in range(THREADS)]
                start = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                return time.perf_counter() - start
            finally:
                for fd in fds:
                    os.close(fd)

    return once


def to_thread_once(count: int) -> Callable[[], float]:
    """Seconds for ``count`` ``trio.to_thread.run_sync`` round trips of a function that returns."""

    async def main() -> float:
        start = time.perf_counter()
        for _ in range(count):
            await trio.to_thread.run_sync(_nothing)
        return time.perf_counter() - start

    return lambda: trio.run(main)


def _nothing() -> None:
    pass


# --- report ------------------------------------------------------------------


def _none(directory: str) -> durable.Store:
    return durable.FileStore(directory, sync="none")


def _always(directory: str) -> durable.Store:
    return durable.FileStore(directory, sync="always")


def _memory(_directory: str) -> durable.Store:
    return durable.MemoryStore()


def collect(*, repeats: int, base: str | None, quick: bool = False) -> list[h.Figure]:
    """Measure and print every live figure; return them for the summary table."""
    sizes = QUICK if quick else FULL
    out: list[h.Figure] = []

    def rate(
        label: str, count: int, timing: h.Timing, unit: str, bound: float | None = None, op: str = "ref"
    ) -> h.Figure:
        return h.report(h.rate(label, count, timing, unit, bound, op))

    n, small = sizes.none, sizes.none_small
    h.header(f"async activities, FileStore(sync='none'): {small:,} and {n:,} steps (CPU only)")
    small_t, large_t, memory_t = h.measure_interleaved(
        [
            live_once(_none, h.steps, small, base),
            live_once(_none, h.steps, n, base),
            live_once(_memory, h.steps, n, base),
        ],
        repeats=repeats,
    )
    rate(f"sync='none', {small:,} steps: steps/s", small, small_t, "steps/s", 70_000, ">=")
    out.append(rate(f"live sync='none', {n:,} steps: steps/s", n, large_t, "steps/s", 70_000, ">="))
    ratio = h.median_ratio(large_t, small_t)
    label = f"live sync='none': time ratio {n // small}x steps (linear: {n // small})"
    out.append(h.report(h.Figure(label, ratio, "x", 1.2 * n / small, "<=")))
    out.append(rate(f"live MemoryStore, {n:,} steps: steps/s (reference)", n, memory_t, "steps/s"))
    # SPEC §8: FileStore within 90% of MemoryStore on the same workflow.
    of_memory = h.median_ratio(memory_t, large_t)  # time on MemoryStore / time on FileStore
    out.append(h.report(h.Figure("live sync='none': fraction of MemoryStore", of_memory, "x", 0.9, ">=")))

    n = sizes.always
    h.header(f"async activities, FileStore(sync='always'): {n:,} steps, one fdatasync each")
    floor_t, live_t, overwrite_t = h.measure_interleaved(
        [fdatasync_once(n, base), live_once(_always, h.steps, n, base), overwrite_fdatasync_once(n, base)],
        repeats=repeats,
    )
    floor = rate("floor: single-thread write + fdatasync per second", n, floor_t, "fdatasync/s")
    out.append(floor)
    out.append(rate(f"live sync='always', {n:,} steps: steps/s", n, live_t, "steps/s", floor.value))
    fraction = h.median_ratio(floor_t, live_t)
    out.append(
        h.report(h.Figure("live sync='always': fraction of fdatasync floor", fraction, "x floor", 0.85, ">="))
    )
    out.append(rate("(overwrite of reserved space + fdatasync per second)", n, overwrite_t, "fdatasync/s"))

    n = sizes.sync_activities
    h.header(f"sync activities (trio.to_thread hand-off), FileStore(sync='none'): {n:,} steps")
    floor_t, live_t = h.measure_interleaved(
        [to_thread_once(n), live_once(_none, h.sync_steps, n, base)], repeats=repeats
    )
    floor = rate("floor: trio.to_thread.run_sync round trips per second", n, floor_t, "hand-offs/s")
    out.append(floor)
    out.append(rate(f"live sync activities, {n:,} steps: steps/s", n, live_t, "steps/s", floor.value))
    fraction = h.median_ratio(floor_t, live_t)
    out.append(h.report(h.Figure("live sync activities: fraction of hand-off floor", fraction, "x floor")))

    per_run = sizes.steps_per_run
    total = RUNS * per_run
    h.header(f"{RUNS} concurrent runs of {per_run} steps in one Runtime ({total:,} steps)")
    floor_t, batch_t, none_t = h.measure_interleaved(
        [
            parallel_fdatasync_once(RUNS, sizes.parallel_rounds, base),
            concurrent_once("batch", RUNS, per_run, base),
            concurrent_once("none", RUNS, per_run, base),
        ],
        repeats=repeats,
    )
    syncs = RUNS * sizes.parallel_rounds
    floor = rate(f"floor: fdatasyncs of {RUNS} files from {THREADS} threads", syncs, floor_t, "fdatasync/s")
    out.append(floor)
    out.append(
        rate(f"live sync='batch', {RUNS} runs: durable steps/s", total, batch_t, "steps/s", 15_000, ">=")
    )
    fraction = h.median_ratio(floor_t, batch_t) * total / syncs
    out.append(
        h.report(h.Figure("live sync='batch': fraction of parallel fdatasync floor", fraction, "x floor"))
    )
    out.append(rate(f"live sync='none', {RUNS} runs: steps/s (CPU ceiling)", total, none_t, "steps/s"))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    options = h.arguments(__doc__.splitlines()[0], argv)
    h.main_table(collect(repeats=options.repeats, base=options.dir, quick=options.quick))


if __name__ == "__main__":
    main()
