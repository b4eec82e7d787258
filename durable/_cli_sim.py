"""``durable sim``: crash-test a workflow from the shell, with a progress bar and a summary.

Registered on the ``durable`` group of :mod:`durable._cli` (which imports this
module last), with its options and helpers; the simulator itself is ``sim``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import _timeline as tl
from ._cli import (
    CliFailure,
    StoreArg,
    _common,
    _console,
    _epilog,
    _parse_args,
    main,
)
from ._core.commands import call_text
from ._core.errors import SerializationError
from ._loader import LoadError, load_module, load_workflow, parse_arg
from ._loops import LOOPS, Loop

if TYPE_CHECKING:
    from rich.console import Console


# --- sim -----------------------------------------------------------------------------


@main.command(
    context_settings={"ignore_unknown_options": True},
    epilog=_epilog(
        "Examples:",
        "  durable sim examples/process_order.py:process_order alice 4200 tok_visa",
        "  durable sim shop.workflows:refund order-7 --crashes 1 --budget 200 --explain",
        "  durable sim shop/approval.py:expense 120 --signal approved=True --before-each shop/fakes.py:reset",
    ),
)
@click.argument("target", metavar="FILE_OR_MODULE:WORKFLOW")
@click.argument("args", nargs=-1, metavar="[ARGS]...")
@click.option(
    "--crashes",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Crashes per schedule: 1 crashes once at every point; 2 also crashes again during each recovery.",
)
@click.option("--budget", type=click.IntRange(min=1), default=None, help="Play at most N schedules.")
@click.option("--seed", type=int, default=0, show_default=True, help="Decides each crash's disk damage.")
@click.option("--explain", is_flag=True, help="Narrate one schedule (the first failure, if any) as a lesson.")
@click.option(
    "--loop",
    type=click.Choice(LOOPS),
    default="trio",
    show_default=True,
    help="The event loop the async activities are written for (virtual time either way).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Processes that play the schedules (0: one per core). Only for activities whose outside "
    "world lives in the process: forked copies share files and services.",
)
@click.option(
    "--signal",
    "signals",
    multiple=True,
    metavar="NAME[=PAYLOAD]",
    help="A signal the run gets (repeatable); PAYLOAD is parsed as a Python literal, else a string, "
    "as by `durable signal`. Its arrival is explored at every point of the run, in every order.",
)
@click.option(
    "--before-each",
    metavar="FILE_OR_MODULE:FUNCTION",
    default=None,
    help="Called with no arguments before every schedule: reset the fake services the activities "
    "talk to, so each schedule starts from the same outside world.",
)
@click.option(
    "--after-each",
    metavar="FILE_OR_MODULE:FUNCTION",
    default=None,
    help="Called after every schedule: return a description of what is wrong in the outside world "
    "(or raise AssertionError), or None. This is how an effect applied twice is caught.",
)
@click.option(
    "--run-id",
    default=None,
    help="The run's id (default: one of this exploration's own, so idempotency keys never collide "
    "with another exploration's).",
)
@_common
def sim(
    target: str,
    args: tuple[str, ...],
    crashes: int,
    budget: int | None,
    seed: int,
    explain: bool,
    loop: Loop,
    workers: int,
    signals: tuple[str, ...],
    before_each: str | None,
    after_each: str | None,
    run_id: str | None,
    store: StoreArg,
) -> None:
    """Crash-test a workflow: crash it at every crash point and compare with the crash-free run.

    Runs the real runtime on a simulated disk in virtual time (the activities
    run for real, against whatever they talk to). ARGS are parsed as in
    `durable run`. Exit 1 if any schedule diverged. --store is accepted for
    symmetry and ignored: the simulator never touches a real store; --codec
    makes its simulated store seal payloads with the application's codec.
    """
    from rich.text import Text

    # The simulator builds on durable, never the reverse: the CLI, an application of
    # both, imports it only when this verb runs (a test pins that).
    import sim as simulator

    workflow = load_workflow(target)
    values = _parse_args(args)
    sent = [_signal_arg(text) for text in signals]
    reset = _function(before_each, "--before-each")
    inspect = _function(after_each, "--after-each")
    call = target.rpartition(":")[2] + call_text(values, {}, limit=None)  # whole: it is pasted back
    progress, on_schedule = _progress(tl.shorten(call, 40))
    codecs = store.payloads()  # a --codec that names nothing is a usage error, before any run
    from sim._explore import check_arguments

    check_arguments(workflow, tuple(values), {})  # a TypeError: a usage error, before any run
    try:
        with progress:
            report = simulator.Simulator(
                on_schedule=on_schedule,
                loop=loop,
                codec=None if codecs is None else list(codecs.codecs),
                workers=workers or None,
                before_each=reset,
                after_each=inspect,
            ).explore(
                workflow,
                *values,
                seed=seed,
                max_crashes=crashes,
                budget=budget,
                signals=sent,
                run_id=run_id,
            )
    except SerializationError:
        raise  # an argument the journal cannot hold: a usage error
    except Exception as exc:
        raise CliFailure(
            f"the crash-free run of {workflow.name!r} did not finish, so there is nothing to compare "
            f"crash schedules with: {tl.error_text(exc)}"
        ) from exc
    _print_sim(_console(), report, call, seed=seed, crashes=crashes, signals=sent)
    if explain:
        _console().print(Text("\n" + tl.printable(report.explain(), keep="\n")))
    if not report.ok:
        raise CliFailure(f"diverged from the crash-free run: {report.failures_text()}")


def _progress(label: str) -> tuple[Any, Callable[[int, Any, Any], None]]:
    """A spinner with counters on stderr, gone when done (the number of schedules is not
    known in advance: double crashes are found while exploring), and what updates it."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    err = _console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    task = progress.add_task(f"{label}: the crash-free run", total=None)
    found = [0]

    def on_schedule(played: int, recipe: Any, failure: Any) -> None:
        found[0] += failure is not None
        text = f"{label}: {played} schedules played, {found[0]} failures"
        progress.update(task, completed=played, description=text)

    return progress, on_schedule


