"""The loop behind ``durable worker``: recover every unfinished run, then keep taking new ones.

:func:`serve` runs until SIGINT or SIGTERM: every ``interval`` (or sooner, when
the store says something changed) it asks the runtime to recover the runs no
other process holds, up to ``concurrency`` at once, and says what happened to
each through ``say``, one line per event: taken, ended, given up. A store that
fails (the database restarts) is retried, not fatal. Printing is the caller's:
``say`` gets plain text, which it must make printable.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from ._core.errors import (
    Cancelled,
    JournalCorruptError,
    JournalVersionError,
    NonDeterminismError,
    StoreError,
    UnknownWorkflowError,
    WorkflowFailed,
)
from ._runtime import RunHandle, Runtime
from ._store import LEASE_MOVED, Store
from ._timeline import first_line

Say = Callable[[str], None]

#: Why a run cannot go on until someone acts (fix the code, restore the journal): the
#: worker says so once, not at every poll.
_NEEDS_A_PERSON = (JournalCorruptError, JournalVersionError, NonDeterminismError, UnknownWorkflowError)


async def serve(store: Store, interval: float, concurrency: int, say: Say, name: str) -> None:
    """Serve ``store`` (named ``name`` in what it says) until SIGINT or SIGTERM, then
    close it."""
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as stops:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_take_runs, store, interval, concurrency, say, name)
                async for number in stops:
                    say(f"worker: {signal.Signals(number).name} received, stopping")
                    nursery.cancel_scope.cancel()
                    return
    finally:
        # The runs stopped were let go (or closed) on the way out: closing the store
        # commits their releases before the process ends (a PostgreSQL store's committer
        # is a daemon thread), so the next worker resumes them at once instead of
        # waiting for their leases to run out.
        with trio.CancelScope(shield=True):
            await store.aclose()


async def _take_runs(store: Store, interval: float, concurrency: int, say: Say, name: str) -> None:
    #: The runs whose end a task of this worker waits for (one task a run).
    watching: set[str] = set()
    #: The runs this worker cannot run until a person acts (its code lacks their
    #: workflow, their journal is damaged...): said once, and never taken again here.
    given_up: set[str] = set()
    # A run that waits is let go at once (waiting_cache=0): concurrency counts runs with
    # work to do, and a waiting run costs the worker nothing until it is due.
    async with Runtime(store, poll=interval, waiting_cache=0) as runtime:
        say(f"worker: serving {name}")
        async with trio.open_nursery() as watchers:
            while True:
                try:
                    token = (store.change_token(), runtime._runs_stopped)
                    free = concurrency - runtime.running
                    for handle in await runtime.take_due(limit=free, exclude=given_up):
                        say(f"worker: {_taken_text(handle)}")  # each time it takes a run
                        if isinstance(handle._error, _NEEDS_A_PERSON):
                            given_up.add(handle.run_id)  # never taken again here
                        if handle.run_id not in watching:
                            watching.add(handle.run_id)
                            watchers.start_soon(_report_end, handle, watching, given_up, say)
                    await _wait_for_work(runtime, interval, token)
                except StoreError as exc:  # e.g. the database restarts: try again later
                    say(f"worker: the store failed ({first_line(exc)}); trying again")
                    await trio.sleep(max(interval, 1.0))


def _taken_text(handle: RunHandle) -> str:
    """How the worker came to run a run, in one line: started, resumed (it was let go
    while it waited, or its process crashed on this host) or taken over (from a holder
    on another host that died or whose lease expired); or that it cannot run it."""
    what = f"{handle.run_id!r} ({handle.workflow})"
    if handle.status == "error":
        return f"cannot run {what}"
    previous = handle._previous
    if handle._taken != "taken over" or previous is None:
        return f"{handle._taken} {what}"
    if previous.lease_expires is not None:  # it may be alive but frozen: not a crash
        return f"taken over {what} from {previous.describe()} (its lease expired)"
    if previous.host == socket.gethostname():
        return f"resumed {what} after a crash: {previous.describe()} held it (it is gone)"
    return f"taken over {what} from {previous.describe()} (it is gone)"


async def _wait_for_work(runtime: Runtime, interval: float, token: tuple[int, int]) -> None:
    """Until the store changes (a run created or let go elsewhere, a message), a run
    executing here stops (a slot is free, and a run let go may be due before the next
    look), the next run let go is due, or ``interval`` passes. ``token``: the store's
    change token and the runtime's count of runs stopped, taken before the last look."""
    store = runtime.store
    changes, stops = token
    now = time.time()
    due = await store.next_due(now)
    with trio.move_on_after(interval if due is None else min(interval, max(0.0, due - now))):
        async with trio.open_nursery() as nursery:

            async def first_of(wait: Callable[[], Awaitable[None]]) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first_of, partial(store.wait_for_change, interval, since=changes))
            nursery.start_soon(first_of, partial(runtime._until_a_run_stops, stops))


async def _report_end(handle: RunHandle, watching: set[str], given_up: set[str], say: Say) -> None:
    """Say how a run this worker ran ended here. A run let go while it waits is not
    followed (it would be polled for): the worker says so when it takes it again."""
    try:
        await handle._settled()
    finally:
        watching.discard(handle.run_id)
    if not handle._done.is_set():
        return  # let go while it waits
    try:
        await handle.result()
    except WorkflowFailed as failed:  # what it raised, in a line: `durable show` has the rest
        say(f"worker: failed {handle.run_id!r}: {first_line(failed)}")
        return
    except Cancelled:
        pass
    except Exception as exc:
        if isinstance(exc, _NEEDS_A_PERSON):
            given_up.add(handle.run_id)
            say(f"worker: gave up {handle.run_id!r}: {first_line(exc)}")
        elif isinstance(exc, StoreError) and LEASE_MOVED in str(exc):  # it goes on elsewhere
            say(f"worker: let go {handle.run_id!r}: {first_line(exc)}")
        else:
            say(f"worker: gave up {handle.run_id!r} for now: {first_line(exc)}")
        return
    say(f"worker: {handle.status} {handle.run_id!r}")
