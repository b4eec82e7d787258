"""What every benchmark shares: the workflows it runs, timing, figures, the summary table.

Theory of operation
-------------------
A benchmark measures a figure a few times after a warm-up and keeps the
median (:func:`measure`); figures that are compared with each other are
measured in turns (:func:`measure_interleaved`). Each figure is a :class:`Figure`: the value
measured, and the SPEC §8 target or the measured floor it is bounded by, so
that it is always printed beside what it should be compared with. Nothing
here asserts: a missed target prints ``miss``, never fails.

The workflows live here, defined once, so that a journal written by one
benchmark names a workflow every other benchmark can resume.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import cbor2

import durable

# --- the workflows ---------------------------------------------------------


@durable.activity
async def echo(i: int) -> int:
    """An async activity that returns at once (no checkpoint)."""
    return i


@durable.activity
def echo_sync(i: int) -> int:
    """A sync activity that returns at once; durable runs it in a worker thread."""
    return i


@durable.workflow
def steps(n: int) -> Any:
    """``n`` async activities, one after the other."""
    total = 0
    for i in range(n):
        total += yield echo(i)
    return total


@durable.workflow
def sync_steps(n: int) -> Any:
    """``n`` sync activities, one after the other."""
    total = 0
    for i in range(n):
        total += yield echo_sync(i)
    return total


# --- timing ----------------------------------------------------------------


@attrs.frozen
class Timing:
    """Seconds of the timed repeats of one measurement."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        """The fastest repeat: the figure least disturbed by other processes."""
        return min(self.times)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median: how noisy the machine was meanwhile."""
        return (max(self.times) - min(self.times)) / self.median


def measure(once: Callable[[], float], *, repeats: int, warmup: int = 1) -> Timing:
    """Call ``once`` (it returns the seconds it timed) ``warmup`` + ``repeats`` times.

    ``once`` times itself with :func:`time.perf_counter`, so its own set-up
    (temporary directories, journals to copy) stays outside the figure. The
    warm-up calls are thrown away; a full collection before each call keeps one
    call's garbage from being charged to the next.
    """
    for _ in range(warmup):
        gc.collect()
        once()
    times = []
    for _ in range(repeats):
        gc.collect()
        times.append(once())
    return Timing(tuple(times))


def measure_interleaved(
    onces: Sequence[Callable[[], float]], *, repeats: int, warmup: int = 1
) -> list[Timing]:
    """:func:`measure` of several measurements, taking turns within each repeat.

    The machine's speed drifts (a virtual machine on shared cores: a plain loop
    varies by 2x from one second to the next), so figures that are compared
    with each other, such as the times of two sizes, are taken side by side.
    """
    for _ in range(warmup):
        for once in onces:
            gc.collect()
            once()
    times: list[list[float]] = [[] for _ in onces]
    for _ in range(repeats):
        for once, out in zip(onces, times, strict=True):
            gc.collect()
            out.append(once())
    return [Timing(tuple(out)) for out in times]


def median_ratio(large: Timing, small: Timing) -> float:
    """The median of the repeat-by-repeat ratios of two interleaved timings."""
    return statistics.median(a / b for a, b in zip(large.times, small.times, strict=True))


def median_seconds(once: Callable[[], float], *, repeats: int, warmup: int = 1) -> float:
    """The median of :func:`measure`."""
    return measure(once, repeats=repeats, warmup=warmup).median


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- figures ---------------------------------------------------------------


