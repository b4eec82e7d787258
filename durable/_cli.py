"""The ``durable`` command line.

Verbs: ``run`` (run or resume a workflow), ``ls`` (the runs in a store),
``show`` (one run's history as a timeline: text, ``--json`` or ``--html``),
``replay`` (re-run recorded journals against the current code: the check to run
in CI before deploying a changed workflow) and ``sim`` (crash-test a workflow
with the simulator). The reference, with sample output, is docs/cli.md.

Exit codes: 0 success, 1 a workflow failed or diverged (or the simulator found a
failing schedule), 2 a usage error (one line on stderr; a traceback only with
``--debug``).

Everything printed that came from a journal or a user (run ids, names, error
messages, results) goes through ``_timeline.printable`` first: a control
character, a bidi override or a lone surrogate is printed as its escape, never
raw; rich prints without markup, so ``[bold]`` in a name is text.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Collection, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import attrs
import cbor2
import click

from . import _timeline as tl
from ._core.commands import Workflow
from ._core.durations import parse_duration
from ._core.errors import DurableError, NonDeterminismError, StoreError, UnknownRunError, WorkflowFailed
from ._core.ids import check_run_id
from ._core.payloads import Payloads, payloads_from
from ._loader import LoadError, load_module, load_workflow, parse_arg
from ._loops import LOOPS, Loop

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from . import _journals
    from ._store import Store
    from ._store_postgres import PostgresStore

# Start-up: `durable --help`, and a verb's usage errors, come before trio, rich and
# the stores are imported (SPEC section 8: --help within 300 ms). So each verb and
# helper imports what it runs with where it runs it, and this module's top imports
# only what declaring the verbs needs.

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

EXIT_FAILED = 1
EXIT_USAGE = 2


class CliUsageError(Exception):
    """A usage error found by a verb (unknown run id, missing store...): one line, exit 2."""


class CliFailure(Exception):
    """The check a verb ran failed (a divergence, a failing crash schedule...): exit 1."""


def _fail(message: str, code: int, shown: BaseException | None = None) -> NoReturn:
    """Print ``error: message`` on stderr (after the traceback of ``shown``: ``--debug``)
    and exit with ``code``: the same exit code with or without ``--debug``."""
    if shown is not None:
        traceback.print_exception(shown, file=sys.stderr)
    click.echo(f"error: {tl.printable(message, keep=chr(10))}", err=True)
    sys.exit(code)


#: Arguments that become text in a journal or a message (ids, names, payloads): a lone
#: surrogate in them (bytes that are not UTF-8 in argv) is a usage error up front.
_TEXT_PARAMS = {
    "run_id": "the run id",
    "run_ids": "the run id",
    "name": "the signal name",
    "payload": "the payload",
    "reason": "--reason",
    "args": "the workflow argument",
    "workflows": "--workflow",
    "before": "--before",
}


def _check_text(params: dict[str, Any]) -> None:
    for param, what in _TEXT_PARAMS.items():
        value = params.get(param)
        for text in value if isinstance(value, tuple) else (value,):
            if isinstance(text, str) and any("\ud800" <= c <= "\udfff" for c in text):
                raise CliUsageError(
                    f"{what} {text!r} is not valid text: it holds bytes that are not UTF-8 (shown as "
                    "\\udcXX); durable keeps ids, names and payloads as UTF-8: pass it in UTF-8"
                )


@attrs.frozen
class StoreArg:
    """What ``--store`` and ``--codec`` say: where the store is, and its payload codecs."""

    path: str | None
    #: ``MODULE:ATTR`` of the payload codec (or list of codecs); None: no codec.
    codec: str | None = None

    def payloads(self) -> Payloads | None:
        """The codecs ``--codec`` names, imported and checked."""
        if self.codec is None:
            return None
        where, sep, attr = self.codec.rpartition(":")
        if not sep or not where or not attr:
            raise CliUsageError(f"--codec takes MODULE:ATTR, e.g. myapp.settings:codec (got {self.codec!r})")
        module = load_module(where)
        if not hasattr(module, attr):
            raise CliUsageError(f"--codec: {where!r} has no attribute {attr!r}")
        return payloads_from(getattr(module, attr))


def _common(fn: F) -> F:
    """Add ``--store``, ``--codec`` and ``--debug`` (``store`` becomes a :class:`StoreArg`),
    and turn known errors into one line and an exit code."""

    @click.option(
        "--store",
        "store",
        metavar="PATH_OR_DSN",
        default=None,
        help="The store: a directory, or a PostgreSQL DSN postgresql://... (default: $DURABLE_STORE "
        "or ./.durable).",
    )
    @click.option(
        "--codec",
        metavar="MODULE:ATTR",
        default=None,
        help="The store's payload codec (or list of codecs), as the application passes it to codec=.",
    )
    @click.option("--debug", is_flag=True, help="Show tracebacks.")
    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool, codec: str | None, **kwargs: Any) -> Any:
        try:
            _check_text(kwargs)
            kwargs["store"] = StoreArg(kwargs["store"], codec)
            return fn(*args, **kwargs)
        except BrokenPipeError:
            _reader_left()
        except (WorkflowFailed, NonDeterminismError, CliFailure) as exc:
            _fail(str(exc), EXIT_FAILED, exc if debug else None)
        except cbor2.CBORDecodeError as exc:  # not a ValueError since cbor2 6
            message = f"a journal holds a value that cannot be decoded: {exc}"
            _fail(message, EXIT_USAGE, exc if debug else None)
        except (CliUsageError, LoadError, DurableError, TypeError, ValueError, OSError) as exc:
            _fail(tl.first_line(exc), EXIT_USAGE, exc if debug else None)

    return wrapper  # type: ignore[return-value]


def _epilog(*lines: str) -> str:
    """A ``--help`` epilog that click prints as written (the ``\\b`` marker)."""
    return "\b\n" + "\n".join(lines)


class _Group(click.Group):
    """Click's own errors quote what was typed (``No such option: ...``): escaped like the rest."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as exc:
            setattr(exc, "message", tl.printable(exc.message))  # noqa: B010 - click types it Final
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            setattr(exc, "message", tl.printable(exc.message))  # noqa: B010 - click types it Final
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="durable-yield", prog_name="durable")
def main() -> None:
    """durable: durable execution for Python workflows."""


