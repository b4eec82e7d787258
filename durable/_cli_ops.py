"""The verbs an operator uses on runs that went wrong or are done: ``rm``, ``prune``.

They are registered on the ``durable`` group of :mod:`durable._cli` (which
imports this module last) and use its options and helpers, so they read and
fail like the other verbs: ``--store``, ``--codec`` and ``--debug``, one line on
stderr and exit 2 for a usage error. Removal itself is
:mod:`durable._retention`'s.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from . import _timeline as tl
from ._cli import (
    EXIT_FAILED,
    EXIT_USAGE,
    CliUsageError,
    StoreArg,
    _common,
    _console,
    _epilog,
    _open_store,
    _store_name,
    known_run,
    main,
    no_run_text,
)
from ._core.durations import parse_duration

if TYPE_CHECKING:  # the verbs load trio and the stores when they run, not at `durable --help`
    from ._retention import Removed
    from ._store import Store

# --- rm ------------------------------------------------------------------------------


@main.command(
    epilog=_epilog(
        "Examples:",
        "  durable rm order-1 order-2",
        "  durable rm stuck-7 --force               an unfinished run that no process holds",
    )
)
@click.argument("run_ids", nargs=-1, required=True, metavar="ID...")
@click.option("--force", is_flag=True, help="Remove runs that have not finished too (never a held one).")
@_common
def rm(run_ids: tuple[str, ...], force: bool, store: StoreArg) -> None:
    """Remove the runs ID...: their journals and all the store keeps for them.

    Only runs that have finished (completed, failed or cancelled) are removed;
    an unfinished run is kept unless --force is given, and a run a live process
    holds is never removed (stop it, or cancel the run, first). What is removed
    is gone for good. Exit 1 if a run was kept, 2 if a run does not exist.
    """
    import trio

    from ._retention import remove_runs

    opened = _open_store(store, codec=False)
    results = trio.run(lambda: remove_runs(opened, run_ids, force=force))
    code = _report(results, _store_name(opened))
    if code:
        raise SystemExit(code)


# --- prune ---------------------------------------------------------------------------


@main.command(
    epilog=_epilog(
        "Examples:",
        "  durable prune --older-than 30d --dry-run   what would go",
        "  durable prune --older-than 30d             the runs that finished more than 30 days ago",
        "  durable prune --older-than 90d --force     and unfinished runs idle for 90 days",
    )
)
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="DURATION",
    help="Remove the runs that finished longer ago than this (30d, 12h, 90m, 45s).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Also remove unfinished runs idle for that long (their last record is older); never a held one.",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@_common
def prune(older_than: str, force: bool, dry_run: bool, store: StoreArg) -> None:
    """Remove the runs that finished more than DURATION ago, oldest first.

    This keeps a store's size bounded: run it from cron or a scheduled job
    (see docs/howto/operating.md, "Retention"). A FileStore reads only the
    journals of the runs that started before then; PostgreSQL only those that
    ended and were created before then. Unfinished runs are kept unless --force
    is given, and then only those idle for DURATION that no live process holds.
    """
    import trio

    from ._retention import prune as prune_runs

    seconds = parse_duration(older_than, what="--older-than")
    if seconds <= 0:
        raise CliUsageError(f"--older-than must be longer than zero (got {older_than!r})")
    before = time.time() - seconds
    opened = _open_store(store, codec=False)
    results = trio.run(lambda: prune_runs(opened, before, force=force, dry_run=dry_run))
    cutoff = datetime.datetime.fromtimestamp(before).isoformat(" ", timespec="seconds")
    if not results:
        click.echo(tl.printable(f"nothing finished before {cutoff} (local time) in {_store_name(opened)}"))
        return
    code = _report(results, _store_name(opened))
    done = sum(r.outcome in ("removed", "would remove") for r in results)
    verb = "would remove" if dry_run else "removed"
    click.echo(tl.printable(f"{verb} {tl.plural(done, 'run')} older than {cutoff} (local time)"))
    if code:
        raise SystemExit(code)


def _report(results: Sequence[Removed], where: str) -> int:
    """One line per run (removed on stdout, kept on stderr); the exit code: 2 for a run
    that does not exist, 1 for one kept, else 0."""
    from rich.text import Text

    errors = _console(stderr=True)
    code = 0
    for result in results:
        if result.outcome in ("removed", "would remove"):
            click.echo(tl.printable(f"{result.outcome} {result.run_id!r}"))
        elif result.outcome == "missing":
            missing = "error: " + no_run_text(result.run_id, where)  # as _fail words usage errors
            errors.print(Text(tl.printable(missing), style="red"))
            code = EXIT_USAGE
        else:
            errors.print(Text(tl.printable(f"kept {result.run_id!r}: {result.why}"), style="yellow"))
            code = max(code, EXIT_FAILED)
    return code


# --- retry ---------------------------------------------------------------------------


@main.command(
    epilog=_epilog(
        "Examples:",
        "  durable retry order-8",
        "  durable retry order-8 --reason 'card service fixed in 2.4.1'",
    )
)
@click.argument("run_id", metavar="ID")
@click.option("--reason", default="", help="Why: kept in the journal, shown by durable show.")
@_common
def retry(run_id: str, reason: str, store: StoreArg) -> None:
    """Run the failed run ID again, with the code the workers run now.

    The failure is superseded by a journaled marker (the history is kept, and
    `durable show` draws it); the steps that completed before it are replayed,
    not run again, and the step the workflow failed from runs again with fresh
    attempts. A worker takes the run (or `durable run` with its id, or
    Runtime.recover()). A run that has not failed is a usage error (exit 2).
    """
    import trio

    opened = _open_store(store)
    with known_run(opened):
        trio.run(retry_failed, opened, run_id, reason)
    click.echo(
        tl.printable(
            f"run {run_id!r} will run again: a worker takes it (`durable show {run_id}` tells the story)"
        )
    )


async def retry_failed(store: Store, run_id: str, reason: str) -> None:
    """Retry the failed run, as ``durable retry`` does (and the dashboard, through this)."""
    from ._client import Client

    await Client(store).retry(run_id, reason)
