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

Each figure is printed for both loops with the ratio asyncio / trio of the
figure itself (the median of the repeat-by-repeat ratios): below 1 for
steps/s, above 1 for µs, means asyncio is slower.

Beside them, in the same turns, the floors of what the guest design costs on
asyncio, measured with trio and asyncio alone (no durable): a trio task in a
guest awaiting one asyncio task per step (what an ``async def`` activity's
hand-off costs), ``trio.to_thread.run_sync`` round trips in a guest (a sync
activity's), and a call from asyncio into a running guest and back (what each
client call crosses). Nothing asserts.
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
import attrs
import bench_live
import bench_replay
import outcome
import trio

import durable

LOOPS = ("trio", "asyncio")


def _run_on(loop: str, main: Callable[[], Awaitable[float]]) -> float:
    async def call() -> float:
        return await main()

    return trio.run(call) if loop == "trio" else asyncio.run(call())


# --- durable on each loop ----------------------------------------------------


def live_once(
    loop: str, make_store: Callable[[str], durable.Store], workflow: Any, n: int, base: str | None
) -> Callable[[], float]:
    """Seconds from ``start`` to ``result`` of one run of ``n`` steps on a fresh store."""
    expected = n * (n - 1) // 2

    def once() -> float:
        with tempfile.TemporaryDirectory(dir=base) as directory:
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


def resume_once(loop: str, journal: bench_replay.Journal, base: str | None) -> Callable[[], float]:
    """Seconds of ``durable.run(..., loop=loop)`` resuming a copy of the cut journal."""
    expected = journal.n * (journal.n + 1) // 2

    def once() -> float:
        with tempfile.TemporaryDirectory(dir=base) as directory:
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
        if await handle.status() != "queued":  # submitted, and no worker takes it
            raise RuntimeError("the run asked about is not queued")
    return time.perf_counter() - start


def _none(directory: str) -> durable.Store:
    return durable.FileStore(directory, sync="none")


def _memory(_directory: str) -> durable.Store:
    return durable.MemoryStore()


# --- floors: trio and asyncio alone, no durable --------------------------------


async def _in_guest(fn: Callable[[], Awaitable[float]]) -> float:
    """``fn()`` as a bare trio guest run on the running asyncio loop (how durable hosts it)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[outcome.Outcome[float]] = loop.create_future()
    trio.lowlevel.start_guest_run(
        fn,
        run_sync_soon_threadsafe=loop.call_soon_threadsafe,
        run_sync_soon_not_threadsafe=loop.call_soon,
        done_callback=done.set_result,
        host_uses_signal_set_wakeup_fd=True,
    )
    return (await done).unwrap()


async def _answer(i: int) -> int:
    return i


def hand_off_floor_once(n: int) -> Callable[[], float]:
    """Seconds for ``n`` asyncio tasks that return at once, each awaited from a trio guest task
    the way durable awaits an ``async def`` activity on asyncio (a checkpoint until it is done)."""

    async def steps() -> float:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for i in range(n):
            task = loop.create_task(_answer(i))
            while not task.done():
                await trio.lowlevel.checkpoint()
            task.result()
        return time.perf_counter() - start

    return lambda: asyncio.run(_in_guest(steps))


def to_thread_floor_once(n: int) -> Callable[[], float]:
    """Seconds for ``n`` ``trio.to_thread.run_sync`` round trips from a trio guest on asyncio."""

    async def round_trips() -> float:
        start = time.perf_counter()
        for _ in range(n):
            await trio.to_thread.run_sync(_nothing)
        return time.perf_counter() - start

    return lambda: asyncio.run(_in_guest(round_trips))


def _nothing() -> None:
    pass


def crossing_floor_once(calls: int) -> Callable[[], float]:
    """Seconds for ``calls`` calls from asyncio into a running trio guest and back: a trio
    task started through the guest's token that settles an asyncio future (as a client call
    on asyncio does, without its work)."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[tuple[trio.lowlevel.TrioToken, trio.Nursery]] = loop.create_future()
        stop = trio.Event()

        async def guest() -> float:
            async with trio.open_nursery() as nursery:
                loop.call_soon(ready.set_result, (trio.lowlevel.current_trio_token(), nursery))
                await stop.wait()
            return 0.0

        ended = asyncio.ensure_future(_in_guest(guest))
        token, nursery = await ready
        start = time.perf_counter()
        for _ in range(calls):
            result: asyncio.Future[None] = loop.create_future()
            token.run_sync_soon(nursery.start_soon, _settle_soon, result)
            await result
        elapsed = time.perf_counter() - start
        token.run_sync_soon(stop.set)
        await ended
        return elapsed

    return lambda: asyncio.run(main())