# --- run -----------------------------------------------------------------------------


def _parse_args(args: Sequence[str]) -> list[Any]:
    """Command-line workflow arguments as Python literals, else strings."""
    values = [parse_arg(a) for a in args]
    for text, value in zip(args, values, strict=True):
        if text.startswith("-") and isinstance(value, str):
            raise click.UsageError(
                f"no such option: {text} (to pass a string that starts with '-', quote it: \"'{text}'\")"
            )
    return values


_LOOP_OPTION = click.option(
    "--loop",
    type=click.Choice(LOOPS),
    default="trio",
    show_default=True,
    help="The event loop: asyncio for async activities written for asyncio libraries.",
)


@main.command(
    context_settings={"ignore_unknown_options": True},
    epilog=_epilog(
        "Example:",
        "  durable run examples/process_order.py:process_order alice 4200 tok_visa --id order-1",
    ),
)
@click.argument("target", metavar="FILE_OR_MODULE:WORKFLOW")
@click.argument("args", nargs=-1, metavar="[ARGS]...")
@click.option("--id", "run_id", metavar="ID", help="The run id (default: a new unique id).")
@_LOOP_OPTION
@_common
def run(target: str, args: tuple[str, ...], run_id: str | None, loop: Loop, store: StoreArg) -> None:
    """Run (or resume) a workflow to completion and print its result.

    Each ARG is parsed as a Python literal (42, 'text', [1, 2]); anything else is
    taken as a string. Running an id that exists attaches to that run.
    """
    from ._runtime import run as run_workflow

    workflow = load_workflow(target)
    values = _parse_args(args)
    opened = _store_from(store)
    try:
        result = run_workflow(workflow, *values, id=run_id, store=opened, loop=loop)
    except KeyboardInterrupt:
        which = f"--id {run_id}" if run_id is not None else "its --id (`durable ls` lists it)"
        click.echo(
            f"interrupted: what the run journaled stays; `durable run` with {which} resumes it",
            err=True,
        )
        sys.exit(130)
    except cbor2.CBORDecodeError as exc:  # not a ValueError since cbor2 6
        which = f"run {run_id!r}" if run_id is not None else "the run"
        raise CliUsageError(
            f"the journal of {which} in {_store_name(opened)} holds a value that cannot be decoded "
            f"({exc}): it is damaged, or was written by other software; `durable show` shows what "
            "it holds"
        ) from exc
    # A str result prints as it is (lines and tabs kept), but never a control character raw.
    click.echo(tl.printable(result, keep="\n\t") if isinstance(result, str) else tl.printable(repr(result)))


