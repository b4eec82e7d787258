"""Fault plans: the whole description of one simulated schedule, as a value you can paste.

A :class:`Recipe` says which crash points to crash at (one per process
lifetime), what each crash did to the disk, and which activity attempts
misbehave. ``sim.replay_recipe(wf, *args, recipe=...)`` re-runs exactly that
schedule: the simulator has no other source of nondeterminism than the
recipe's ``seed``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from ._disk import DISK_FAULTS, OPT_IN_FAULTS

ACTIVITY_FAULTS = ("raise", "hang", "slow", "silent")


def _disk_fault(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in DISK_FAULTS + OPT_IN_FAULTS:
        raise ValueError(f"{attribute.name} must be one of {DISK_FAULTS + OPT_IN_FAULTS!r} (got {value!r})")


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an int >= 1 (got {value!r})")


def _repr(obj: Any, defaults: dict[str, object]) -> str:
    fields = [
        f"{f.name}={getattr(obj, f.name)!r}"
        for f in attrs.fields(type(obj))
        if getattr(obj, f.name) != defaults.get(f.name, attrs.NOTHING)
    ]
    return f"sim.{type(obj).__name__}({', '.join(fields)})"


@attrs.frozen(repr=False)
class Crash:
    """Crash a process lifetime at its ``at``-th crash point.

    Attributes:
        at: the crash point's number in that lifetime (1 is the first point reached).
        disk: what the crash leaves on disk: ``"kill"`` (the process died, the OS did not),
            ``"drop"`` (power loss: unsynced writes lost), ``"torn"``, ``"zeros"``,
            ``"garbage"`` or ``"hole"`` (power loss with partly persisted writes); ``"eio"``
            fails the fsync at that point with EIO (at any other point it is a ``"drop"``), after
            which the process is restarted and the unsynced data is gone.
        label: what was happening there (informational; ignored when comparing).
    """

    at: int = attrs.field(validator=_positive)
    disk: str = attrs.field(default="drop", validator=_disk_fault)
    label: str = attrs.field(default="", eq=False)

    def __repr__(self) -> str:
        return _repr(self, {"label": ""})


def _activity_fault(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ACTIVITY_FAULTS:
        raise ValueError(f"{attribute.name} must be one of {ACTIVITY_FAULTS!r} (got {value!r})")


@attrs.frozen(repr=False)
class ActivityFault:
    """Make attempts of an activity misbehave.

    Attributes:
        activity: the activity's journal name.
        attempt: which attempt of each step misbehaves (1 is the first).
        kind: ``"raise"`` (the attempt raises ``sim.InjectedFault``), ``"hang"`` (it never
            returns: only its ``timeout`` or ``heartbeat_timeout`` ends it), ``"slow"``
            (it returns after ``seconds``), ``"silent"`` (it runs as written, but its
            heartbeats stop reaching durable ``seconds`` after it started, as if it
            were stuck: its ``heartbeat_timeout`` ends it if it runs that long).
        seconds: the delay of a ``"slow"`` attempt, or how long a ``"silent"`` one's
            heartbeats still arrive, in virtual seconds.
        seq: only this step of the run (None: every step of that activity).
    """

    activity: str
    attempt: int = attrs.field(default=1, validator=_positive)
    kind: str = attrs.field(default="raise", validator=_activity_fault)
    seconds: float = 0.0
    seq: int | None = None

    def __repr__(self) -> str:
        return _repr(self, {"attempt": 1, "kind": "raise", "seconds": 0.0, "seq": None})

    def matches(self, activity: str, seq: int, attempt: int) -> bool:
        return self.activity == activity and self.attempt == attempt and (self.seq is None or self.seq == seq)


@attrs.frozen(repr=False)
class Signal:
    """A signal that the outside world sends the run during a schedule.

    Attributes:
        name: the signal's name, as ``durable.wait_signal(name)`` waits for it.
        payload: its payload (any value the journal can hold).
        after: when it is sent: once the run's journal holds this many records (1: as
            soon as the run has started, before its first step), or as soon as the run
            waits with nothing but a message to wake it, whichever comes first. A run
            that ends before either never gets it.
    """

    name: str
    payload: Any = None
    after: int = attrs.field(default=1, validator=_positive)

    def __repr__(self) -> str:
        return _repr(self, {"payload": None, "after": 1})


def _signals(value: Iterable[Signal]) -> tuple[Signal, ...]:
    signals = tuple(value)
    for signal in signals:
        if not isinstance(signal, Signal):
            raise TypeError(f"signals must hold sim.Signal values (got {signal!r})")
    return signals


def _crashes(value: Iterable[Crash]) -> tuple[Crash, ...]:
    crashes = tuple(value)
    for crash in crashes:
        if not isinstance(crash, Crash):
            raise TypeError(f"crashes must hold sim.Crash values (got {crash!r})")
    return crashes


def _faults(value: Iterable[ActivityFault]) -> tuple[ActivityFault, ...]:
    faults = tuple(value)
    for fault in faults:
        if not isinstance(fault, ActivityFault):
            raise TypeError(f"faults must hold sim.ActivityFault values (got {fault!r})")
    return faults


@attrs.frozen
class Recipe:
    """One simulated schedule: a seed, crashes (one per process lifetime), activity faults,
    and optionally a hash seed under which the crash-free journal is replayed.

    Its ``repr`` is valid Python: paste it into ``sim.replay_recipe(wf, *args, recipe=...)``.
    """

    seed: int = 0
    crashes: tuple[Crash, ...] = attrs.field(default=(), converter=_crashes)
    faults: tuple[ActivityFault, ...] = attrs.field(default=(), converter=_faults)
    #: Replay the crash-free journal in a child interpreter with this PYTHONHASHSEED.
    hash_seed: int | None = None
    #: Bit rot (fault F9): once the run has finished, flip one bit of the journal at this
    #: byte offset, then start the run again; it must fail with JournalCorruptError or
    #: (for the last record, which looks like a torn tail) end as before.
    rot_at: int | None = None
    #: Break ties between concurrently ready activities (a gather's or race's children)
    #: in an order drawn from this seed: each explores another completion order.
    order_seed: int | None = None
    #: Signals the outside world sends, in this order (each once it is due).
    signals: tuple[Signal, ...] = attrs.field(default=(), converter=_signals)
    #: The run's id (an exploration's own, so idempotency keys never collide across
    #: explorations); "sim" in recipes written before explorations had ids of their own.
    run_id: str = "sim"

    def __repr__(self) -> str:
        parts = [f"seed={self.seed}"]
        if self.hash_seed is not None:
            parts.append(f"hash_seed={self.hash_seed}")
        if self.rot_at is not None:
            parts.append(f"rot_at={self.rot_at}")
        if self.order_seed is not None:
            parts.append(f"order_seed={self.order_seed}")
        if self.crashes:
            parts.append(f"crashes=({''.join(repr(c) + ', ' for c in self.crashes).rstrip()})")
        if self.signals:
            parts.append(f"signals=({''.join(repr(s) + ', ' for s in self.signals).rstrip()})")
        if self.faults:
            parts.append(f"faults=({''.join(repr(f) + ', ' for f in self.faults).rstrip()})")
        if self.run_id != "sim":
            parts.append(f"run_id={self.run_id!r}")
        return f"sim.Recipe({', '.join(parts)})"


class InjectedFault(Exception):
    """The error a ``"raise"`` :class:`ActivityFault` makes an activity attempt raise."""
