"""Retrying a failed run: the marker journaled, the run made due, its failed child runs first.

What :meth:`Runtime.retry` and :meth:`Client.retry` share. :func:`retry_run`
appends ``RunRetried`` to a failed run's journal, durably, and returns the run
opened (held) with its events; replay then reads the journal without the records
the marker supersedes (:mod:`durable._core.retried`), so the failed step runs
again with fresh attempts. Nothing is written when the run cannot be retried.

Crash safety: a run whose journal no longer ends with its ``RunFailed`` must be
found by recovery and by workers, so it is made due before the marker is
written (a store's due index announces a run before its journal needs it, as a
creation does): the run is let go due now, taken again, marked, and made due
again (a worker that took it between the two, found it failed and dropped its
entry, cannot leave it unannounced). A crash before the marker leaves a failed
run (an entry that costs a look); a crash after it, a run that recovery or a
worker continues. A step that completed before the failure is never run again:
replay feeds its journaled result.

A reopened step that ran a child workflow is only worth running again if the
child run can: a failed child run is retried first (deepest first), so that the
parent's step finds it running; a cancelled one cannot run again, and the
retry is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ._core import events as ev
from ._core.commands import Workflow, lookup_workflow
from ._core.errors import RunLockedError, RunNotRetryableError, UnknownRunError, UnknownWorkflowError
from ._core.machine import replay
from ._core.retried import reopened_steps
from ._store import Opened, Store

#: How often a retry tries to take the run when it is held (a worker that took it finds it
#: failed and lets it go at once; a process that just ended it may still be letting it go),
#: and how long it waits between: a run held for longer is RunLockedError.
_TAKE_AGAIN = 10
_TAKE_AGAIN_WAIT = 0.05


def not_failed(events: list[ev.Event]) -> str | None:
    """Why a run with these events cannot be retried (its status), or None: it failed."""
    last = events[-1]
    if type(last) is ev.RunFailed:
        return None
    statuses = {
        ev.RunCompleted: "completed",
        ev.RunCancelled: "cancelled",
        ev.RunContinuedAsNew: "continued as new",
        ev.RunRetried: "retried",
    }
    return statuses.get(type(last), "running")


async def check_retryable(store: Store, run_id: str) -> tuple[list[ev.Event], list[str]]:
    """The run's events, and the failed child runs to retry before it, deepest first.

    Raises:
        UnknownRunError: there is no run ``run_id``.
        RunNotRetryableError: the run has not failed, or a step to run again ran a
            child run that was cancelled.
    """
    events = await store.read(run_id)
    if not events:
        raise UnknownRunError(run_id, store)
    status = not_failed(events)
    if status is not None:
        raise RunNotRetryableError(run_id, status)
    children: list[str] = []
    starts = {e.seq: e.run_id for e in events if type(e) is ev.ChildStarted}
    for seq in reopened_steps(events, run_id):
        child_id = starts.get(seq)
        if child_id is None:
            continue  # not a child step
        child = await store.read(child_id)
        if not child:
            continue  # never created (a crash before it): the step creates it
        if type(child[-1]) is ev.RunCancelled:
            raise RunNotRetryableError(run_id, "failed", child_id=child_id, step=seq)
        if type(child[-1]) is ev.RunFailed:
            _, grandchildren = await check_retryable(store, child_id)
            children += [*grandchildren, child_id]
    return events, children


async def retry_run(store: Store, run_id: str, reason: str, clock: Callable[[], float]) -> Opened:
    """Journal ``RunRetried(clock(), reason)`` in the failed run ``run_id`` (after its failed
    child runs, each then made due), durably; the run is returned opened, its writer held.

    Raises:
        UnknownRunError, RunNotRetryableError: see :func:`check_retryable`; nothing written.
        RunLockedError: another process holds the run.
    """
    if not isinstance(reason, str):
        raise TypeError(f"a retry reason must be a str (got {reason!r})")
    _, children = await check_retryable(store, run_id)
    for child_id in children:
        child = await _mark(store, child_id, "its parent run was retried", clock)
        await store.release(child.writer, clock())  # the parent's step finds it due
    return await _mark(store, run_id, reason, clock)


async def retry_here(
    store: Store, run_id: str, reason: str, clock: Callable[[], float]
) -> tuple[Workflow[..., Any], Opened]:
    """:func:`retry_run` for a process that continues the run itself: its workflow must be
    defined here, and replay the journal up to the failure (checked before anything is
    written, rather than by the run after its retry). The workflow and the opened run.

    Raises:
        UnknownWorkflowError: the workflow is not defined in this process.
        NonDeterminismError: the code does not replay the journal.
        UnknownRunError, RunNotRetryableError, RunLockedError: see :func:`retry_run`.
    """
    events = await store.read(run_id)
    if not events or not isinstance(events[0], ev.RunStarted):
        raise UnknownRunError(run_id, store)
    workflow = lookup_workflow(events[0].workflow)
    if workflow is None:
        raise UnknownWorkflowError(events[0].workflow, run_id)
    if type(events[-1]) is ev.RunFailed:  # else retry_run says why it cannot be retried
        replay(workflow, [*events, ev.RunRetried(clock(), reason)]).close()
    return workflow, await retry_run(store, run_id, reason, clock)


async def _mark(store: Store, run_id: str, reason: str, clock: Callable[[], float]) -> Opened:
    """Make the failed run due, then journal the marker durably, holding the run."""
    opened = await _take_again(store, run_id)
    await store.release(opened.writer, clock())  # announced before the marker (see the module)
    opened = await _take_again(store, run_id)
    retried = ev.RunRetried(clock(), reason)
    try:
        await store.retrying(run_id, opened.events[0].t)
        opened.writer.append(retried)
        await opened.writer.sync()
        await store.wake(run_id)  # in case a worker took it meanwhile and dropped its entry
    except BaseException:
        opened.writer.close()
        raise
    return Opened([*opened.events, retried], opened.writer, opened.previous)


async def _open_failed(store: Store, run_id: str) -> Opened:
    """The run opened, if it still ends with its failure (checked again, now that it is held)."""
    opened = await store.open(run_id)
    if opened is None:
        raise UnknownRunError(run_id, store)
    status = not_failed(opened.events)
    if status is not None:
        opened.writer.close()
        raise RunNotRetryableError(run_id, status)
    return opened


async def _take_again(store: Store, run_id: str) -> Opened:
    """:func:`_open_failed`, trying again for a moment while another process holds the run."""
    for _ in range(_TAKE_AGAIN - 1):
        try:
            return await _open_failed(store, run_id)
        except RunLockedError:  # a worker looks at it: it finds it failed and lets it go
            await trio.sleep(_TAKE_AGAIN_WAIT)
    return await _open_failed(store, run_id)