# --- worker ------------------------------------------------------------------------------


@main.command(
    epilog=_epilog(
        "Examples:",
        "  durable worker examples/process_order.py",
        "  durable worker myapp.workflows myapp.billing --store /var/lib/myapp/durable",
        "  durable worker myapp.workflows --store 'postgresql://durable@db/app?schema=durable'",
    ),
)
@click.argument("modules", nargs=-1, required=True, metavar="FILE_OR_MODULE...")
@click.option(
    "--poll",
    default="200ms",
    show_default=True,
    help="How often to look for new runs and messages (a PostgreSQL store also wakes the worker).",
)
@click.option(
    "--concurrency",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="The most runs this worker executes at once; it takes more as they finish.",
)
@_LOOP_OPTION
@_common
def worker(modules: tuple[str, ...], poll: str, concurrency: int, loop: Loop, store: StoreArg) -> None:
    """Run workflows until stopped: recover every unfinished run, then take new ones.

    Imports the given modules (where the workflows and activities are defined),
    resumes every unfinished run that no other process holds, and keeps looking
    for new runs (made by durable.Client.start) every --poll. SIGINT or SIGTERM
    stops it cleanly: in-flight activities are cancelled, nothing journaled is
    lost, and a restart resumes where it stopped.
    """
    import trio

    from ._asyncio import run_hosted
    from ._worker import serve

    for module in modules:
        load_module(module)
    interval = parse_duration(poll, what="--poll")
    target = _open_store(store, tables=False)
    console = _console(stderr=True)
    # A store that cannot be reached at the start: one line, exit 2. Asking when the next
    # run is due reads the due index only, however many runs the store holds.
    trio.run(target.next_due, time.time())
    (trio.run if loop == "trio" else run_hosted)(
        serve,
        target,
        interval,
        concurrency,
        lambda line: console.print(tl.printable(line)),
        _store_name(target),
    )
    console.print(
        "worker stopped; its unfinished runs resume when a worker takes them (this one when it restarts)"
    )


# --- signal ------------------------------------------------------------------------------


@main.command(
    epilog=_epilog(
        "Examples:",
        "  durable signal order-1 decision approved",
        "  durable signal order-1 decision \"{'by': 'carol', 'ok': True}\"",
    ),
)
@click.argument("run_id", metavar="ID")
@click.argument("name")
@click.argument("payload", required=False, metavar="[PAYLOAD]")
@_common
def signal(run_id: str, name: str, payload: str | None, store: StoreArg) -> None:
    """Send the signal NAME (with PAYLOAD) to the run ID.

    PAYLOAD is parsed as a Python literal, else taken as a string; without it the
    payload is None. The signal is journaled, and durable, before this returns; the
    run takes it at its next `durable.wait_signal(NAME)`, now or when it is next
    recovered. A run that a worker holds gets it through the store's inbox: it is
    durable there when this returns, and the worker journals it within its --poll.
    """
    import trio

    value = None if payload is None else parse_arg(payload)
    target = _open_store(store)
    with known_run(target):
        awaited = trio.run(send_signal, target, run_id, name, value)
    click.echo(tl.printable(f"signal {name!r} sent to run {run_id!r}"))
    warning = other_signal_warning(run_id, name, awaited)
    if warning is not None:
        _console(stderr=True).print(tl.printable(warning), style="yellow", markup=False)


async def send_signal(store: Store, run_id: str, name: str, value: Any) -> list[str]:
    """Send the signal ``name`` with ``value`` to the run, as ``durable signal`` does (and the
    dashboard, through this same function); the signals the run waited for before."""
    from ._runtime import Runtime

    await _refuse_clear_payload(store, run_id, what="a signal's payload")
    events = await store.read(run_id)
    async with Runtime(store) as runtime:
        await runtime.signal(run_id, name, value)
    return tl.awaited_signals(tl.build(run_id, events or []))