def _signal_arg(text: str) -> tuple[str, Any]:
    """``--signal NAME[=PAYLOAD]``: the payload as a Python literal, else the text (None if absent)."""
    name, sep, payload = text.partition("=")
    if not name:
        raise click.BadParameter(f"write NAME or NAME=PAYLOAD, e.g. approved=True (got {text!r})")
    return name, parse_arg(payload) if sep else None


def _function(target: str | None, option: str) -> Callable[..., Any] | None:
    """Load ``FILE_OR_MODULE:FUNCTION`` (a file loaded already, such as the workflow's own,
    is not loaded again: its function must reset the very state the activities use)."""
    if target is None:
        return None
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise click.BadParameter(f"write FILE_OR_MODULE:FUNCTION, e.g. shop/fakes.py:reset (got {target!r})")
    module = _loaded(where)
    if module is None:
        try:
            module = load_module(where)
        except LoadError as exc:
            raise click.BadParameter(f"{option}: {exc}") from exc
    found = getattr(module, attr, None)
    if not callable(found):
        raise click.BadParameter(f"{option}: {where!r} has no function named {attr!r}")
    return found  # type: ignore[no-any-return]


def _loaded(where: str) -> Any:
    """The module already loaded from file ``where``, if any."""
    if not (where.endswith(".py") or "/" in where or "\\" in where):
        return None
    path = Path(where).resolve()
    module = sys.modules.get(path.stem)
    file = getattr(module, "__file__", None)
    return module if file is not None and Path(file).resolve() == path else None


_SHOWN_DIVERGENCES = 3


def _print_sim(
    console: Console, report: Any, call: str, *, seed: int, crashes: int, signals: list[tuple[str, Any]]
) -> None:
    """The summary table, then each distinct divergence with a recipe that plays it again."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    console.print(Text(tl.printable(f"sim: {call}"), style="bold"))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("schedules", "crash points", "failures", "time", "seed", "crashes"):
        table.add_column(name, justify="right")
    table.add_column("result without crashes")
    table.add_row(
        str(report.schedules),
        str(report.crash_points),
        Text(str(len(report.failing_schedules)), style="bold red" if report.failures else "green"),
        tl.duration_text(report.seconds),
        str(seed),
        str(crashes),
        Text(tl.printable(tl.shorten(report.reference.ending.result_text(), 60))),
    )
    console.print(table)
    if signals:
        shown = ", ".join(f"{name}={payload!r}" for name, payload in signals)
        explorer = report.explorer
        branches = explorer.branch_count
        console.print(
            Text(
                tl.printable(
                    f"signals {shown}: sent at every point of the run, in every order "
                    f"({tl.plural(explorer.arrivals_played, 'arrival')} played without crashes, "
                    f"{branches} branch{'' if branches == 1 else 'es'} crash-tested)"
                )
            )
        )
    for note in report.notes:
        console.print(Text(tl.printable(f"note: {note}"), style="yellow"))
    if report.ok:
        console.print(
            Text(f"all {report.schedules} schedules matched the crash-free run", style="bold green")
        )
        return
    # Failures of played schedules and of the hash-seed replays are counted apart (the
    # latter are no schedules), and grouped by kind: one group per underlying cause.
    console.print(Text(report.failures_text(), style="bold red"))
    kinds = report.kinds()
    name, _, rest = call.partition("(")
    args = rest[:-1] + ", " if rest[:-1] else ""
    for number, failures in enumerate(kinds[:_SHOWN_DIVERGENCES], 1):
        first = failures[0]
        also = f" (and {len(failures) - 1} more of this kind)" if len(failures) > 1 else ""
        console.print(Text(f"\nfailure {number}: {tl.printable(repr(first.recipe))}{also}", style="bold"))
        console.print(Text(tl.printable(first.divergence, keep="\n")))
        console.print(Text("reproduce with:", style="dim"))
        console.print(Text(tl.printable(f"  sim.replay_recipe({name}, {args}recipe={first.recipe!r})")))
    if len(kinds) > _SHOWN_DIVERGENCES:
        console.print(Text(f"\n... and {len(kinds) - _SHOWN_DIVERGENCES} more kinds of failure", style="dim"))
