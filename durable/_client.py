"""``durable.Client``: hand work to ``durable worker`` processes, executing nothing itself.

A client creates runs (their journals hold only ``RunStarted``), sends
signals and cancel requests (through the store's inbox when a worker holds the
run), and waits for outcomes by reading journals. The workers, sharing the store, find the new
runs and execute them.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from typing import Any

import trio

from ._asyncio import Guest, hosted, on_asyncio, on_trio
from ._core import events as ev
from ._core.commands import Workflow
from ._core.errors import StoreError, UnknownRunError
from ._core.ids import check_run_id
from ._core.outcomes import outcome_of, result_of
from ._core.values import encode_call, encode_value
from ._inbox import send
from ._retry import retry_run
from ._runtime import _check_same, _first_args, check_workflow
from ._store import Store
from ._store_from import store_from
from ._telemetry import start_context


class ClientHandle:
    """A run handed to workers; :meth:`result` waits for its journaled outcome."""

    def __init__(self, client: Client, run_id: str, workflow: str) -> None:
        self.client = client
        self.run_id = run_id
        self.workflow = workflow

    def __repr__(self) -> str:
        return f"<ClientHandle {self.run_id!r} of {self.workflow!r}>"

    @on_trio
    async def status(self) -> str:
        """The run's state as ``durable ls`` shows it (see docs/cli.md), read from the store now.

        Unfinished: ``"queued"`` (no process has taken it: no worker yet, or one let it go
        with work in hand), ``"running"`` (a live process holds it and has work in hand),
        ``"waiting"`` (all it does is wait: a timer, a signal, a retry backoff) or
        ``"stalled"`` (its holder died, or its lease expired, and nobody took it yet).
        Finished: ``"completed"``, ``"failed"``, ``"cancelled"`` or ``"continued"``
        (continued as new). A journal that cannot be read to its end raises its error.

        Raises:
            UnknownRunError: there is no run ``run_id``.
        """
        from . import _journals  # noqa: PLC0415 - the model of `durable ls`, loaded when first asked

        journal = await _journals.read(self.client.store, self.run_id)
        if journal is None:
            raise UnknownRunError(self.run_id, self.client.store)
        if journal.error is not None:
            raise journal.error
        return journal.timeline().status

    @on_trio
    async def result(self, *, poll: float = 0.05) -> Any:
        """Wait until a worker finishes the run; return its result.

        Raises:
            WorkflowFailed: the workflow raised.
            Cancelled: the run was cancelled.
        """
        while True:
            last = (await self._events())[-1]
            if isinstance(last, ev.TERMINAL):
                return result_of(outcome_of(last), run_id=self.run_id, workflow=self.workflow)
            await trio.sleep(poll)

    async def _events(self) -> list[ev.Event]:
        events = await self.client.store.read(self.run_id)
        if not events:
            raise UnknownRunError(self.run_id, self.client.store)
        return events


class Client:
    """Start, signal and cancel runs that ``durable worker`` processes execute.

    Its methods are awaited from trio or from asyncio (a FastAPI handler) alike.

    Args:
        store: the store the workers share (a directory for a FileStore on the same
            machine), or None for the default (``$DURABLE_STORE`` or ``./.durable``).
    """

    def __init__(self, store: Store | str | os.PathLike[str] | None = None) -> None:
        self.store = store_from(store)
        self._holds: list[contextlib.AbstractAsyncContextManager[Guest]] = []

    async def __aenter__(self) -> Client:
        """Optional: ``async with durable.Client(store) as client:`` (a FastAPI lifespan).

        Under asyncio it keeps durable's trio guest on the loop between calls; each
        call made outside such a block (and outside a Runtime) starts and stops it,
        about half a millisecond. On trio it changes nothing.
        """
        if on_asyncio():
            hold = hosted()
            await hold.__aenter__()
            self._holds.append(hold)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._holds:
            await self._holds.pop().__aexit__(None, None, None)

    @on_trio
    async def start(
        self, workflow: Workflow[..., Any], *args: Any, id: str | None = None, **kwargs: Any
    ) -> ClientHandle:
        """Create the run (or attach to run ``id``); a worker executes it.

        Raises:
            RunConflictError: run ``id`` exists with another workflow or other arguments.
            SerializationError: an argument cannot be journaled.
        """
        check_workflow(workflow, "start")
        run_id = check_run_id(id) if id is not None else uuid.uuid4().hex
        encoded = encode_call(args, kwargs, what=f"workflow {workflow.name!r}")
        trace = start_context(run_id, workflow.name)  # "" unless the application traces
        started = ev.RunStarted(run_id, workflow.name, encoded, time.time(), traceparent=trace)
        writer = await self.store.create(started)
        if writer is not None:
            writer.close()
            return ClientHandle(self, run_id, workflow.name)
        events = await self.store.read(run_id)
        if not events or not isinstance(events[0], ev.RunStarted):
            raise StoreError(f"run {run_id!r} exists in {self.store!r} but cannot be read", run_id=run_id)
        started = events[0]
        _check_same(run_id, started.workflow, _first_args(started, encoded), workflow.name, encoded)
        return ClientHandle(self, run_id, workflow.name)

    @on_trio
    async def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send the signal ``name`` with ``payload`` to run ``run_id``.

        It is durable when this returns: in the run's journal if no worker holds
        the run, else in the store's inbox, from which the worker holding it
        journals it (within its poll interval).

        Raises:
            UnknownRunError: there is no run ``run_id``.
            RunConflictError: the run has finished.
            SerializationError: the payload cannot be journaled.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a signal name must be a non-empty str (got {name!r})")
        encoded = encode_value(payload, what=f"the payload of signal {name!r}")
        await send(self.store, run_id, ev.SignalReceived(name, encoded, time.time()))

    @on_trio
    async def retry(self, run_id: str, reason: str = "") -> ClientHandle:
        """Retry the failed run ``run_id``: a worker runs it again with its current code.

        Journals ``RunRetried`` (durable when this returns; the failure stays in the
        journal's history, and ``durable show`` draws it) and makes the run due, so a
        ``durable worker`` (or ``Runtime.recover()``, or ``durable.run`` with its id)
        takes it: the steps that completed before the failure are replayed, not run
        again, and the step the workflow raised from runs again with fresh attempts.
        See ``Runtime.retry``.

        Args:
            reason: why, kept in the journal (for ``durable show``).

        Raises:
            UnknownRunError: there is no run ``run_id``.
            RunNotRetryableError: the run has not failed (it runs or waits, completed,
                was cancelled), or a step to run again ran a child run that was cancelled.
            RunLockedError: another process holds the run.
        """
        opened = await retry_run(self.store, run_id, reason, time.time)
        started = opened.events[0]
        await self.store.release(opened.writer, time.time())
        workflow = started.workflow if isinstance(started, ev.RunStarted) else "?"
        return ClientHandle(self, run_id, workflow)

    @on_trio
    async def cancel(self, run_id: str, reason: str = "") -> None:
        """Cancel run ``run_id``, durably, as :meth:`signal` delivers (see ``Runtime.cancel``).

        Raises:
            UnknownRunError: there is no run ``run_id``.
            RunConflictError: the run has finished.
        """
        if not isinstance(reason, str):
            raise TypeError(f"a cancel reason must be a str (got {reason!r})")
        await send(self.store, run_id, ev.CancelRequested(reason, time.time()))