async def _settle_soon(result: asyncio.Future[None]) -> None:
    """A trio task of the guest that hands ``None`` back to the asyncio caller."""
    result.get_loop().call_soon(result.set_result, None)


# --- the comparison ------------------------------------------------------------


@attrs.frozen
class Row:
    """One line of the side-by-side table: a figure on trio, on asyncio, and their ratio
    (a floor has no trio figure and no ratio)."""

    name: str
    unit: str
    trio: h.Figure | None
    asyncio: h.Figure
    ratio: h.Figure | None


def _ratio(name: str, asyncio_t: h.Timing, trio_t: h.Timing, *, rate: bool) -> h.Figure:
    """asyncio's figure over trio's, repeat by repeat (of a rate: trio's time over asyncio's)."""
    pairs = zip(asyncio_t.times, trio_t.times, strict=True)
    ratio = statistics.median(t / a if rate else a / t for a, t in pairs)
    return h.report(h.Figure(f"{name}: asyncio / trio", ratio, "x trio"))


def _figure(name: str, count: int, unit: str, timing: h.Timing, *, rate: bool) -> h.Figure:
    if rate:
        return h.report(h.rate(name, count, timing, unit))
    return h.report(h.cost(name, count, timing, None, "ref"))


def _pair(name: str, count: int, unit: str, trio_t: h.Timing, asyncio_t: h.Timing, *, rate: bool) -> Row:
    """The figures of one comparison, printed as measured."""
    trio_f = _figure(f"{name}, trio", count, unit, trio_t, rate=rate)
    asyncio_f = _figure(f"{name}, asyncio", count, unit, asyncio_t, rate=rate)
    return Row(name, unit, trio_f, asyncio_f, _ratio(name, asyncio_t, trio_t, rate=rate))


def _floor(name: str, count: int, unit: str, timing: h.Timing, *, rate: bool) -> Row:
    return Row(name, unit, None, _figure(name, count, unit, timing, rate=rate), None)


