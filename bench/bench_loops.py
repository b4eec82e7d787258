"""trio and asyncio side by side: live steps, resume (replay), and a client call on each loop.

Run it with ``.venv/bin/python bench/bench_loops.py`` (``--help`` for options).

Theory of operation
-------------------
On asyncio, durable runs its trio machinery as a guest on the asyncio loop
(``durable/_asyncio.py``): the workflow's steps are the same trio code, and
what asyncio adds is the guest's scheduling (each trio tick is a callback of
the asyncio loop) and, for an ``async def`` activity, one asyncio task per
attempt, awaited from trio. Every figure below is measured on both loops in
turns (``measure_interleaved``), the asyncio one through the public API only:
``async with durable.Runtime(...)`` inside ``asyncio.run``, ``durable.run(...,
loop="asyncio")``.

(a) live, async activities that return at once: one run of N steps, from
    ``start`` to ``result``, on ``FileStore(sync="none")`` (CPU only) and on
    the MemoryStore: steps per second.
(b) live, sync activities (each in a worker thread): steps per second.
(c) resume: ``durable.run`` of a journal of 10,000 completed activities cut
    before the last one completes (as ``bench_replay.py`` builds it), µs per
    activity, start-up of the loop included.
(d) a client call: ``ClientHandle.status()`` of a run in a FileStore, µs per
    call. On asyncio a call crosses into the guest and back; inside ``async
    with durable.Client(...)`` the guest stays up between calls, outside it
    each call starts and stops it.

The ratio asyncio/trio is printed for each (above 1: asyncio is faster).
Nothing asserts.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import _harness as h
import bench_replay
import trio

import durable

LOOPS = ("trio", "asyncio")


def _run_on(loop: str, main: Callable[[], Awaitable[float]]) -> float:
    async def call() -> float:
        return await main()

    return trio.run(call) if loop == "trio" else asyncio.run(call())


def live_once(
    loop: str, make_store: Callable[[str], durable.Store], workflow: Any, n: int
) -> Callable[[], float]:
    """Seconds from ``start`` to ``result`` of one run of ``n`` steps on a fresh store."""
    expected = n * (n - 1) // 2

    def once() -> float:
        with tempfile.TemporaryDirectory() as directory:
            store = make_store(directory)

            async def main() -> float:
                async with durable.Runtime(store) as runtime:
                    start = time.perf_counter()
                    result = await (await runtime.start(workflow, n, id="live")).result()
                    elapsed = time.perf_counter() - start
                if result != expected:
                    raise RuntimeError(f"the run returned {result!r}, not {expected}")
                return elapsed

            return _run_on(loop, main)

    return once


def resume_once(loop: str, journal: bench_replay.Journal) -> Callable[[], float]:
    """Seconds of ``durable.run(..., loop=loop)`` resuming a copy of the cut journal."""
    expected = journal.n * (journal.n + 1) // 2

    def once() -> float:
        with tempfile.TemporaryDirectory() as directory:
            store = durable.FileStore(directory, sync="none")
            bench_replay._write_journal(Path(store.journal_path(bench_replay.RUN_ID)), journal.data)
            start = time.perf_counter()
            result = durable.run(h.steps, journal.n + 1, id=bench_replay.RUN_ID, store=store, loop=loop)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - start
            if result != expected:
                raise RuntimeError(f"resume returned {result!r}, not {expected}")
            return elapsed

    return once


def client_once(loop: str, directory: str, calls: int, *, held: bool) -> Callable[[], float]:
    """Seconds for ``calls`` calls of ``ClientHandle.status()`` (``held``: inside ``async with``)."""

    def once() -> float:
        async def main() -> float:
            client = durable.Client(directory)
            handle = await client.start(h.steps, 1, id="asked")
            if held:
                async with client:
                    return await _status_calls(handle, calls)
            return await _status_calls(handle, calls)

        return _run_on(loop, main)

    return once


async def _status_calls(handle: durable.ClientHandle, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await handle.status()
    return time.perf_counter() - start


def _none(directory: str) -> durable.Store:
    return durable.FileStore(directory, sync="none")


def _memory(_directory: str) -> durable.Store:
    return durable.MemoryStore()


def _ratio(name: str, asyncio_t: h.Timing, trio_t: h.Timing, *, faster_is_smaller: bool = True) -> h.Figure:
    """asyncio's speed over trio's, repeat by repeat (above 1: asyncio is faster)."""
    ratio = statistics.median(t / a for a, t in zip(asyncio_t.times, trio_t.times, strict=True))
    return h.report(h.Figure(name, ratio if faster_is_smaller else 1 / ratio, "x trio"))


def collect(*, repeats: int, base: str | None, quick: bool = False) -> list[h.Figure]:
    """Measure and print every figure, trio and asyncio in turns; return them."""
    del base  # temporary directories only: the figures are CPU-bound
    n, sync_n, calls = (2_000, 500, 200) if quick else (10_000, 2_000, 1_000)
    out: list[h.Figure] = []

    for label, store, workflow, count in (
        ("async activities, FileStore(sync='none')", _none, h.steps, n),
        ("async activities, MemoryStore", _memory, h.steps, n),
        ("sync activities (threads), FileStore(sync='none')", _none, h.sync_steps, sync_n),
    ):
        h.header(f"live: {label}, {count:,} steps")
        timings = h.measure_interleaved(
            [live_once(loop, store, workflow, count) for loop in LOOPS], repeats=repeats
        )
        for loop, timing in zip(LOOPS, timings, strict=True):
            out.append(h.report(h.rate(f"live {label}, {loop}: steps/s", count, timing, "steps/s")))
        out.append(_ratio(f"live {label}: asyncio / trio", timings[1], timings[0]))

    size = bench_replay.SIZES[-1]
    h.header(f"resume via durable.run(loop=...): {size:,} completed activities")
    journal = bench_replay.Journal(size, None)
    timings = h.measure_interleaved([resume_once(loop, journal) for loop in LOOPS], repeats=repeats)
    for loop, timing in zip(LOOPS, timings, strict=True):
        out.append(h.report(h.cost(f"resume, {loop}: us per activity", size, timing, None, "ref")))
    out.append(_ratio("resume: asyncio / trio", timings[1], timings[0]))

    h.header(f"a client call: ClientHandle.status(), {calls:,} calls")
    with tempfile.TemporaryDirectory() as directory:
        onces = [
            client_once("trio", directory, calls, held=False),
            client_once("asyncio", directory, calls, held=True),
            client_once("asyncio", directory, calls, held=False),
        ]
        trio_t, held_t, alone_t = h.measure_interleaved(onces, repeats=repeats)
    out.append(h.report(h.cost("status(), trio: us per call", calls, trio_t, None, "ref")))
    out.append(
        h.report(h.cost("status(), asyncio in `async with Client`: us per call", calls, held_t, None, "ref"))
    )
    out.append(
        h.report(h.cost("status(), asyncio, a guest per call: us per call", calls, alone_t, None, "ref"))
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    options = h.arguments(__doc__.splitlines()[0], argv)
    print(h.environment())
    h.main_table(collect(repeats=options.repeats, base=options.dir, quick=options.quick))


if __name__ == "__main__":
    main()
