"""The ``durable`` command line.

Exit codes: 0 success, 1 a workflow failed or diverged, 2 a usage error (one
line on stderr; a traceback only with ``--debug``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from ._errors import DurableError, NonDeterminismError, WorkflowFailed
from ._loader import LoadError, load_workflow, parse_arg
from ._runtime import run as run_workflow
from ._runtime import store_from

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _common(fn: F) -> F:
    """Add ``--store`` and ``--debug`` and turn known errors into one line and an exit code."""

    @click.option(
        "--store",
        "store",
        metavar="PATH_OR_DSN",
        default=None,
        help="The store: a directory (default: $DURABLE_STORE or ./.durable).",
    )
    @click.option("--debug", is_flag=True, help="Show tracebacks.")
    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (WorkflowFailed, NonDeterminismError) as exc:
            if debug:
                raise
            _fail(str(exc), EXIT_FAILED)
        except (LoadError, DurableError, TypeError, ValueError, OSError) as exc:
            if debug:
                raise
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="durable-yield", prog_name="durable")
def main() -> None:
    """durable: durable execution for Python workflows."""


@main.command(
    context_settings={"ignore_unknown_options": True},
    epilog="\b\nExample:\n  durable run examples/process_order.py:process_order alice 4200 "
    "tok_visa --id order-1",
)
@click.argument("target", metavar="FILE_OR_MODULE:WORKFLOW")
@click.argument("args", nargs=-1, metavar="[ARGS]...")
@click.option("--id", "run_id", metavar="ID", help="The run id (default: a new unique id).")
@_common
def run(target: str, args: tuple[str, ...], run_id: str | None, store: str | None) -> None:
    """Run (or resume) a workflow to completion and print its result.

    Each ARG is parsed as a Python literal (42, 'text', [1, 2]); anything else is
    taken as a string. Running an id that exists attaches to that run.
    """
    workflow = load_workflow(target)
    values = [parse_arg(a) for a in args]
    for text, value in zip(args, values, strict=True):
        if text.startswith("-") and isinstance(value, str):
            raise click.UsageError(
                f"no such option: {text} (to pass a string that starts with '-', quote it: \"'{text}'\")"
            )
    result = run_workflow(workflow, *values, id=run_id, store=store_from(store))
    click.echo(result if isinstance(result, str) else repr(result))