def measure(*, repeats: int, base: str | None, quick: bool) -> list[Row]:
    """Measure every comparison, trio and asyncio in turns, printing each figure as it comes."""
    n, sync_n, calls = (2_000, 500, 200) if quick else (10_000, 2_000, 1_000)
    rows: list[Row] = []

    def interleaved(onces: Sequence[Callable[[], float]]) -> list[h.Timing]:
        return h.measure_interleaved(onces, repeats=repeats)

    h.header(f"live: async activities, FileStore(sync='none'), {n:,} steps")
    trio_t, asyncio_t = interleaved([live_once(loop, _none, h.steps, n, base) for loop in LOOPS])
    rows.append(_pair("live async, FileStore(sync='none')", n, "steps/s", trio_t, asyncio_t, rate=True))

    h.header(f"live: async activities, MemoryStore, {n:,} steps; floor: asyncio tasks awaited from trio")
    trio_t, asyncio_t, floor_t = interleaved(
        [*(live_once(loop, _memory, h.steps, n, base) for loop in LOOPS), hand_off_floor_once(n)]
    )
    rows.append(_pair("live async, MemoryStore", n, "steps/s", trio_t, asyncio_t, rate=True))
    rows.append(_floor("floor: asyncio task awaited from a trio guest", n, "steps/s", floor_t, rate=True))

    h.header(f"live: sync activities, FileStore(sync='none'), {sync_n:,} steps; floors: to_thread")
    trio_t, asyncio_t, trio_floor_t, guest_floor_t = interleaved(
        [
            *(live_once(loop, _none, h.sync_steps, sync_n, base) for loop in LOOPS),
            bench_live.to_thread_once(sync_n),
            to_thread_floor_once(sync_n),
        ]
    )
    rows.append(
        _pair("live sync (threads), FileStore(sync='none')", sync_n, "steps/s", trio_t, asyncio_t, rate=True)
    )
    rows.append(
        _pair("floor: to_thread.run_sync round trips", sync_n, "/s", trio_floor_t, guest_floor_t, rate=True)
    )

    size = bench_replay.SIZES[-1]
    h.header(f"resume via durable.run(loop=...): {size:,} completed activities")
    journal = bench_replay.Journal(size, base)
    trio_t, asyncio_t = interleaved([resume_once(loop, journal, base) for loop in LOOPS])
    rows.append(
        _pair(f"resume of {size:,} activities, per activity", size, "us", trio_t, asyncio_t, rate=False)
    )

    h.header(f"a client call: ClientHandle.status(), {calls:,} calls; floor: a call into a trio guest")
    with tempfile.TemporaryDirectory(dir=base) as directory:
        trio_t, held_t, alone_t, floor_t = interleaved(
            [
                client_once("trio", directory, calls, held=False),
                client_once("asyncio", directory, calls, held=True),
                client_once("asyncio", directory, calls, held=False),
                crossing_floor_once(calls),
            ]
        )
    held = _pair("status() (asyncio: in `async with Client`)", calls, "us", trio_t, held_t, rate=False)
    rows.append(held)
    name = "status() (asyncio: a guest per call)"
    alone = _figure(f"{name}, asyncio", calls, "us", alone_t, rate=False)
    rows.append(Row(name, "us", held.trio, alone, _ratio(name, alone_t, trio_t, rate=False)))
    rows.append(_floor("floor: asyncio -> running trio guest -> asyncio", calls, "us", floor_t, rate=False))
    return rows


def collect(*, repeats: int, base: str | None, quick: bool = False) -> list[h.Figure]:
    """Measure and print every figure, trio and asyncio in turns; return them (run_all.py)."""
    out: list[h.Figure] = []
    for row in measure(repeats=repeats, base=base, quick=quick):
        if row.trio is not None and row.trio not in out:
            out.append(row.trio)
        out.append(row.asyncio)
        if row.ratio is not None:
            out.append(row.ratio)
    return out


def table(rows: Sequence[Row]) -> str:
    """The side-by-side table: figure, trio, asyncio, asyncio / trio, spread."""
    lines = [("figure", "trio", "asyncio", "asyncio / trio", "spread")]
    for row in rows:
        spread = max(f.spread or 0.0 for f in (row.trio, row.asyncio) if f is not None)
        lines.append(
            (
                row.name,
                "-" if row.trio is None else f"{h.number(row.trio.value)} {row.unit}",
                f"{h.number(row.asyncio.value)} {row.unit}",
                "-" if row.ratio is None else f"{row.ratio.value:.2f}x",
                f"{spread:.0%}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = [
        " | ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    out.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    options = h.arguments(__doc__.splitlines()[0], argv)
    print(h.environment())
    start = time.perf_counter()
    rows = measure(repeats=options.repeats, base=options.dir, quick=options.quick)
    print("\n" + table(rows))
    print(
        "\n(asyncio / trio: of the figure itself, the median of the repeat-by-repeat ratios; spread: "
        "(slowest - fastest) / median of the repeats, the larger of the two loops'; "
        f"{time.perf_counter() - start:.0f} s, median of {options.repeats} repeats after one warm-up)"
    )
    print(h.environment())


if __name__ == "__main__":
    main()
