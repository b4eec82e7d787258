"""Commands: the frozen values a workflow yields, and the decorators that make them.

Calling a decorated activity inside a workflow runs nothing: it returns an
:class:`ActivityCall`, a plain value that the workflow yields and the
interpreter carries out. Building a command has no side effect; the interpreter
gives it its sequence number when it is yielded.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

import attrs

from . import named
from .payloads import Encoded
from .policy import DEFAULT_POLICY, RetryPolicy
from .values import encode_call, encode_plain_call, encode_value, loads_shown

P = ParamSpec("P")
R = TypeVar("R")


class Command:
    """Base class of everything a workflow may yield."""

    __slots__ = ()

    #: The command kind written in the journal and compared on replay.
    kind: str = "command"

    def describe(self) -> str:  # pragma: no cover - every command overrides it
        return self.kind


@attrs.frozen(slots=True)
class ActivityCall(Command):
    """One call of an activity, as yielded by a workflow.

    Attributes:
        activity: the :class:`Activity` to call.
        encoded_args: the call's arguments, encoded for the journal (CBOR of ``[args, kwargs]``).
        policy: the retry policy for this call.
    """

    kind = "activity"
    activity: Activity[..., Any]
    encoded_args: bytes
    call_args: tuple[Any, ...] = attrs.field(eq=False, repr=False)
    call_kwargs: dict[str, Any] = attrs.field(eq=False, repr=False)
    policy: RetryPolicy

    @property
    def name(self) -> str:
        return self.activity.name

    def with_options(self, **options: Any) -> ActivityCall:
        """This call with some retry options replaced, for this one call only."""
        return attrs.evolve(self, policy=self.policy.with_options(options))

    def describe(self) -> str:
        return f"activity {self.name}{call_text(self.call_args, self.call_kwargs)}"


def call_text(args: Sequence[Any], kwargs: Mapping[str, Any], *, limit: int | None = 120) -> str:
    """``(1, 'x', retries=3)``: a call's arguments as Python would write them, cut to
    ``limit`` characters (None: never cut). The one formatter of calls."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"({text})"


def encoded_call_text(data: bytes, *, limit: int | None = 120) -> str:
    """:func:`call_text` of a journaled ``[args, kwargs]``; a description of the bytes
    when they do not decode (a description must never hide what it describes), and
    ``(<encoded by NAME>)`` for arguments a payload codec sealed."""
    try:
        call = loads_shown(data)
        if isinstance(call, Encoded):
            return f"({call!r})"
        args, kwargs = call
        return call_text(args, kwargs, limit=limit)
    except Exception:
        return f"(<{len(data)} bytes that do not decode>)"


class Activity(Generic[P, R]):
    """A function decorated with :func:`activity`. Call it in a workflow to get a command.

    Attributes:
        fn: the undecorated function, for unit tests.
        name: the name written in the journal.
        policy: the default :class:`RetryPolicy`.
    """

    def __init__(self, fn: Callable[P, R], name: str, policy: RetryPolicy) -> None:
        self.fn = fn
        self.name = name
        self.policy = policy
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> ActivityCall:
        encoded = encode_plain_call(args, kwargs) or encode_call(args, kwargs, what=f"activity {self.name!r}")
        # ActivityCall(self, encoded, args, kwargs, self.policy), set slot by slot: a
        # frozen attrs __init__ sets each field through object.__setattr__, and every
        # step, live or replayed, builds one (about 0.15 us less here).
        call: ActivityCall = _new(ActivityCall)
        _set_activity(call, self)
        _set_encoded_args(call, encoded)
        _set_call_args(call, args)
        _set_call_kwargs(call, kwargs)
        _set_policy(call, self.policy)
        return call

    def with_options(self, **options: Any) -> Activity[P, R]:
        """A copy of this activity with other default retry options."""
        return Activity(self.fn, self.name, self.policy.with_options(options))

    def __repr__(self) -> str:
        return f"<durable activity {self.name!r}>"


_new = object.__new__
#: The slots of ActivityCall, in field order (its fields have no defaults, validators
#: or converters, so setting each one is all its __init__ does).
_set_activity, _set_encoded_args, _set_call_args, _set_call_kwargs, _set_policy = (
    ActivityCall.__dict__[field.name].__set__ for field in attrs.fields(ActivityCall)
)