def other_signal_warning(run_id: str, name: str, awaited: Sequence[str]) -> str | None:
    """The warning for a signal sent to a run that waits for another one (delivered:
    signals may come early; but likely a typo), or None."""
    if not awaited or name in awaited:
        return None
    waits = " or ".join(repr(n) for n in awaited)
    return (
        f"warning: run {run_id!r} waits for the signal {waits}, not {name!r}; {name!r} is "
        "kept in its journal for a later wait_signal of that name"
    )


# --- cancel ------------------------------------------------------------------------------


@main.command(
    epilog=_epilog(
        "Example:",
        "  durable cancel order-1 --reason 'customer asked'",
    ),
)
@click.argument("run_id", metavar="ID")
@click.option("--reason", default="", help="Why: passed to the workflow in durable.Cancelled.")
@_common
def cancel(run_id: str, reason: str, store: StoreArg) -> None:
    """Cancel the run ID: durable.Cancelled is thrown into it at its current yield.

    The request is journaled, and durable, before this returns; a run that no
    process runs right now is cancelled when it is next recovered. The workflow
    may catch durable.Cancelled and run cleanup steps. A run that a worker holds
    gets the request through the store's inbox, as for `durable signal`.
    """
    import trio

    target = _open_store(store)
    with known_run(target):
        trio.run(request_cancel, target, run_id, reason)
    click.echo(tl.printable(f"cancellation of run {run_id!r} requested"))


async def request_cancel(store: Store, run_id: str, reason: str) -> None:
    """Request the run's cancellation, as ``durable cancel`` does (and the dashboard)."""
    from ._runtime import Runtime

    async with Runtime(store) as runtime:
        await runtime.cancel(run_id, reason)


# --- reading stores ----------------------------------------------------------------------


def _console(*, stderr: bool = False) -> Console:
    """A rich console; piped output gets wide lines (rows stay whole for grep) unless COLUMNS is set."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            _reader_left()

    # markup=False: a run named "[bold]x" prints as written (every string printed here is text).
    options: dict[str, Any] = {"highlight": False, "emoji": False, "markup": False, "soft_wrap": True}
    console = _Console(stderr=stderr, **options)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = _Console(stderr=stderr, width=160, **options)
    return console


def _reader_left() -> NoReturn:
    """The reader of stdout stopped reading (``durable show ID | head -1``): no error, and
    nothing more to say (stdout goes to /dev/null, so that the exit flushes nothing)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


def _print(lines: Sequence[RenderableType]) -> None:
    console = _console()
    for line in lines:
        console.print(line)


def _store_from(arg: StoreArg, *, codec: bool = True) -> Store:
    """The store that ``--store`` (else ``$DURABLE_STORE``, else ``./.durable``) names,
    with the payload codecs of ``--codec`` (unless not ``codec``: the reading verbs
    decode payloads themselves, see _journals.read).

    A libpq ``key=value`` connection string (``host=db dbname=app``) is a PostgreSQL
    store, like a ``postgresql://`` URL, never a directory name (which would put its
    password into a path)."""
    from ._store_from import DEFAULT_STORE_PATH, store_from
    from ._store_postgres import PostgresStore, looks_like_dsn

    text = arg.path if arg.path is not None else os.environ.get("DURABLE_STORE") or DEFAULT_STORE_PATH
    payloads = arg.payloads() if codec else None
    codecs = None if payloads is None else list(payloads.codecs)
    if looks_like_dsn(text):
        try:
            return PostgresStore(text, codec=codecs)
        except ImportError as exc:  # psycopg is an optional dependency
            raise StoreError(str(exc)) from None
    return store_from(text, codec=codecs)


def _open_store(arg: StoreArg, *, tables: bool = True, codec: bool = True) -> Store:
    """The store a verb uses; one that does not exist is a usage error, not an empty store.

    Nothing is created here: a directory that does not exist, or (``tables``) a
    PostgreSQL schema without durable's tables, is a usage error (a typo in --store
    must not look like "no runs", nor make a store)."""
    from ._store_file import FileStore
    from ._store_postgres import PostgresStore

    store = _store_from(arg, codec=codec)
    if isinstance(store, FileStore):
        if not os.path.exists(store.path):
            raise CliUsageError(
                f"no durable store at {store.path!r} (no such directory); pass --store PATH "
                "or set DURABLE_STORE"
            )
        if not os.path.isdir(store.path):
            raise CliUsageError(f"{store.path!r} is not a durable store: it is not a directory")
    if isinstance(store, PostgresStore) and tables and not _has_tables(store):
        raise CliUsageError(
            f"no durable store in schema {store.schema!r} of PostgreSQL at {store.where} (durable's "
            "tables are not there: no run was ever started in it); check the ?schema= of --store"
        )
    return store


