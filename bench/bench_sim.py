"""sim.explore throughput: schedules per second, simulated steps per second, a 100-step workflow.

Figures (SPEC §8, issue 13: ``sim.explore`` of a 100-step workflow, every
single-crash point, in <= 3 s on the development machine):

* the time to explore every single-crash point of ``steps(100)``
  (``max_crashes=1``, no hash-seed replay: that costs two interpreter starts,
  measured on its own below, and runs while the schedules are played), as
  ``sim.explore`` does it (in this process), with the schedules in one forked
  worker per core (``Simulator(workers=None)``), and with the hash-seed replay
  as ``sim.explore``'s defaults have it;
* schedules per second and simulated activity steps per second over that
  exploration (a step counted once per lifetime that runs it);
* the same for a 20-step workflow with double crashes, and the hash-seed
  replay's fixed cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import _harness as h

import sim

FULL = (100, 20)
QUICK = (40, 10)


def _explore(
    n: int, max_crashes: int, hash_seeds: tuple[int, ...] = (), workers: int | None = 1
) -> tuple[float, sim.Report]:
    simulator = sim.Simulator(hash_seeds=hash_seeds, workers=workers)
    reports: list[sim.Report] = []
    seconds = h.timed(lambda: reports.append(simulator.explore(h.steps, n, max_crashes=max_crashes)))
    return seconds, reports[0]


def _steps(report: sim.Report) -> int:
    """Activity executions and replays the simulator ran, over every schedule (an estimate)."""
    per_schedule = len([e for e in report.reference.final_events if type(e).__name__ == "ActivityScheduled"])
    return report.schedules * per_schedule


def collect(*, repeats: int, base: str | None, quick: bool = False) -> list[h.Figure]:
    """Measure and print every simulator figure; return them for the summary table."""
    single, double = QUICK if quick else FULL
    out: list[h.Figure] = []
    h.header(f"sim.explore of steps({single}), every single-crash point")
    last: list[sim.Report] = []

    def once_single() -> float:
        seconds, report = _explore(single, 1)
        last[:] = [report]
        return seconds

    timing = h.measure(once_single, repeats=max(1, repeats // 2))
    report = last[0]
    bound = 3.0 if single == 100 else None
    out.append(
        h.report(
            h.Figure(
                f"explore steps({single}), single crashes: seconds",
                timing.median,
                "s",
                bound,
                "<=" if bound else "ref",
                timing.spread,
                timing.best,
            )
        )
    )
    out.append(
        h.report(h.rate(f"explore steps({single}): schedules/s", report.schedules, timing, "schedules/s"))
    )
    seeded = h.measure(lambda: _explore(single, 1, hash_seeds=(1, 2))[0], repeats=max(1, repeats // 2))
    out.append(
        h.report(
            h.Figure(
                f"explore steps({single}), single crashes, with the hash-seed replay: seconds",
                seeded.median,
                "s",
                spread=seeded.spread,
                best=seeded.best,
            )
        )
    )
    forked = h.measure(lambda: _explore(single, 1, workers=None)[0], repeats=max(1, repeats // 2))
    out.append(
        h.report(
            h.Figure(
                f"explore steps({single}), single crashes, a worker per core: seconds",
                forked.median,
                "s",
                bound,
                "<=" if bound else "ref",
                forked.spread,
                forked.best,
            )
        )
    )
    out.append(
        h.report(h.rate(f"explore steps({single}): simulated steps/s", _steps(report), timing, "steps/s"))
    )

    h.header(f"sim.explore of steps({double}), single and double crashes")
    timing = h.measure(lambda: _explore(double, 2)[0], repeats=max(1, repeats // 2))
    _, report = _explore(double, 2)
    out.append(
        h.report(
            h.rate(
                f"explore steps({double}), double crashes: schedules/s",
                report.schedules,
                timing,
                "schedules/s",
            )
        )
    )

    h.header("hash-seed replay in two child interpreters (a fixed cost per explore)")
    with_seeds = h.measure(lambda: _explore(2, 1, (1, 2))[0], repeats=max(1, repeats // 2))
    without = h.measure(lambda: _explore(2, 1)[0], repeats=max(1, repeats // 2))
    out.append(
        h.report(h.Figure("hash-seed replay: seconds per explore", with_seeds.median - without.median, "s"))
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    options = h.arguments(__doc__.splitlines()[0], argv)
    h.main_table(collect(repeats=options.repeats, base=options.dir, quick=options.quick))


if __name__ == "__main__":
    main()
