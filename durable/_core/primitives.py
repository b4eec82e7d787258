"""Workflow primitives beyond activities: durable timers, recorded values, versioning markers.

Each is a frozen command built by a small public function; the interpreter
journals what replay needs and nothing more:

* :func:`sleep` journals its deadline as wall-clock time (``TimerStarted``), so
  a process that dies in the middle of a one-hour sleep and restarts twenty
  minutes later waits only the remaining forty;
* :func:`now`, :func:`random`, :func:`uuid4` and :func:`side_effect` produce a
  value once and journal it (``SideEffectRecorded``); replay returns the
  recorded value;
* :func:`patched` answers True in runs that reach it live and False in runs
  whose journal already went past that point without it (``PatchRecorded``).
"""

from __future__ import annotations

import datetime
import random as _random
import uuid as _uuid
from collections.abc import Callable
from typing import Any

import attrs

from .commands import MAX_NAME, Command, call_text, check_name
from .durations import Duration, format_duration, parse_duration
from .values import encode_call


@attrs.frozen(slots=True)
class Sleep(Command):
    """A durable timer: resume the workflow ``seconds`` after it started."""

    kind = "sleep"
    seconds: float

    def describe(self) -> str:
        return f"sleep {format_duration(self.seconds)}"


@attrs.frozen(slots=True)
class SideEffect(Command):
    """A value produced once by ``fn`` and journaled; replay returns the journaled value.

    Attributes:
        name: the name written in the journal and compared on replay.
        fn: what produces the value (called with the runtime's wall-clock time for ``now``).
    """

    kind = "side_effect"
    name: str
    fn: Callable[..., Any] = attrs.field(eq=False, repr=False)
    args: tuple[Any, ...] = attrs.field(default=(), eq=False, repr=False)
    kwargs: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    def describe(self) -> str:
        return f"side effect {self.name}{call_text(self.args, self.kwargs)}"


@attrs.frozen(slots=True)
class Patched(Command):
    """A versioning question: is this run new enough to take the code path marked ``change_id``?"""

    kind = "patched"
    change_id: str

    def describe(self) -> str:
        return f"patched({self.change_id!r})"


#: Commands that may run side by side in a gather or a race.
_CONCURRENT = ("activity", "sleep", "side_effect", "child")


@attrs.frozen(slots=True)
class Gather(Command):
    """Run commands concurrently; resume with their results in argument order."""

    kind = "gather"
    commands: tuple[Command, ...]

    def describe(self) -> str:
        return f"gather({', '.join(c.describe() for c in self.commands)})"


@attrs.frozen(slots=True)
class Race(Command):
    """Run commands concurrently; resume with ``(index, result)`` of the first to finish."""

    kind = "race"
    commands: tuple[Command, ...]

    def describe(self) -> str:
        return f"race({', '.join(c.describe() for c in self.commands)})"


def _children(what: str, commands: tuple[Any, ...]) -> tuple[Command, ...]:
    for index, command in enumerate(commands):
        if not isinstance(command, Command):
            hint = " (call it: `activity(...)`)" if callable(command) else ""
            raise TypeError(
                f"{what}() takes commands such as activity calls; argument {index + 1} is "
                f"{command!r} ({type(command).__name__}){hint}"
            )
        if command.kind not in _CONCURRENT:
            raise TypeError(
                f"{what}() runs activities, timers, side effects and child workflows side by side; argument "
                f"{index + 1} is {command.describe()}, which cannot run in a {what}"
            )
    return tuple(commands)


def gather(*commands: Command) -> Gather:
    """``results = yield durable.gather(a(1), b(2), durable.sleep("1m"))``: run side by side.

    Returns the results in argument order. The first failure, in the order the
    journal recorded them, raises into the workflow (``durable.ActivityError``)
    and the others are cancelled. ``gather()`` of nothing returns ``[]``.
    """
    return Gather(_children("gather", commands))


def race(*commands: Command) -> Race:
    """``index, result = yield durable.race(fetch(x), durable.sleep("30s"))``: first one wins.

    Returns ``(index, result)`` of the first command to finish; the others are
    cancelled and journaled as cancelled. Which one finished first is decided
    once, in the journal, and replay honours it. If the first to finish failed,
    its error raises into the workflow.
    """
    if not commands:
        raise TypeError("race() needs at least one command")
    return Race(_children("race", commands))


@attrs.frozen(slots=True)
class WaitSignal(Command):
    """Wait for the signal ``name`` (at most ``timeout`` seconds); resume with its payload."""

    kind = "signal"
    name: str
    timeout: float | None = None

    def describe(self) -> str:
        limit = f", timeout={format_duration(self.timeout)}" if self.timeout is not None else ""
        return f"wait_signal({self.name!r}{limit})"


