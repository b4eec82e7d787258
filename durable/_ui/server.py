"""Serving the dashboard: Hypercorn on trio, the loop durable's stores run on.

The app, its store and the server share one trio loop, so a handler awaits
the store directly (no thread, no second loop). SIGINT or SIGTERM stops it.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from .app import Dashboard, create_app


def _config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # requests are not logged: their addresses may carry run ids
    config.errorlog = "-"
    return config


async def _stop_signal() -> None:
    """Return at SIGINT or SIGTERM: Hypercorn's ``serve`` then closes its connections and
    returns (it installs no handler of its own; without this, Ctrl-C is a traceback and
    SIGTERM kills the process mid-response)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for _ in received:
            return


async def serve(
    board: Dashboard,
    host: str,
    port: int,
    *,
    shutdown: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard on ``host:port`` until ``shutdown`` returns (default: until
    SIGINT or SIGTERM); ``task_status`` gets the addresses it listens on (port 0: a free one)."""
    await hypercorn_serve(
        create_app(board),  # type: ignore[arg-type]  # an ASGI app; hypercorn's types are narrower
        _config(host, port),
        shutdown_trigger=shutdown or _stop_signal,
        task_status=task_status,
    )