def _has_tables(store: PostgresStore) -> bool:
    """Whether durable's tables are in the store's schema (a question to the server)."""
    import trio

    return trio.run(store.has_tables)


def _read(store: Store, read: Callable[..., Coroutine[Any, Any, R]], *args: Any) -> R:
    """``read(store, *args)``, a coroutine that only reads the store, run to its end.

    A FileStore's reads never wait for anything (its files are read in this thread),
    so they run without an event loop: importing and starting trio would be most of
    what a short verb such as ``durable ls`` costs (tests/test_layers.py checks that
    ls and show import no trio). Should one wait after all, it is closed and run
    again under trio: all it writes are caches (the starts and ends logs, the due
    index), which a second run writes the same. Any other store runs under trio."""
    from ._store_file import FileStore

    if isinstance(store, FileStore):
        coroutine = read(store, *args)
        try:
            coroutine.send(None)
        except StopIteration as done:
            value: R = done.value
            return value
        except RuntimeError as exc:  # trio's "must be called from async context"
            if "async context" not in str(exc):
                raise
        else:
            coroutine.close()
    import trio

    return trio.run(read, store, *args)


async def _read_one(store: Store, run_id: str, payloads: Payloads | None) -> _journals.Journal:
    from . import _journals

    check_run_id(run_id)  # an invalid id is a usage error, not a damaged journal
    journal = await _journals.read(store, run_id, payloads)
    if journal is None:
        raise CliUsageError(no_run_text(run_id, _store_name(store)))
    return journal


def _warn_codec(journals: Sequence[_journals.Journal]) -> None:
    """On stderr: the runs whose payloads --codec could not decode (shown encoded)."""
    from rich.text import Text

    refused = [journal for journal in journals if journal.codec_error is not None]
    if refused:
        more = f" (and {len(refused) - 1} more runs)" if len(refused) > 1 else ""
        first = refused[0].codec_error or ""
        _console(stderr=True).print(
            Text(tl.printable(f"payloads left encoded: {first}{more}"), style="yellow")
        )


async def _refuse_clear_payload(store: Store, run_id: str, *, what: str) -> None:
    """Refuse to write ``what`` in clear into a run whose payloads a codec encoded (the
    store was opened without ``--codec``): it would sit in the journal unencrypted."""
    from ._core.payloads import is_sealed

    if store.payloads is not None:
        return
    events = await store.read(run_id)
    first = events[0] if events else None
    if first is not None and is_sealed(getattr(first, "args", b"")):
        raise CliUsageError(
            f"run {run_id!r} keeps its payloads encoded by a codec, and no --codec was given: "
            f"{what} would be written in clear; pass the application's --codec MODULE:ATTR"
        )


#: Where a message saying that a run does not exist sends the reader.
LS_HINT = "`durable ls` lists its runs"


def no_run_text(run_id: str, where: str, hint: str = LS_HINT) -> str:
    """How every verb (and the dashboard, with its own ``hint``) says a run does not exist:
    ``no run 'order-7' in the store '.durable' (`durable ls` lists its runs)``; ``where``
    as :func:`_store_name` says it."""
    return f"no run {run_id!r} in {where} ({hint})"


@contextlib.contextmanager
def known_run(store: Store) -> Iterator[None]:
    """Say an :class:`UnknownRunError` (from the Runtime or the Client a verb drives) as
    :func:`no_run_text` does: a usage error."""
    try:
        yield
    except UnknownRunError as exc:
        raise CliUsageError(no_run_text(exc.run_id, _store_name(store))) from None


def _store_name(store: Store) -> str:
    """How messages name a store (a PostgreSQL DSN without its password)."""
    from ._store_file import FileStore

    return f"the store {store.path!r}" if isinstance(store, FileStore) else repr(store)


# --- ls ------------------------------------------------------------------------------


