"""``durable ui``: serve the web dashboard over a store (docs/howto/dashboard.md).

Registered on the ``durable`` group of :mod:`durable._cli` (which imports this
module last), with its options and helpers. The dashboard itself is
:mod:`durable._ui`, which needs the ``ui`` extra (Starlette, Hypercorn): it is
imported only when the verb runs, so ``import durable`` and ``durable --help``
never load it.
"""

# ruff: noqa: PLC0415 - the dashboard's extra is imported when the verb runs, never at `durable --help`
from __future__ import annotations

import functools

import click

from . import _timeline as tl
from ._cli import CliUsageError, StoreArg, _common, _epilog, _open_store, _store_name, main

_MISSING = "durable ui needs the dashboard's extra (Starlette and Hypercorn): pip install 'durable-yield[ui]'"


@main.command(
    epilog=_epilog(
        "Examples:",
        "  durable ui                                    http://127.0.0.1:8080 over ./.durable",
        "  durable ui --store /var/lib/shop/durable --port 9000",
        "  DURABLE_UI_TOKEN=... durable ui --host 0.0.0.0 --store 'postgresql://durable@db/app'",
    )
)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="The port.")
@click.option(
    "--token",
    default=None,
    envvar="DURABLE_UI_TOKEN",
    help="The access token every request must carry (env DURABLE_UI_TOKEN); required for a --host "
    "other than loopback. Open the dashboard once with ?token=TOKEN.",
)
@click.option(
    "--code",
    "code",
    multiple=True,
    metavar="FILE_OR_MODULE",
    help="Where the workflows are defined, to show a run's locals (as `durable show --locals` takes it).",
)
@_common
def ui(host: str, port: int, token: str | None, code: tuple[str, ...], store: StoreArg) -> None:
    """Serve a web dashboard: the runs, each run's live timeline, and actions on them.

    The run list (states as in `durable ls`, counts, filters, search by id,
    newest first, live), a run's page (the timeline of `show --html`, live;
    what it waits for; its locals at a step) and signal, cancel and retry, each
    confirmed first. Listens on 127.0.0.1 unless --host says otherwise, which
    needs --token. Stop it with Ctrl-C.
    """
    try:
        import hypercorn  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as exc:
        raise CliUsageError(f"{_MISSING} (missing: {exc.name})") from None
    from ._ui.security import UiSetupError, check_bind

    try:
        check_bind(host, token or None)
    except UiSetupError as exc:
        raise CliUsageError(str(exc)) from None
    _serve(host, port, token or None, code, store)


def _serve(host: str, port: int, token: str | None, code: tuple[str, ...], store: StoreArg) -> None:
    import trio

    from ._ui.app import Dashboard
    from ._ui.security import LOOPBACK_NAMES, Guard, is_loopback
    from ._ui.server import serve

    opened = _open_store(store, codec=False)
    # Without a token, only this machine's names are answered (DNS rebinding); with one,
    # the token is the gate, whatever name the server is reached by.
    hosts = LOOPBACK_NAMES if token is None and is_loopback(host) else None
    # The pages read with the codec as `show` does (a payload it refuses shows encoded); the
    # actions write with it, as `signal` does (opened with it), never a payload in clear.
    writer = _open_store(store) if store.codec is not None else None
    board = Dashboard(opened, _store_name(opened), store.payloads(), Guard(token, hosts), code, writer=writer)

    async def main_task() -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(functools.partial(serve, board, host, port))
            for address in bound:
                where = address if token is None else f"{address}/?token=TOKEN"
                click.echo(tl.printable(f"durable ui: {board.name} on {where} (Ctrl-C stops it)"))

    # Hypercorn stops on SIGINT and SIGTERM itself, closing the connections cleanly.
    try:
        trio.run(main_task)
    except* OSError as group:  # the port taken, an address this machine does not have
        error = _first(group)
        raise CliUsageError(
            f"cannot serve on {host}:{port}: {error.strerror or error}; pass another --port or --host"
        ) from None
    click.echo("durable ui stopped")


def _first(group: BaseExceptionGroup[OSError]) -> OSError:
    """The first OSError of a group, however deeply nested."""
    found = group.exceptions[0]
    return _first(found) if isinstance(found, BaseExceptionGroup) else found
