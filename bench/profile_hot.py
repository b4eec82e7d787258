"""Profiles of the hot paths the benchmarks time: where replay and live steps spend their time.

Run it with ``.venv/bin/python bench/profile_hot.py [replay|live|batch ...]``
(``--tool cprofile`` to force cProfile; the default is pyinstrument when it is
installed: ``.venv/bin/pip install pyinstrument``). It prints, for each case,
pyinstrument's call tree (a sampling profiler: shares are close to the real
ones) or cProfile's functions by self time (deterministic: exact call counts,
but it inflates the cost of small Python functions).

Cases:

* ``replay``: ``scan`` + ``Replay`` of the journal of 10,000 completed activities;
* ``live``: one run of 10,000 async activities on ``FileStore(sync="none")``;
* ``batch``: 100 concurrent runs of 50 steps on ``FileStore(sync="batch")``
  (the main thread only: the fdatasyncs run in worker threads).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
from collections.abc import Callable, Sequence

import _harness as h
import bench_live
import bench_replay

from durable import lowlevel

REPEATS = 3


def replay_case(base: str | None) -> Callable[[], object]:
    journal = bench_replay.Journal(10_000, base)
    return lambda: bench_replay.feed(lowlevel.scan(journal.data, "<bench>").events)


def live_case(base: str | None) -> Callable[[], object]:
    return bench_live.live_once(bench_live._none, h.steps, 10_000, base)


def batch_case(base: str | None) -> Callable[[], object]:
    return bench_live.concurrent_once("batch", bench_live.RUNS, 50, base)


CASES = {"replay": replay_case, "live": live_case, "batch": batch_case}


def with_cprofile(run: Callable[[], object]) -> None:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(REPEATS):
        run()
    profile.disable()
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(20)


def with_pyinstrument(run: Callable[[], object]) -> None:
    import pyinstrument  # noqa: PLC0415 - optional

    profiler = pyinstrument.Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    for _ in range(REPEATS):
        run()
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", choices=list(CASES), help="what to profile (default: all)")
    default_tool = "pyinstrument" if importlib.util.find_spec("pyinstrument") else "cprofile"
    parser.add_argument("--tool", choices=["pyinstrument", "cprofile"], default=default_tool)
    parser.add_argument("--dir", default=None, help="directory for temporary stores (default: $TMPDIR)")
    options = parser.parse_args(argv)
    profile = with_pyinstrument if options.tool == "pyinstrument" else with_cprofile
    for name in options.cases or list(CASES):
        run = CASES[name](options.dir)
        run()  # warm-up
        h.header(f"{name}: {options.tool}, {REPEATS} runs")
        profile(run)


if __name__ == "__main__":
    main()
