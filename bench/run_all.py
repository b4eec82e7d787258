"""Every benchmark at modest sizes, then one summary table: figure, target/floor, measured, result.

Run it with ``.venv/bin/python bench/run_all.py`` (``--full`` for the full sizes,
``--help`` for the other options). It prints figures and never fails on them:
a missed target reads ``miss``, and the exit status stays 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import _harness as h
import bench_codecs
import bench_live
import bench_loops
import bench_recovery
import bench_replay
import bench_sim
import bench_typed
import bench_waiting


def main(argv: Sequence[str] | None = None) -> None:
    options = h.arguments(__doc__.splitlines()[0], argv, quick=True)
    print(h.environment())
    start = time.perf_counter()
    figures = []
    for bench in (
        bench_replay,
        bench_live,
        bench_recovery,
        bench_sim,
        bench_waiting,
        bench_loops,
        bench_typed,
        bench_codecs,
    ):
        figures += bench.collect(repeats=options.repeats, base=options.dir, quick=options.quick)
    h.main_table(figures)
    print(f"({time.perf_counter() - start:.0f} s, median of {options.repeats} repeats after one warm-up)")


if __name__ == "__main__":
    main()
