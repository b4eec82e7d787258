"""Messages for runs held elsewhere: signals and cancel requests sent through the store.

A run has one writer at a time (a lock, or a lease). A sender that does not
hold the run first tries to take it: if nobody holds it, the sender journals
the messages waiting in its inbox and its own, and lets it go again; if a
process holds it, the sender posts its message to the run's inbox in the
store, durably, and that process's runtime finds it (it watches the inbox) and
journals it.

Either way a message is journaled before it leaves the inbox, and it carries
an id that the journal keeps, so a crash between the two can only make it be
found again and skipped, never journaled twice or lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection

import attrs

from ._core import events as ev
from ._core.errors import RunConflictError, RunLockedError, UnknownRunError
from ._core.ids import check_run_id
from ._store import JournalWriter, Store


def with_id(message: ev.Message) -> ev.Message:
    """The message with a fresh unique ``message_id``."""
    return attrs.evolve(message, message_id=uuid.uuid4().hex)


async def send(store: Store, run_id: str, message: ev.Message) -> None:
    """Deliver ``message`` to a run that this process does not run.

    Raises:
        UnknownRunError: no such run.
        RunConflictError: the run has finished.
    """
    run_id = check_run_id(run_id)
    message = with_id(message)
    try:
        opened = await store.open(run_id)
    except RunLockedError:
        await _post(store, run_id, message)  # its holder takes it from the inbox
        return
    if opened is None:
        raise UnknownRunError(run_id, store)
    try:
        if isinstance(opened.events[-1], ev.TERMINAL):
            await drop_messages(store, run_id)  # nobody will take them now
            raise _finished(run_id, message)
        # Nobody holds it: journal what waits in its inbox, then this message.
        seen = {m.message_id for m in opened.events if isinstance(m, ev.Message) and m.message_id}
        append = _appender(opened.writer)
        await journal_messages(store, run_id, seen, append)
        await append(message)
    finally:
        opened.writer.close()
    # A run let go while it waits is due when a message comes: now.
    await store.wake(run_id)


async def _post(store: Store, run_id: str, message: ev.Message) -> None:
    """Leave a message for a run that another process holds, if it can still take it."""
    events = await store.read(run_id)
    if not events:
        raise UnknownRunError(run_id, store)
    if isinstance(events[-1], ev.TERMINAL):
        raise _finished(run_id, message)
    await store.post(run_id, message)


def _finished(run_id: str, message: ev.Message) -> RunConflictError:
    return RunConflictError(
        f"run {run_id!r} has finished; {ev.message_text(message)} was not delivered", run_id=run_id
    )


async def forget_journaled(store: Store, run_id: str, seen: Collection[str]) -> None:
    """Remove from the run's inbox the messages its journal already holds (a crash
    between journaling and removing them leaves them): a fresh journal would not
    know to skip them."""
    stale = [m.message_id for m in await store.messages(run_id) if m.message_id in seen]
    if stale:
        await store.remove_messages(run_id, stale)


async def drop_messages(store: Store, run_id: str) -> None:
    """Forget the messages waiting for a run that has ended: nobody will take them."""
    waiting = await store.messages(run_id)
    if waiting:
        await store.remove_messages(run_id, [m.message_id for m in waiting])


def _appender(writer: JournalWriter) -> Callable[[ev.Message], Awaitable[None]]:
    async def append(message: ev.Message) -> None:
        writer.append(message)
        if writer.syncs:
            await writer.sync()

    return append


async def journal_messages(
    store: Store,
    run_id: str,
    seen: Collection[str],
    journal: Callable[[ev.Message], Awaitable[None]],
) -> None:
    """Journal the run's waiting messages (skipping those ``seen`` in its journal), then
    remove them from the inbox."""
    waiting = await store.messages(run_id)
    for message in waiting:
        if message.message_id not in seen:
            await journal(message)  # durable when this returns
    if waiting:
        await store.remove_messages(run_id, [m.message_id for m in waiting])