@overload
def activity(fn: Callable[P, R], /) -> Activity[P, R]: ...
@overload
def activity(*, name: str | None = None, **options: Any) -> Callable[[Callable[P, R]], Activity[P, R]]: ...
def activity(fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any) -> Any:
    """Declare an activity: a function that talks to the outside world.

    Works bare (``@durable.activity``) and with options
    (``@durable.activity(retries=3, timeout="30s")``). Options are the fields of
    :class:`RetryPolicy`. Sync functions run in a worker thread (a timed-out
    attempt is abandoned and counted as failed); ``async def`` functions run on
    trio and are cancelled on timeout.

    Args:
        name: the name written in the journal (default: the function's ``__qualname__``).
    """
    policy = DEFAULT_POLICY.with_options(options)

    def decorate(fn: Callable[..., Any]) -> Activity[..., Any]:
        _check_callable(fn, "activity")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"@durable.activity got the generator function {fn.__qualname__!r}; an activity "
                "returns a value (use @durable.workflow for a function that yields commands)"
            )
        named.note_annotations(fn)  # the classes its annotations name come back as themselves
        return Activity(fn, _name(name, fn), policy)

    return decorate if fn is None else decorate(fn)


def _check_callable(fn: object, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"@durable.{what} must decorate a function (got {fn!r})")


#: The longest name of a workflow, activity or side effect, in characters: names are
#: written into the journal with every step, so a name is text, not data.
MAX_NAME = 1000


def _name(name: str | None, fn: Callable[..., Any]) -> str:
    if name is None:
        name = fn.__qualname__
    elif not isinstance(name, str) or not name:
        raise TypeError(f"name= must be a non-empty str (got {name!r:.60})")
    return check_name(name)


def check_name(name: str) -> str:
    """Refuse a journal name that is too long or is not valid Unicode text."""
    if len(name) > MAX_NAME:
        raise ValueError(
            f"the name {name[:40]!r}... is {len(name):,} characters long; a name written in the "
            f"journal has at most {MAX_NAME:,} (pass a shorter name=)"
        )
    try:
        str.encode(name)
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"the name {name[:40]!r} holds a lone surrogate at index {exc.start}, which a journal "
            "cannot hold (pass name= with valid text)"
        ) from None
    return name


# --- activity_info ---------------------------------------------------------


@attrs.frozen
class ActivityInfo:
    """What an activity attempt knows about itself; read it with :func:`activity_info`.

    Attributes:
        run_id: the run the activity belongs to.
        seq: the step's sequence number in that run.
        attempt: 1 for the first attempt.
        activity: the activity's journal name.
        max_attempts: the most attempts its retry policy allows (``retries + 1``).
        idempotency_key: ``"<run_id>/<seq>"``, the same on every attempt and every
            recovery: pass it to external services so they apply the effect once.
        heartbeat_details: the details of the latest :func:`heartbeat` of an earlier
            execution of this step (a failed or timed-out attempt, or the attempt a
            crash interrupted), so that this one can go on from there; None when there
            was none. A retry in the same process sees the very latest; after a crash,
            the latest the journal holds (see "Long activities: heartbeats").
    """

    run_id: str
    seq: int
    attempt: int
    activity: str
    max_attempts: int = 1
    heartbeat_details: Any = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}/{self.seq}"


current_activity: contextvars.ContextVar[ActivityInfo] = contextvars.ContextVar("durable_activity")


def activity_info() -> ActivityInfo:
    """The :class:`ActivityInfo` of the activity attempt running now.

    Raises:
        RuntimeError: called outside an activity.
    """
    try:
        return current_activity.get()
    except LookupError:
        raise RuntimeError(
            "durable.activity_info() was called outside an activity; it only works while "
            "durable runs an @durable.activity function"
        ) from None


class HeartbeatSink(Protocol):
    """Where the heartbeats of the activity attempts of a run go (the executor's)."""

    def beat(self, info: ActivityInfo, details: bytes) -> None:
        """Attempt ``info`` reported progress: ``details`` (CBOR), from whatever thread it runs in."""


#: The sink of the run whose activities run in this context (set by the executor for
#: the time it executes a run; absent in ``sim.in_activity``, where heartbeats go nowhere).
heartbeat_sink: contextvars.ContextVar[HeartbeatSink] = contextvars.ContextVar("durable_heartbeats")