@main.command(
    epilog=_epilog(
        "Examples:",
        "  durable ls",
        "  durable ls --limit 50                 the 50 newest; the next page: --before THE_LAST_ID",
        "  durable ls --status running --status failed --store /var/lib/shop/durable",
        "  durable ls --workflow process_order --json",
    )
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(tl.STATUSES),
    help="Only runs with this status (repeat for several): queued, running, waiting and stalled "
    "are the unfinished runs (see docs/cli.md).",
)
@click.option("--workflow", "workflows", multiple=True, metavar="NAME", help="Only runs of this workflow.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N runs, the newest first.")
@click.option("--before", "before", metavar="ID", default=None, help="Only runs started before the run ID.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects (see docs/cli.md).")
@_common
def ls(
    statuses: tuple[str, ...],
    workflows: tuple[str, ...],
    limit: int | None,
    before: str | None,
    as_json: bool,
    store: StoreArg,
) -> None:
    """List the runs in a store, the newest first: id, workflow, status, start,
    last event, steps.

    With --limit, only that many journals are read (the store knows when each run
    started without reading them), so a page costs the same in a store of a
    hundred runs or of a million; --before ID gives the next page. A run whose
    journal is damaged is listed with status 'corrupt' (and the error with
    --json); it never stops the listing.
    """
    from rich.text import Text

    from ._timeline_text import runs_text

    opened = _open_store(store, codec=False)

    def kept(timeline: tl.Timeline) -> bool:
        return (not statuses or timeline.status in statuses) and (
            not workflows or timeline.workflow in workflows
        )

    wanted = kept if statuses or workflows else _every

    rows, more = _read(opened, _newest, store.payloads(), wanted, limit, before, None, statuses)
    if as_json:
        click.echo(json.dumps([tl.summary_json(t) for t in rows], indent=2))
    elif rows:
        console = _console()
        for part in runs_text(rows):
            console.print(part)
    else:
        what = "matching runs" if statuses or workflows else "runs"
        older = "" if before is None else f" that started before {before!r}"
        _console().print(Text(tl.printable(f"no {what}{older} in {_store_name(opened)}")))
    if more and limit is not None:  # on stderr: stdout stays the listing
        next_page = _next_page(statuses, workflows, limit, rows[-1].run_id, as_json, store)
        _console(stderr=True).print(Text(tl.printable(f"the next page: {next_page}"), style="dim"))


def _next_page(
    statuses: Sequence[str], workflows: Sequence[str], limit: int, last: str, as_json: bool, store: StoreArg
) -> str:
    """The ``durable ls`` command that lists the next page: the same filters, output and
    store, quoted for a POSIX shell (a PostgreSQL DSN's password shown as ``***``)."""
    import shlex

    from ._store_postgres.dsn import redact_url

    words = ["durable", "ls"]
    words += [word for status in statuses for word in ("--status", status)]
    words += [word for workflow in workflows for word in ("--workflow", workflow)]
    words += ["--limit", str(limit), "--before", last]
    if as_json:
        words.append("--json")
    if store.path is not None:
        words += ["--store", redact_url(store.path)]
    if store.codec is not None:
        words += ["--codec", store.codec]
    return shlex.join(words)


def _every(timeline: tl.Timeline) -> bool:
    """``ls`` without filters: every run."""
    return True


async def _newest(
    store: Store,
    payloads: Payloads | None,
    wanted: Callable[[tl.Timeline], bool],
    limit: int | None,
    before: str | None,
    id_filter: Callable[[str], bool] | None = None,
    statuses: Collection[str] = (),
) -> tuple[list[tl.Timeline], bool]:
    """The timelines of the newest runs ``wanted`` keeps, reading journals only until
    ``limit`` are found (those after the run ``before``, if given; with ``id_filter``,
    only the runs whose id it keeps, decided without reading their journals: the
    dashboard's search, and its skipping of runs it knows are finished). With
    ``statuses`` (what ``wanted`` asks of a run's status), the journals of runs the
    store's state index says are in another state are not read.

    Also whether a next page may hold more: without filters, whether a run older than
    the last one listed exists; with them, whether runs older than the last one are
    left unread (they may not match: finding out would read them)."""
    from . import _journals
    from ._store import ENDED_STATES

    if before is not None:
        check_run_id(before)
        if await store.read(before) is None:
            raise CliUsageError(f"--before {before!r}: {no_run_text(before, _store_name(store))}")
    index = await store.state_index() if statuses else None
    # Without filters, the store picks the page; with them, runs are read newest first
    # until the page is full.
    filtered = wanted is not _every or id_filter is not None
    # One id more than the page: whether there is a next page (its journal is not read).
    ids = await store.newest_first(None if filtered or limit is None else limit + 1, before)
    if id_filter is not None:
        ids = [run_id for run_id in ids if id_filter(run_id)]
    if index is not None:
        ruled_out = index.ruled_out(statuses)
        ids = [run_id for run_id in ids if run_id not in ruled_out]
    rows: list[tl.Timeline] = []
    for run_id in ids:
        if limit is not None and len(rows) >= limit:
            return rows, True  # runs older than the page's last are left
        journal = await _journals.read(store, run_id, payloads)
        if journal is None:
            continue  # removed meanwhile
        timeline = journal.timeline()
        if index is not None and timeline.status in ENDED_STATES and not index.knows(run_id):
            await _note_end(store, timeline)  # the next listing skips it
        if wanted(timeline):
            rows.append(timeline)
    return rows, False