@attrs.frozen
class Figure:
    """One measured figure and what bounds it.

    Attributes:
        name: what was measured.
        value: the median measured.
        unit: printed after the numbers (``"steps/s"``, ``"us"``, ``"x floor"``...).
        bound: the SPEC §8 target or the measured floor (None: nothing to compare with).
        op: ``">="`` or ``"<="`` for a target to pass; ``"ref"`` for a bound that is
            only a reference (a floor no code can beat, or a peer's figure).
        spread: (slowest - fastest) / median of the repeats, when it is known.
        best: the figure the fastest repeat gives, when it is known.
    """

    name: str
    value: float
    unit: str
    bound: float | None = None
    op: str = attrs.field(default="ref", validator=attrs.validators.in_([">=", "<=", "ref"]))
    spread: float | None = None
    best: float | None = None

    @property
    def verdict(self) -> str:
        """``"pass"``, ``"miss"`` (with how far off), or ``"-"`` for a reference figure."""
        if self.bound is None or self.op == "ref":
            return "-"
        ok = self.value >= self.bound if self.op == ">=" else self.value <= self.bound
        if ok:
            return "pass"
        return f"miss ({self.value / self.bound:.2f}x of target)"

    def bound_text(self) -> str:
        if self.bound is None:
            return "-"
        prefix = "floor" if self.op == "ref" else self.op
        return f"{prefix} {number(self.bound)}"

    def line(self) -> str:
        """The figure beside its bound, for the detailed output."""
        bound = "" if self.bound is None else f"   [{self.bound_text()} {self.unit}]"
        verdict = "" if self.verdict == "-" else f"  {self.verdict}"
        extra = []
        if self.best is not None:
            extra.append(f"best {number(self.best)}")
        if self.spread is not None:
            extra.append(f"spread {self.spread:.0%}")
        notes = f"  ({', '.join(extra)})" if extra else ""
        return f"  {self.name:<52} {number(self.value):>12} {self.unit}{bound}{verdict}{notes}"


def rate(
    name: str, count: int, timing: Timing, unit: str, bound: float | None = None, op: str = "ref"
) -> Figure:
    """``count`` things per second, from the median repeat (and the fastest)."""
    return Figure(name, count / timing.median, unit, bound, op, timing.spread, count / timing.best)


def cost(name: str, count: int, timing: Timing, bound: float | None = None, op: str = "<=") -> Figure:
    """Microseconds per thing, from the median repeat (and the fastest)."""
    return Figure(
        name, timing.median / count * 1e6, "us", bound, op, timing.spread, timing.best / count * 1e6
    )


def number(value: float) -> str:
    """A figure printed to about three significant digits, with thousands separators."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def report(figure: Figure) -> Figure:
    """Print one figure as soon as it is measured, and pass it on."""
    print(figure.line(), flush=True)
    return figure


def summary(figures: Sequence[Figure]) -> str:
    """The one table of every figure: name, target or floor, measured, verdict."""
    rows = [("figure", "target/floor", "measured", "result")]
    rows += [
        (
            f.name,
            f"{f.bound_text()} {f.unit}" if f.bound is not None else "-",
            f"{number(f.value)} {f.unit}",
            f.verdict,
        )
        for f in figures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def environment() -> str:
    """Where the figures come from: date, machine, interpreter, cbor2 build, how busy the machine was."""
    native = "C extension" if type(cbor2.loads).__name__ == "builtin_function_or_method" else "pure Python"
    return (
        f"{datetime.date.today().isoformat()}  {platform.platform()}  {os.cpu_count()} cores  "
        f"Python {platform.python_version()}  cbor2 {_version('cbor2')} ({native})  "
        f"trio {_version('trio')}  durable {durable.__version__} ({_revision()})  "
        f"load average {os.getloadavg()[0]:.2f} (other processes share these cores)"
    )


def _revision() -> str:
    """The git commit the measured durable/ is at, and whether it has local changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(durable.__file__)))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "durable"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {commit}{' + local changes' if dirty else ''}"


def _version(package: str) -> str:
    from importlib.metadata import version  # noqa: PLC0415 - only when printing

    return version(package)


# --- command line ----------------------------------------------------------


def arguments(
    description: str, argv: Sequence[str] | None = None, *, quick: bool = False
) -> argparse.Namespace:
    """The options every benchmark takes; ``quick`` makes the modest sizes the default."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is kept (5)")
    parser.add_argument(
        "--dir",
        default=None,
        help="directory for the stores' temporary files, on the filesystem to measure (default: $TMPDIR)",
    )
    if quick:
        parser.add_argument("--full", dest="quick", action="store_false", help="the full sizes of each bench")
    else:
        parser.add_argument("--quick", action="store_true", help="the modest sizes that run_all.py uses")
    return parser.parse_args(argv)


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main_table(figures: Sequence[Figure]) -> None:
    print("\n" + summary(figures))
    print(f"\n{environment()}")
    sys.stdout.flush()