def heartbeat(details: Any = None) -> None:
    """Report that the activity attempt running now is alive, and how far it got.

    Call it from a long activity (sync or async) as it makes progress, with
    ``details`` saying where it is (a value the journal can hold, as for results:
    a cursor, a count, a dataclass). The next attempt of the step, after a failure,
    a timeout or a crash, reads the latest details as
    ``durable.activity_info().heartbeat_details`` and can go on from there. An
    attempt whose policy has a ``heartbeat_timeout`` fails (and is retried) when
    it goes that long without calling it.

    It is cheap: the details are kept in memory and journaled at most once every
    10 seconds per attempt (the first at once), and once more when the attempt
    fails; "Long activities: heartbeats" says what a crash loses.

    Raises:
        RuntimeError: called outside an activity.
        SerializationError: ``details`` cannot be stored in the journal.
    """
    try:
        info = current_activity.get()
    except LookupError:
        raise RuntimeError(
            "durable.heartbeat() was called outside an activity; it only works while durable "
            "runs an @durable.activity function (in a test, wrap the call in sim.in_activity())"
        ) from None
    encoded = encode_value(details, what="the heartbeat details of activity", name=info.activity)
    sink = heartbeat_sink.get(None)
    if sink is not None:
        sink.beat(info, encoded)


# --- workflows -------------------------------------------------------------

WorkflowGenerator = Generator[Any, Any, Any]
_REGISTRY: dict[str, Workflow[..., Any]] = {}


class Workflow(Generic[P, R]):
    """A generator function decorated with :func:`workflow`.

    Attributes:
        fn: the undecorated generator function.
        name: the name written in the journal.
    """

    def __init__(self, fn: Callable[P, Generator[Any, Any, R]], name: str) -> None:
        self.fn = fn
        self.name = name
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> ChildCall:
        """A command that runs this workflow as a child of the workflow that yields it."""
        encoded = encode_call(args, kwargs, what=f"workflow {self.name!r}")
        return ChildCall(self, encoded, args, kwargs)

    def __repr__(self) -> str:
        return f"<durable workflow {self.name!r}>"


@attrs.frozen(slots=True)
class ChildCall(Command):
    """A call of another workflow, as yielded by a workflow: it runs as a child run.

    The child run's id is the parent's id and the step's sequence number
    (``"<parent id>/<seq>"``), so a recovering parent finds its child again.

    Attributes:
        workflow: the child's :class:`Workflow`.
        encoded_args: the call's arguments, encoded for the journal (CBOR of ``[args, kwargs]``).
    """

    kind = "child"
    workflow: Workflow[..., Any]
    encoded_args: bytes
    call_args: tuple[Any, ...] = attrs.field(eq=False, repr=False)
    call_kwargs: dict[str, Any] = attrs.field(eq=False, repr=False)

    @property
    def name(self) -> str:
        return self.workflow.name

    def describe(self) -> str:
        return f"child workflow {self.name}{call_text(self.call_args, self.call_kwargs)}"


@overload
def workflow(fn: Callable[P, Generator[Any, Any, R]], /) -> Workflow[P, R]: ...
@overload
def workflow(
    *, name: str | None = None
) -> Callable[[Callable[P, Generator[Any, Any, R]]], Workflow[P, R]]: ...
def workflow(fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
    """Declare a workflow: a generator function that yields commands.

    Works bare (``@durable.workflow``) and as ``@durable.workflow(name="...")``.
    The name (default: the function's ``__qualname__``) is written in the
    journal and is how a recovering process finds the code of a run.
    """

    def decorate(fn: Callable[..., Any]) -> Workflow[..., Any]:
        _check_callable(fn, "workflow")
        if not inspect.isgeneratorfunction(fn):
            raise TypeError(_not_a_generator(fn))
        wf = Workflow(fn, _name(name, fn))
        _REGISTRY[wf.name] = wf
        named.note_annotations(fn)
        return wf

    return decorate if fn is None else decorate(fn)


def _not_a_generator(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", repr(fn))
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return (
            f"@durable.workflow got the async function {name!r}; write workflows as plain "
            "generators: `def wf(...): result = yield some_activity(...)`, not async/await"
        )
    return (
        f"@durable.workflow got {name!r}, which is not a generator function; a workflow "
        "yields commands, e.g. `payment = yield charge(amount)`"
    )


def lookup_workflow(name: str) -> Workflow[..., Any] | None:
    """The workflow registered under ``name`` by an imported module, if any."""
    return _REGISTRY.get(name)