async def _note_end(store: Store, timeline: tl.Timeline) -> None:
    """Tell the store how a run its state index did not know ended (``Store.note_end``)."""
    if timeline.started is not None:
        await store.note_end(timeline.run_id, timeline.status, timeline.started)


# --- show ----------------------------------------------------------------------------


@main.command(
    epilog=_epilog(
        "Examples:",
        "  durable show order-1",
        "  durable show order-1 --json | jq '.steps[].status'",
        "  durable show order-1 --html order-1.html",
        "  durable show order-1 --locals                 its workflow's variables now",
        "  durable show order-1 --locals --at 0 --code shop.py",
    )
)
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON (see docs/cli.md).")
@click.option(
    "--html",
    "html_file",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Write the run as a Gantt chart to FILE: one self-contained HTML page.",
)
@click.option(
    "--locals",
    "show_locals",
    is_flag=True,
    help="Print the workflow's local variables at a step, rebuilt by replaying the journal with the "
    "current code (nothing runs, nothing is written).",
)
@click.option(
    "--at",
    "at_step",
    metavar="STEP",
    type=int,
    default=None,
    help="With --locals: the step whose yield to stop at (default: the latest, the run's state now).",
)
@click.option(
    "--code",
    "code",
    multiple=True,
    metavar="FILE_OR_MODULE",
    help="With --locals: where the workflows are defined, as `durable replay` takes it (repeat for "
    "several); default: the *.py file of the current directory that defines the run's workflow.",
)
@_common
def show(
    run_id: str,
    as_json: bool,
    html_file: str | None,
    show_locals: bool,
    at_step: int | None,
    code: tuple[str, ...],
    store: StoreArg,
) -> None:
    """Show a run's history as a timeline: steps, attempts, recoveries, outcome.

    Each step shows its sequence number, kind, call, how long it took from
    scheduled to done, every failed attempt with its error and backoff, and
    each recovery (a process resumed the run and replayed the journal).

    With --locals: the workflow's local variables (and those of the generators
    it entered with `yield from`) as they were when it yielded step --at, by
    replaying the journal with the current code; exit 1 if the code no longer
    matches the journal.
    """
    from ._timeline_html import to_html
    from ._timeline_text import timeline_text

    if not show_locals and (at_step is not None or code):
        raise CliUsageError("--at and --code go with --locals: durable show ID --locals --at STEP")
    if show_locals and html_file is not None:
        raise CliUsageError("--locals prints text or --json; it has no --html")
    opened = _open_store(store, codec=False)
    if show_locals:
        events = _read(opened, _read_events, run_id, store.payloads())
        _show_locals(run_id, events, at_step, code, as_json)
        return
    journal = _read(opened, _read_one, run_id, store.payloads())
    _warn_codec([journal])
    timeline = journal.timeline()
    if html_file is not None:
        try:
            _write_private(html_file, to_html(timeline))
        except OSError as exc:
            raise CliUsageError(f"cannot write {html_file!r}: {exc.strerror or exc}") from exc
        click.echo(tl.printable(f"wrote the timeline of run {run_id!r} to {html_file}"), err=as_json)
    if as_json:
        click.echo(json.dumps(tl.to_json(timeline), indent=2))
    elif html_file is None:
        _print(timeline_text(timeline))


