"""The exceptions durable raises, each carrying the facts as attributes too.

Messages say what happened, why it matters and what to do. Every class derives
from :class:`DurableError`, so ``except durable.DurableError`` catches them all;
several also derive from the builtin a caller would expect (``TypeError``,
``ValueError``, ``LookupError``).
"""

from __future__ import annotations

import traceback as _traceback
from typing import Any

import attrs

from .durations import format_duration

#: How much of an error's message and traceback the journal keeps (characters).
MAX_ERROR_MESSAGE = 16 * 1024
MAX_ERROR_TRACEBACK = 64 * 1024


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    return f"{text[:keep]}\n... ({len(text) - 2 * keep:,} characters cut) ...\n{text[-keep:]}"


def _utf8_safe(text: str) -> str:
    """``text`` with lone surrogates replaced, so that the journal (UTF-8) can hold it."""
    try:
        str.encode(text)
    except UnicodeEncodeError:
        return str.encode(text, "utf-8", "backslashreplace").decode()
    return text


@attrs.frozen
class ErrorInfo:
    """An exception as the journal keeps it: type name, message, and traceback text.

    Exceptions are never pickled (a journal is data, never code), so an error
    that crosses a crash comes back as this description, not as the original
    object.
    """

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException, *, traceback: str = "") -> ErrorInfo:
        """Describe ``exc``; a message or traceback too long for a journal record is cut
        in its middle (its start and its end, where the cause is, are kept)."""
        kind = type(exc)
        name = (
            kind.__qualname__ if kind.__module__ == "builtins" else (f"{kind.__module__}.{kind.__qualname__}")
        )
        try:
            message = "".join([str(exc)])  # a plain str, even from a __str__ returning a subclass
        except Exception as failure:  # a __str__ that raises must not lose the error itself
            message = f"<str() of the exception failed: {type(failure).__name__}>"
        return cls(
            type=_cut(_utf8_safe(name), 1024),
            message=_cut(_utf8_safe(message), MAX_ERROR_MESSAGE),
            traceback=_cut(_utf8_safe(traceback), MAX_ERROR_TRACEBACK),
        )

    @classmethod
    def with_traceback_of(cls, exc: BaseException) -> ErrorInfo:
        """:meth:`from_exception` with the exception's formatted traceback: how the
        journal keeps an error that user code raised."""
        return cls.from_exception(exc, traceback="".join(_traceback.format_exception(exc)))

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


class DurableError(Exception):
    """Base class of every error durable raises."""


