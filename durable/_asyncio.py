"""asyncio: durable's trio machinery, run as a guest on the running asyncio loop.

Theory of operation
-------------------
durable's executor, runtime, client and stores are written for trio, and the
simulator proves that code, crash point by crash point. Rather than a second
executor for asyncio (two implementations of the write-ahead protocol, one of
them never simulated), an asyncio program runs the *same* trio code as a guest
on its own loop: :func:`trio.lowlevel.start_guest_run` lets trio schedule its
tasks through ``loop.call_soon`` on the asyncio thread, and wait for I/O in a
helper thread only when it has nothing to run. One thread, one loop: trio tasks
and asyncio tasks take turns, nothing blocks the loop.

- :class:`Guest`: the one trio run hosted on an asyncio loop. A thread can host
  only one trio run at a time, so every ``Runtime`` and every ``Client`` call on
  a loop shares it; it starts with its first user and ends with its last
  (:func:`hosted`), so it never outlives what uses it.
- :func:`on_trio`: the decorator on the public async methods (``Runtime.start``,
  ``RunHandle.result``, ``Client.signal``...). Called from trio, it is the
  method itself; called from asyncio, the method runs as a task in the guest,
  and cancelling the asyncio caller cancels that task (and waits for it).
- :meth:`Guest.run_activity`: an ``async def`` activity of a runtime hosted on
  asyncio runs as an asyncio task on the host loop (so aiohttp, asyncpg,
  redis.asyncio work in it), awaited by the executor's trio task; a timeout
  cancels the asyncio task as it would cancel a trio one.
- :func:`needs_other_loop`: the errors an activity raises when it was written
  for the other loop, turned into one clear, non-retried failure.
- :class:`Hosting`: a ``Runtime`` entered from asyncio keeps its nursery in one
  task of the guest (a nursery is left by the task that entered it).
- :func:`run`: the synchronous entry points' way onto asyncio (``asyncio.run``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import outcome
import sniffio
import trio

from ._core.errors import DurableInternalError, LoopMismatchError
from ._loops import Loop

if TYPE_CHECKING:  # asyncio is imported when used: only asyncio programs pay for it
    import asyncio

P = ParamSpec("P")
T = TypeVar("T")

#: Turns of the asyncio loop an activity's trio task waits for it before it sleeps
#: (Guest.run_activity).
_SPINS = 3

#: The guest of each asyncio loop that has one now.
_guests: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Guest] = weakref.WeakKeyDictionary()


def on_asyncio() -> bool:
    """Whether the caller is an asyncio task (not a trio one, even a guest's)."""
    try:
        return sniffio.current_async_library() == "asyncio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


class Guest:
    """The trio run hosted on one asyncio loop (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: How many Runtimes and calls use it now; it closes when the last one leaves.
        self.users = 0
        self.closing = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._ready: asyncio.Future[outcome.Outcome[None]] = loop.create_future()
        self._ended: asyncio.Future[outcome.Outcome[None]] = loop.create_future()

    @property
    def nursery(self) -> trio.Nursery:
        """Where the guest's tasks run (from trio, inside the guest)."""
        if self._nursery is None:
            raise DurableInternalError("a trio guest was used before it started")
        return self._nursery

    async def _start(self) -> None:
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=self.loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=self.loop.call_soon,
            done_callback=self._done,
            # asyncio owns the process's signal wake-up fd (loop.add_signal_handler).
            host_uses_signal_set_wakeup_fd=True,
        )
        await self._until_ready()

    async def _until_ready(self) -> None:
        import asyncio  # noqa: PLC0415 - see TYPE_CHECKING above

        ready = await asyncio.shield(self._ready)
        if isinstance(ready, outcome.Error):  # read by every user: not unwrap(), once only
            raise ready.error

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.loop.call_soon(_settle, self._ready, outcome.Value(None))
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def _done(self, result: outcome.Outcome[None]) -> None:
        """The trio run has ended (asked to, or failed): the loop may host another."""
        self.closing = True
        if _guests.get(self.loop) is self:
            del _guests[self.loop]
        _settle(self._ended, result)
        # Ended before it was ready: the starter and those waiting with it learn why.
        if not self._ready.done():
            never = DurableInternalError("a trio guest ended before it was ready")
            _settle(self._ready, result if isinstance(result, outcome.Error) else outcome.Error(never))

    async def _close(self) -> None:
        import asyncio  # noqa: PLC0415 - see TYPE_CHECKING above

        if self._token is None or self._stop is None:
            raise DurableInternalError("a trio guest closed before it started")
        self.closing = True
        self._token.run_sync_soon(self._stop.set)
        ended = await asyncio.shield(self._ended)
        if isinstance(ended, outcome.Error):
            raise ended.error

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` as a trio task in the guest and return what it returns (from asyncio).

        Cancelling the caller cancels the task, and waits until it has ended.
        """
        import asyncio  # noqa: PLC0415 - see TYPE_CHECKING above

        if self._token is None or self._nursery is None:
            raise DurableInternalError("a trio guest was called before it started")
        nursery = self._nursery
        result: asyncio.Future[outcome.Outcome[T]] = self.loop.create_future()
        scope = trio.CancelScope()

        async def task() -> None:
            with scope:
                got = await outcome.acapture(fn, *args, **kwargs)
                self.loop.call_soon(_settle, result, got)
                return
            # Cancelled from the asyncio side before it could end.
            self.loop.call_soon(_settle, result, outcome.Error(asyncio.CancelledError()))

        self._token.run_sync_soon(nursery.start_soon, task)
        try:
            got = await asyncio.shield(result)
        except asyncio.CancelledError:
            self._token.run_sync_soon(scope.cancel)
            with contextlib.suppress(BaseException):
                await result  # it ends at its next checkpoint
            raise
        return _unwrap(got)

    async def run_activity(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run an ``async def`` activity as an asyncio task on the host loop (from trio).

        The task's context is the caller's (the activity sees ``activity_info()``),
        minus trio's mark: inside it, ``sniffio`` says asyncio, as it is.
        """
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()
        context = contextvars.copy_context()
        context.run(sniffio.current_async_library_cvar.set, None)
        task = self.loop.create_task(fn(), context=context)
        try:
            # A short spin first: each trio checkpoint lets the asyncio loop run a turn,
            # and an activity that returns at once (or after a trivial await) is done
            # within a turn or two. Waiting on the event instead sends trio idle, and
            # its guest then waits for I/O in a helper thread: two thread hand-offs,
            # 10x the cost of a step. A longer activity pays them, once.
            for _ in range(_SPINS):
                if task.done():
                    break
                await trio.lowlevel.checkpoint()
            else:
                task.add_done_callback(lambda _: token.run_sync_soon(done.set))
                await done.wait()
        except BaseException:  # cancelled (a timeout, the run stops): so is the activity
            task.cancel()
            if not task.done():
                task.add_done_callback(lambda _: token.run_sync_soon(done.set))
                with trio.CancelScope(shield=True):
                    await done.wait()
            raise
        if task.cancelled():  # by someone else: the attempt fails (and is retried)
            raise ActivityTaskCancelled("the activity's asyncio task was cancelled by other code")
        return task.result()


class ActivityTaskCancelled(Exception):
    """An ``async def`` activity's asyncio task was cancelled by code other than durable
    (durable cancels it only on a timeout or when the run stops)."""


class Hosting:
    """A runtime entered from asyncio: its nursery must be entered and left by one trio
    task, so one task of the guest enters it, waits, and leaves it when told to."""

    def __init__(self) -> None:
        self._hold: contextlib.AbstractAsyncContextManager[Guest] | None = None
        self._guest: Guest | None = None
        self._leave: trio.Event | None = None
        self._left: trio.Event | None = None

    async def enter(self, enter: Callable[[], Awaitable[None]], leave: Callable[[], Awaitable[None]]) -> None:
        """From asyncio: hold the loop's guest, and run ``enter`` in a task of it that
        runs ``leave`` when :meth:`leave` is called."""
        self._hold = hosted()
        self._guest = await self._hold.__aenter__()
        try:
            await self._guest.call(self._start, enter, leave)
        except BaseException:
            await self._hold.__aexit__(None, None, None)
            raise

    async def _start(
        self, enter: Callable[[], Awaitable[None]], leave: Callable[[], Awaitable[None]]
    ) -> None:
        self._leave, self._left = trio.Event(), trio.Event()

        async def host(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            if self._leave is None or self._left is None:
                raise DurableInternalError("a hosted runtime started without its events")
            try:
                await enter()
                task_status.started()
                await self._leave.wait()
                await leave()
            finally:
                self._left.set()

        if self._guest is None:
            raise DurableInternalError("a hosted runtime started without its guest")
        await self._guest.nursery.start(host)

    async def leave(self) -> None:
        """From asyncio: have the task leave the runtime, wait for it, let go of the guest."""
        if self._guest is None or self._hold is None:
            raise DurableInternalError("a hosted runtime left before it entered")
        try:
            await self._guest.call(self._stop)
        finally:
            await self._hold.__aexit__(None, None, None)

    async def _stop(self) -> None:
        if self._leave is None or self._left is None:
            raise DurableInternalError("a hosted runtime left before it entered")
        self._leave.set()
        await self._left.wait()


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _unwrap(got: outcome.Outcome[T]) -> T:
    """The value, or the error raised without the frames of this module."""
    if isinstance(got, outcome.Error):
        error = got.error
        del got
        raise error
    return got.unwrap()


@contextlib.asynccontextmanager
async def hosted() -> AsyncIterator[Guest]:
    """The running asyncio loop's trio guest, started for the first user and ended
    after the last (from asyncio)."""
    import asyncio  # noqa: PLC0415 - see TYPE_CHECKING above

    loop = asyncio.get_running_loop()
    guest = _guests.get(loop)
    while guest is not None and guest.closing:
        # A thread hosts one trio run at a time: the last one must end first.
        await asyncio.shield(guest._ended)
        guest = _guests.get(loop)
    if guest is None:
        guest = _guests[loop] = Guest(loop)
    guest.users += 1
    try:
        if guest.users == 1:
            await guest._start()
        else:
            await guest._until_ready()
    except BaseException:
        guest.users -= 1
        if guest.users == 0 and _guests.get(loop) is guest:
            del _guests[loop]  # it never ran (or ended): the next user starts another
        raise
    try:
        yield guest
    finally:
        guest.users -= 1
        if guest.users == 0:
            await guest._close()


def current_guest() -> Guest | None:
    """The guest whose trio run the caller is in, when that run is hosted on asyncio
    (from trio): a runtime entered there runs its async activities on the host loop."""
    if "asyncio" not in sys.modules:
        return None  # nothing imported asyncio: no loop can host this run
    import asyncio  # noqa: PLC0415 - see TYPE_CHECKING above

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    guest = _guests.get(loop)
    if guest is None or guest._token is not trio.lowlevel.current_trio_token():
        return None
    return guest


def run_hosted(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run trio code (``durable worker``'s loop) as the guest of a fresh asyncio loop:
    its runtimes run async activities on asyncio."""

    async def main() -> T:
        async with hosted() as guest:
            return await guest.call(fn, *args, **kwargs)

    return run(main)


def on_trio(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Let an async function of durable's trio machinery be awaited from asyncio too."""

    @functools.wraps(method)
    async def either(*args: P.args, **kwargs: P.kwargs) -> T:
        if not on_asyncio():
            return await method(*args, **kwargs)
        async with hosted() as guest:
            return await guest.call(method, *args, **kwargs)

    return either


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """``fn()`` (an async function written against durable's API) under ``asyncio.run``."""
    import asyncio  # noqa: PLC0415 - see TYPE_CHECKING above

    async def main() -> T:
        return await fn()

    return asyncio.run(main())


def needs_other_loop(exc: BaseException, activity: str, runs_on: Loop) -> LoopMismatchError | None:
    """The clear error for an activity written for the loop the runtime does not run on,
    recognised by what each library raises when called from the other, itself or as the
    cause of what a client library raised (redis.asyncio's ConnectionError); else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        mismatch = _mismatch(exc, activity, runs_on)
        if mismatch is not None:
            return mismatch
        # What Python shows as the cause: `raise ... from e`, or the error being handled.
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)  # type: ignore[assignment]
    return None


def _mismatch(exc: BaseException, activity: str, runs_on: Loop) -> LoopMismatchError | None:
    text = str(exc)
    if runs_on == "trio" and (
        (isinstance(exc, RuntimeError) and "no running event loop" in text)
        # trio, given what an asyncio future yields: "... a library written for asyncio",
        # or for a bare yield (asyncio.sleep(0)) "... written for some other framework
        # like asyncio"
        or (isinstance(exc, TypeError) and "written for" in text and "asyncio" in text)
        # asyncio's Event, Queue, Lock... with no asyncio loop running: they ask None for
        # a future
        or (isinstance(exc, AttributeError) and "'NoneType' object has no attribute 'create_future'" in text)
    ):
        return LoopMismatchError(activity, needs="asyncio", runs_on="trio")
    if (
        runs_on == "asyncio"
        and isinstance(exc, RuntimeError)
        and ("must be called from async context" in text or "Task got bad yield" in text)
    ):
        return LoopMismatchError(activity, needs="trio", runs_on="asyncio")
    return None