async def _read_events(store: Store, run_id: str, payloads: Payloads | None) -> list[Any]:
    """A run's journal for ``show --locals``: read only, without asking who holds the run (a
    FileStore asks by trying its lock), decoded by ``--codec``; a damaged one is an error."""
    check_run_id(run_id)
    events = await store.read(run_id)
    if events is None:
        raise CliUsageError(no_run_text(run_id, _store_name(store)))
    return events if payloads is None else [payloads.unseal(event, run_id) for event in events]


def _show_locals(
    run_id: str, events: list[Any], at_step: int | None, code: tuple[str, ...], as_json: bool
) -> None:
    """``show --locals``: the run's workflow rebuilt by replay up to a step, its locals printed."""
    from ._core.events import RunStarted
    from ._locals import load_code, locals_at

    first = events[0] if events else None
    if not isinstance(first, RunStarted) or not isinstance(first.workflow, str):
        raise CliUsageError(f"cannot rebuild run {run_id!r}: its journal does not start with RunStarted")
    defined = load_code(first.workflow, code)
    try:
        state = locals_at(events, workflows=defined, step=at_step)
    except NonDeterminismError as exc:
        raise CliFailure(
            f"cannot rebuild run {run_id!r}: the current code no longer matches its journal\n{exc}"
        ) from exc
    except LookupError as exc:
        raise CliUsageError(f"{exc}; pass --code FILE_OR_MODULE") from exc
    if as_json:
        click.echo(json.dumps(state.to_json(), indent=2))
    else:
        _print(state.lines())


def _write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600, like the journals: a
    timeline holds arguments and results), and never through a symlink at ``path``: a
    temporary file beside it, renamed over it (which replaces a symlink, not its target)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# --- replay --------------------------------------------------------------------------


@main.command(
    epilog=_epilog(
        "Examples:",
        "  durable replay shop/workflows.py                 every run of the workflows it defines",
        "  durable replay shop.workflows order-1 order-2    those runs",
        "  durable replay shop.workflows --all --store journals/   every run in the store (CI)",
    )
)
@click.argument("target", metavar="FILE_OR_MODULE[:WORKFLOW]")
@click.argument("run_ids", nargs=-1, metavar="[ID]...")
@click.option(
    "--all",
    "replay_all",
    is_flag=True,
    help="Every run in the store; a run whose workflow the module does not define fails the check.",
)
@_common
def replay(target: str, run_ids: tuple[str, ...], replay_all: bool, store: StoreArg) -> None:
    """Re-run recorded journals against the current code and report divergence.

    Imports FILE_OR_MODULE (where the workflows are defined), then feeds every
    recorded event of each journal to the replay core: no activity runs and the
    store is only read. Each run either replays OK or diverges: the step, what
    the journal holds, what the code yields now, and the line of the yield.

    Without IDs or --all: every run of the workflows the module defines (or of
    WORKFLOW alone); runs of other workflows are skipped. Exit 1 if any run
    diverged or could not be replayed.
    """
    from ._timeline_text import replay_report

    if run_ids and replay_all:
        raise CliUsageError("give run ids or --all, not both")
    only: str | None = None
    if ":" in target and not Path(target).exists():
        chosen = load_workflow(target)
        only, defined = chosen.name, {chosen.name: chosen}
    else:
        module = load_module(target)
        defined = {wf.name: wf for wf in vars(module).values() if isinstance(wf, Workflow)}
    opened = _open_store(store, codec=False)
    read = _read(opened, _read_selected, run_ids, store.payloads())
    if only is not None and not run_ids:
        read = [journal for journal in read if journal.workflow == only]
    skip_undefined = not run_ids and not replay_all
    checks = [journal.check(defined, skip_undefined=skip_undefined) for journal in read]
    _print(replay_report(checks, target, _store_name(opened)))
    failed = [check for check in checks if check.failed]
    if failed:
        replayed = tl.plural(sum(1 for check in checks if check.verdict != "skipped"), "run")
        raise CliFailure(f"{len(failed)} of {replayed} cannot be replayed by the current code of {target}")


async def _read_selected(
    store: Store, run_ids: tuple[str, ...], payloads: Payloads | None
) -> list[_journals.Journal]:
    from . import _journals

    if not run_ids:
        return await _journals.read_all(store, payloads)
    return [await _read_one(store, run_id, payloads) for run_id in run_ids]


# More verbs live beside this module and register on `main`: the operators' (rm, prune,
# retry), the simulator's and the dashboard's.
from . import _cli_ops, _cli_sim, _cli_ui  # noqa: E402, F401