class DurableInternalError(DurableError):
    """A broken invariant inside durable itself: this is a bug in durable."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what}; this is a bug in durable, please report it with the output of `durable show RUN_ID`"
        )


class ActivityError(DurableError):
    """An activity failed for good: retries exhausted, a non-retryable error, or its budget spent.

    Raised inside the workflow at the ``yield`` of the activity, where the
    workflow may catch it (that is how compensation is written).

    Attributes:
        activity: the activity's journal name.
        seq: the step's sequence number in its run.
        type_name: the original exception's type name (``"ValueError"``, ``"mymod.PaymentDeclined"``).
        message: the original exception's message.
        attempts: how many attempts ran.
    """

    def __init__(self, activity: str, seq: int, error: ErrorInfo, attempts: int) -> None:
        self.activity = activity
        self.seq = seq
        self.error = error
        self.type_name = error.type
        self.message = error.message
        self.attempts = attempts
        plural = "attempt" if attempts == 1 else "attempts"
        super().__init__(f"activity {activity!r} failed after {attempts} {plural}: {error}")


class ChildWorkflowError(DurableError):
    """A child workflow failed or was cancelled.

    Raised inside the parent workflow at the ``yield`` of the child's call, where
    the parent may catch it.

    Attributes:
        workflow: the child's workflow name.
        run_id: the child run's id.
        seq: the step's sequence number in the parent.
        type_name: the type name of what the child raised (``"Cancelled"`` if it was cancelled).
        message: its message.
    """

    def __init__(self, workflow: str, run_id: str, seq: int, error: ErrorInfo) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self.seq = seq
        self.error = error
        self.type_name = error.type
        self.message = error.message
        what = "was cancelled" if error.type == "Cancelled" else "failed"
        super().__init__(f"child workflow {workflow!r} (run {run_id!r}) {what}: {error}")


class AttemptTimeout(DurableError, TimeoutError):
    """An activity attempt ran past its ``timeout`` (or past what was left of its
    ``total_timeout``); it counts as a failed attempt and is retried like any other.
    Put it in ``non_retryable`` to fail the step at its first timeout.

    Attributes:
        activity: the activity's journal name.
        run_id, seq: the run and the step.
        attempt: which attempt timed out (1 for the first).
        seconds: the time the attempt was given.
    """

    def __init__(self, activity: str, run_id: str, seq: int, attempt: int, seconds: float) -> None:
        self.activity = activity
        self.run_id = run_id
        self.seq = seq
        self.attempt = attempt
        self.seconds = seconds
        super().__init__(
            f"attempt {attempt} of activity {activity!r} (run {run_id!r}, step {seq}) timed out "
            f"after {format_duration(seconds)}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.activity, self.run_id, self.seq, self.attempt, self.seconds))


class LoopMismatchError(DurableError):
    """An ``async def`` activity was written for the other event loop: it awaited an
    asyncio library in a runtime on trio, or a trio one in a runtime on asyncio.

    The activity fails at once, on its first attempt, and is not retried: another
    attempt on the same loop would fail the same way. The fix is the runtime's
    loop: ``durable.run(..., loop="asyncio")``, ``durable run/worker --loop
    asyncio``, or ``async with durable.Runtime(...)`` inside ``asyncio.run``.

    Attributes:
        activity: the activity's journal name.
        needs: the loop the activity needs (``"asyncio"`` or ``"trio"``).
        runs_on: the loop the runtime runs on.
    """

    def __init__(self, activity: str, *, needs: str, runs_on: str) -> None:
        self.activity = activity
        self.needs = needs
        self.runs_on = runs_on
        how = (
            "durable.run(..., loop='asyncio'), `durable run/worker --loop asyncio`, "
            "or `async with durable.Runtime(...)` inside asyncio.run()"
            if needs == "asyncio"
            else "durable.run(..., loop='trio') (the default), `durable run/worker --loop trio`, "
            "or `async with durable.Runtime(...)` inside trio.run()"
        )
        super().__init__(
            f"activity {activity!r} needs the {needs} event loop, but the runtime runs on "
            f"{runs_on}; run it on {needs}: {how}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_loop_mismatch, (self.activity, self.needs, self.runs_on))


def _rebuild_loop_mismatch(activity: str, needs: str, runs_on: str) -> LoopMismatchError:
    return LoopMismatchError(activity, needs=needs, runs_on=runs_on)


class Cancelled(DurableError):
    """The run was cancelled (``Runtime.cancel`` or ``durable cancel``).

    Thrown into the workflow at its current ``yield``: the workflow may catch it
    and yield cleanup activities; if it lets it out, the run ends as cancelled,
    and ``handle.result()`` raises it.

    Attributes:
        run_id: the run.
        reason: why, as given to ``cancel``.
    """

    def __init__(self, run_id: str, reason: str = "") -> None:
        self.run_id = run_id
        self.reason = reason
        because = f": {reason}" if reason else ""
        super().__init__(f"run {run_id!r} was cancelled{because}")


class SignalTimeout(DurableError, TimeoutError):
    """A ``durable.wait_signal`` ran past its timeout; raised in the workflow at the ``yield``.

    Attributes:
        name: the signal waited for.
        timeout: the timeout, in seconds.
    """

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(f"no signal {name!r} arrived within {format_duration(timeout)}")


class WorkflowFailed(DurableError):
    """The workflow raised an exception instead of returning; the failure is journaled.

    Attributes:
        run_id: the run that failed.
        workflow: the workflow's journal name.
        error: the :class:`ErrorInfo` of the exception the workflow raised.
    """

    def __init__(self, run_id: str, workflow: str, error: ErrorInfo) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.error = error
        super().__init__(f"workflow {workflow!r} (run {run_id!r}) failed: {error}")


class NonDeterminismError(DurableError):
    """On replay the workflow yielded something other than what its journal holds.

    Nothing is written to the journal after this error, so fixing the code (or
    guarding the change with ``durable.patched``) and running again resumes the
    run.

    Attributes:
        run_id, workflow, seq: where it diverged.
        recorded: the journal's entry at ``seq``, as text.
        yielded: what the code yields now, as text.
        location: ``"file.py:42: line of source"`` of the ``yield``, when known.
    """

    def __init__(
        self,
        *,
        run_id: str,
        workflow: str,
        seq: int,
        recorded: str,
        yielded: str,
        location: str | None,
    ) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.seq = seq
        self.recorded = recorded
        self.yielded = yielded
        self.location = location
        where = f"\n  at:      {location}" if location else ""
        super().__init__(
            f"workflow {workflow!r} (run {run_id!r}) diverged from its journal at step {seq}.\n"
            f"  journal: {recorded}\n"
            f"  code:    {yielded}{where}\n"
            "Replay needs the same commands in the same order. If you changed this workflow "
            "while runs were in flight, guard the change with `if (yield durable.patched(...))`."
        )


class SerializationError(DurableError, TypeError):
    """A value cannot be stored in the journal (it is not CBOR-encodable, or not allowed).

    Attributes:
        size: the encoded size in bytes, when the value is too large (else None).
        limit: the journal's limit for one value in bytes, when the value is too large.
    """

    def __init__(self, message: str, *, size: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class UnknownWorkflowError(DurableError, LookupError):
    """A journal names a workflow that no imported module defines."""

    def __init__(self, name: str, run_id: str | None = None) -> None:
        self.name = name
        self.run_id = run_id
        of_run = f" (needed by run {run_id!r})" if run_id else ""
        super().__init__(
            f"no workflow named {name!r} is defined{of_run}; import the module that defines "
            "it before recovering, or keep its old name with @durable.workflow(name=...)"
        )


class UnknownRunError(DurableError, LookupError):
    """No run with this id exists in the store."""

    def __init__(self, run_id: str, store: object) -> None:
        self.run_id = run_id
        # Worded as the CLI and the dashboard say it (durable/_cli.py: no_run_text).
        super().__init__(f"no run {run_id!r} in {store!r} (`durable ls` lists its runs)")


class RunConflictError(DurableError, ValueError):
    """A run id already exists with another workflow or other arguments, or a message
    was sent to a run that has finished.

    Attributes:
        run_id: the run (None where the raiser could not name it).
    """

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunNotRetryableError(RunConflictError):
    """``retry`` of a run that cannot be retried: only a failed run can (its workflow
    raised), and only when the child runs its failed steps ran can run again.

    Attributes:
        run_id: the run asked to retry.
        status: what that run is: ``"running"`` (it has not ended: it runs, waits, or
            waits for a worker), ``"retried"`` (retried already, not taken since),
            ``"completed"``, ``"cancelled"``, ``"continued as new"``, or ``"failed"``
            (when a child run is the obstacle).
        step: the step that runs that child run, else None.
        child_id: the child run that cannot run again (it was cancelled), else None.
    """

    def __init__(
        self, run_id: str, status: str, *, child_id: str | None = None, step: int | None = None
    ) -> None:
        self.status = status
        self.child_id = child_id
        self.step = step
        if child_id is not None:
            why = (
                f"its step {step} runs the child run {child_id!r}, which was cancelled, and a "
                "cancelled run never runs again; start a new run (with another id) to run it again"
            )
        else:
            why = _NOT_FAILED.get(status, f"it is {status}, and only a failed run can be retried")
        super().__init__(f"run {run_id!r} cannot be retried: {why}", run_id=run_id)


#: Why a run that has not failed cannot be retried, and what to do, by its status.
_NOT_FAILED = {
    "running": (
        "it has not failed: it has not ended (it runs, waits, or waits for a worker to take it); "
        "wait for it to end, or cancel it"
    ),
    "retried": "it has not failed: it was retried already, and waits for a worker or a recovery to take it",
    "continued as new": "it has not failed: it continues as new (in a fresh journal, on recovery)",
    "completed": (
        "it completed, and only a failed run can be retried; start a new run (with another id) "
        "to run the workflow again"
    ),
    "cancelled": (
        "it was cancelled, and only a failed run can be retried; start a new run (with another id) "
        "to run the workflow again"
    ),
}


class StoreError(DurableError):
    """The store cannot do what was asked (locked run, unusable path, failed fsync...).

    Attributes:
        run_id: the run concerned, when the failure is one run's (else None).
        path: the file, directory or table concerned, when there is one (else None).
    """

    def __init__(self, message: str, *, run_id: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.path = path


class RunLockedError(StoreError):
    """Another process holds the run open for writing.

    Attributes:
        run_id: the run (None where the raiser could not name it).
        path: the locked journal, for a FileStore.
    """


class JournalCorruptError(StoreError):
    """A journal is damaged before its tail: durable refuses to guess.

    Attributes:
        path: the journal (file path or store-specific name), or the run.
        offset: byte offset of the damaged record; None for a value inside a record
            that only fails when it is decoded (its bytes passed the checksum).
        record: the index of the damaged record (0 is the first after the header), if known.
        reason: what check failed.
    """

    #: The end of its message: what to do about it (``durable show`` itself, which draws
    #: what precedes the damage, leaves out the advice to run it).
    ADVICE = "Restore the journal from a backup, or inspect it with `durable show`."

    def __init__(
        self, path: str, offset: int | None, reason: str, record: int | None = None, *, proven: bool = False
    ) -> None:
        self.path = path
        self.offset = offset
        self.record = record
        self.reason = reason
        if offset is None:  # a value inside a sound record, found when it was decoded
            where = path
        elif record is not None:
            where = f"{path}: record {record} at byte {offset}"
        else:
            where = f"{path}: byte {offset}"
        why = (
            "; a later record proves it was durable, so this is not a torn tail and durable will "
            "not truncate it"
            if proven
            else "; durable will not guess at what the journal holds"
        )
        super().__init__(f"{where} is damaged ({reason}){why}. {self.ADVICE}", path=path)


class JournalUnreadableError(JournalCorruptError):
    """The entry where a run's journal should be cannot be read as one: durable may
    not read it, or it is not a journal file (a directory, a symbolic link, a FIFO...).
    That run alone cannot go on; every other run does.

    Attributes:
        path: the entry.
        run_id: the run whose journal belongs there.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, run_id: str, reason: str, fix: str) -> None:
        self.path = path
        self.run_id = run_id
        self.offset = 0
        self.record = None
        self.reason = reason
        StoreError.__init__(
            self,
            f"{path} cannot be read as the journal of run {run_id!r}: {reason}. {fix}",
            run_id=run_id,
            path=path,
        )


