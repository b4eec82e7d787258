"""What a test that runs on both event loops (it asks for ``loop``) may use besides
durable's API: sleeping, a deadline, and a task beside the test's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import sniffio
import trio


def on_trio() -> bool:
    return sniffio.current_async_library() == "trio"


async def sleep(seconds: float) -> None:
    await (trio.sleep(seconds) if on_trio() else asyncio.sleep(seconds))


@asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[None]:
    """Fail the test after ``seconds`` (a hang guard, not a timing assertion)."""
    if on_trio():
        with trio.fail_after(seconds):
            yield
    else:
        async with asyncio.timeout(seconds):
            yield


@asynccontextmanager
async def beside(fn: Callable[[], Awaitable[Any]]) -> AsyncIterator[None]:
    """Run ``fn()`` as a task beside the block; cancelled when the block ends."""
    if on_trio():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fn)
            yield
            nursery.cancel_scope.cancel()
    else:
        task = asyncio.ensure_future(fn())
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


async def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait until ``condition()`` holds (a hang guard, not a timing assertion)."""
    async with deadline(timeout):
        while not condition():
            await sleep(0.002)
    assert condition(), what