def wait_signal(name: str, timeout: Duration | None = None) -> WaitSignal:
    """``payload = yield durable.wait_signal("approved", timeout="24h")``: wait for a signal.

    Signals are sent from outside with ``Runtime.signal(run_id, name, payload)``
    (or ``durable signal``). A signal sent before the workflow waits for it is
    kept in the journal and delivered at the wait, never lost; several signals
    of one name are delivered one per wait, in the order they arrived.

    Raises:
        durable.SignalTimeout: at the ``yield``, when ``timeout`` passes first.
        TypeError: ``name`` is not a non-empty str.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"a signal name must be a non-empty str (got {name!r})")
    seconds = None if timeout is None else parse_duration(timeout, what="signal timeout")
    return WaitSignal(name, seconds)


@attrs.frozen(slots=True)
class ContinueAsNew(Command):
    """End this run and start it again, same id, fresh journal, with new arguments."""

    kind = "continue_as_new"
    encoded_args: bytes
    args: tuple[Any, ...] = attrs.field(eq=False, repr=False)
    kwargs: dict[str, Any] = attrs.field(eq=False, repr=False)

    def describe(self) -> str:
        return f"continue_as_new{call_text(self.args, self.kwargs)}"


def continue_as_new(*args: Any, **kwargs: Any) -> ContinueAsNew:
    """``yield durable.continue_as_new(next_state)``: start over with a fresh journal.

    Ends the run and starts the same workflow again under the same run id with
    these arguments and an empty journal, so a workflow that loops forever (a
    subscription, a poller) keeps its journal bounded. ``handle.result()``
    follows the chain to the result of the incarnation that finally returns.

    Raises:
        SerializationError: an argument cannot be journaled.
    """
    return ContinueAsNew(encode_call(args, kwargs, what="continue_as_new"), args, kwargs)


def sleep(duration: Duration) -> Sleep:
    """A durable timer: ``yield durable.sleep("1h")`` resumes the workflow an hour later.

    The deadline is journaled as wall-clock time, so the wait survives crashes
    and restarts: a process that restarts later waits only what is left.

    Raises:
        ValueError, TypeError: not a duration (``"3 parsecs"``, a negative number).
    """
    return Sleep(parse_duration(duration, what="sleep duration"))


def _produce_now(clock: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(clock, tz=datetime.UTC)


def _produce_random(clock: float) -> float:
    return _random.random()


def _produce_uuid4(clock: float) -> _uuid.UUID:
    return _uuid.uuid4()


def now() -> SideEffect:
    """``yield durable.now()``: the current time as a timezone-aware UTC datetime, journaled."""
    return SideEffect("durable.now", _produce_now)


def random() -> SideEffect:
    """``yield durable.random()``: a float in [0, 1), drawn once and journaled."""
    return SideEffect("durable.random", _produce_random)


def uuid4() -> SideEffect:
    """``yield durable.uuid4()``: a random UUID, drawn once and journaled."""
    return SideEffect("durable.uuid4", _produce_uuid4)


def side_effect(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> SideEffect:
    """``yield durable.side_effect(fn, *args)``: call ``fn`` once and journal its result.

    For cheap, local, non-deterministic values (a generated id, a config read).
    Anything that talks to the outside world, may fail or may take long belongs
    in an activity. An exception raised by ``fn`` is journaled too and raised
    at the ``yield`` on every replay.

    Raises:
        TypeError: ``fn`` is not callable.
        SerializationError: an argument cannot be journaled.
    """
    if not callable(fn):
        raise TypeError(f"side_effect needs a function to call (got {fn!r})")
    name = check_name(getattr(fn, "__qualname__", None) or repr(fn)[:MAX_NAME])
    encode_call(args, kwargs, what=f"side effect {name!r}")  # refuse unjournalable arguments now
    return SideEffect(name, lambda clock: fn(*args, **kwargs), args, kwargs)


def patched(change_id: str) -> Patched:
    """``if (yield durable.patched("change-id")):`` the new code path, else the old one.

    True when the run reaches this point live (a new run, or a resumed run past
    the end of its journal): the answer is journaled. False when the journal
    shows the run already went past this point without the marker, so runs that
    started before the change replay through the old code path.
    """
    if not isinstance(change_id, str) or not change_id:
        raise TypeError(f"patched() needs a non-empty str change id (got {change_id!r})")
    return Patched(change_id)
