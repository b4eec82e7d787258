"""Messages for runs held elsewhere: signals and cancel requests sent through the store.

A run has one writer at a time (a lock, or a lease). A sender that does not
hold the run posts its message to the run's inbox in the store, durably, then
tries to take the run itself: if nobody holds it, the sender journals the
waiting messages and lets it go again; if a process holds it, that process's
runtime finds the message (it watches the inbox) and journals it.

Either way a message is journaled before it leaves the inbox, and it carries
an id that the journal keeps, so a crash between the two can only make it be
found again and skipped, never journaled twice or lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection

import attrs

from . import _events as ev
from ._errors import RunConflictError, RunLockedError, UnknownRunError
from ._store import JournalWriter, Store
from ._store_file import check_run_id


def with_id(message: ev.Message) -> ev.Message:
    """The message with a fresh unique ``message_id``."""
    return attrs.evolve(message, message_id=uuid.uuid4().hex)


def describe(message: ev.Message) -> str:
    """``the signal 'name'`` or ``the cancellation``, for error messages."""
    return f"the signal {message.name!r}" if isinstance(message, ev.SignalReceived) else "the cancellation"


async def send(store: Store, run_id: str, message: ev.Message) -> None:
    """Deliver ``message`` to a run that this process does not run.

    Raises:
        UnknownRunError: no such run.
        RunConflictError: the run has finished.
    """
    run_id = check_run_id(run_id)
    events = await store.read(run_id)
    if not events:
        raise UnknownRunError(run_id, store)
    if isinstance(events[-1], ev.TERMINAL):
        raise RunConflictError(f"run {run_id!r} has finished; {describe(message)} was not delivered")
    await store.post(run_id, with_id(message))
    try:
        opened = await store.open(run_id)
    except RunLockedError:
        return  # its holder takes the message from the inbox
    if opened is None:
        return
    try:
        if isinstance(opened.events[-1], ev.TERMINAL):
            # It ended meanwhile: nobody will take its messages.
            await store.remove_messages(run_id, [m.message_id for m in await store.messages(run_id)])
            return
        seen = {m.message_id for m in opened.events if isinstance(m, ev.Message) and m.message_id}
        await journal_messages(store, run_id, seen, _appender(opened.writer))
    finally:
        opened.writer.close()


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
) -> int:
    """Journal the run's waiting messages (skipping those ``seen`` in its journal), then
    remove them from the inbox. Returns how many were journaled."""
    waiting = await store.messages(run_id)
    if not waiting:
        return 0
    taken = 0
    for message in waiting:
        if message.message_id not in seen:
            await journal(message)  # durable when this returns
            taken += 1
    await store.remove_messages(run_id, [m.message_id for m in waiting])
    return taken