class UnsafeStoreError(StoreError):
    """A store directory that other users may write (or that another user owns):
    durable refuses it, since another user could plant files or links in it.

    Attributes:
        path: the directory.
        owner: its owner's uid.
        mode: its permission bits.
    """

    def __init__(self, path: str, store: str, owner: int, mode: int, problem: str, fix: str) -> None:
        self.path = path
        self.owner = owner
        self.mode = mode
        super().__init__(
            f"refusing to use the durable store {store!r}: {path} {problem} (owner uid {owner}, mode "
            f"{mode:04o}), so another user could plant files or symbolic links among the journals. {fix}",
            path=path,
        )


class PayloadCodecError(StoreError):
    """A payload encoded by a codec cannot be decoded: the store was opened without
    that codec, or the codec refuses the bytes (a wrong or missing key, tampered data).
    Nothing is lost: the journal is intact, and the run goes on once the store has the
    codec (and key) that wrote it.

    Attributes:
        codec: the name of the codec concerned (``"?"`` if the payload names none).
        run_id: the run concerned, when known.
    """

    def __init__(self, message: str, *, codec: str, run_id: str | None = None) -> None:
        super().__init__(message, run_id=run_id)
        self.codec = codec


class JournalVersionError(StoreError):
    """A journal was written by a newer format version than this durable reads."""

    def __init__(self, path: str, version: int, supported: int) -> None:
        self.path = path
        self.version = version
        super().__init__(
            f"{path}: journal format version {version} is newer than the version this "
            f"durable reads ({supported}); upgrade durable to run or inspect it",
            path=path,
        )


def describe_value(value: Any, limit: int = 60) -> str:
    """``repr`` shortened for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
