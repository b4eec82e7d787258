"""What an unfinished run is doing now: the states of ``durable ls`` and ``show`` (SPEC §11).

A journal says what a run has done; whether anyone is doing the rest is the
store's to say: who holds the run (its lock or lease, and the holder record a
FileStore keeps, see ``_store_file/holders.py``). :func:`mark_state` puts the
two together, at the time the tool looks (``now``):

``running``
    a live process holds the run and it has work in hand (an activity in
    flight, a value to record, a step to start);
``waiting``
    all the run does is wait (a timer, a retry backoff, a signal), whether a
    process keeps it (``durable.run``) or it was let go (a worker);
``stalled``
    the process that held it is gone (its lock went with it, or its lease
    expired) without letting it go, and no process has taken it since: a
    worker will take it over;
``queued``
    nobody holds it and it has work in hand: a run a ``Client`` submitted that
    no worker took yet, or one a stopped worker let go.

The finished states (``completed``, ``failed``, ``cancelled``...) come from the
journal alone, and a damaged journal stays ``corrupt``. No I/O here.
"""

from __future__ import annotations

import math

from ._store import Holder
from ._timeline import Step, Timeline, duration_text, local_time

#: Why a heartbeat may look old: only some reach the journal (see durable/_attempts.py,
#: HEARTBEAT_RECORD_INTERVAL), so another process sees them late by up to that much.
_RATE = "heartbeats are journaled every 10s at most"

#: The states of an unfinished run, in the order ``durable ls --status`` lists them.
UNFINISHED = ("queued", "running", "waiting", "stalled")


def mark_state(timeline: Timeline, holder: Holder | None, now: float) -> Timeline:
    """Give an unfinished run (status ``"running"`` from the journal) its state at ``now``,
    what it waits for or does, and who holds it. A finished or damaged run is left as it is."""
    if timeline.status != "running":
        return timeline
    timeline.now = now
    wait = _first_wait(timeline, now)
    timeline.holder = _holder_text(timeline, holder, now)
    if holder is not None:
        timeline.holder_facts = {
            "pid": holder.pid,
            "host": holder.host,
            "since": _since(timeline, holder),
            "live": holder.live,
            "lease_expires": holder.lease_expires,
            "stalled_since": None if holder.live else _stalled_since(timeline, holder),
        }
    if holder is not None and not holder.live:
        timeline.status = "stalled"
        if holder.lease_expires is not None:
            ago = duration_text(max(0.0, now - holder.lease_expires))
            timeline.brief = f"{holder.describe()}: its lease expired {ago} ago"
        else:
            timeline.brief = f"{holder.describe()} is gone"
    elif wait is not None:
        timeline.status = "waiting"
    elif holder is not None:
        timeline.status = "running"
        timeline.brief = f"by {holder.describe()}"
    else:
        timeline.status = "queued"
        timeline.brief = "no process holds it"
    if wait is None:
        if timeline.status == "running":
            timeline.doing = _doing(timeline, now)
        else:  # nobody is doing what is in hand: say what a worker will do
            whom = "a worker to take it over" if timeline.status == "stalled" else "a worker to take it"
            steps = _doing(timeline, None)
            timeline.waiting = f"{whom}, then {steps}" if steps else f"{whom} (no process holds it)"
        return timeline
    until, what = wait
    timeline.until = None if math.isinf(until) else until
    timeline.waiting = what + _when(until, now, precise=True)
    if timeline.status == "waiting":
        timeline.brief = what + _when(until, now, precise=False)
    return timeline


def _stalled_since(timeline: Timeline, holder: Holder) -> float | None:
    """Since when a run whose holder is gone has made no progress, as well as the store
    knows it: a lease says when it expired; a process that is gone left no time of
    death, so the run's last record (``ls``'s "last event" column) is the latest moment
    it surely ran."""
    return holder.lease_expires if holder.lease_expires is not None else timeline.last_event


def _first_wait(timeline: Timeline, now: float) -> tuple[float, str] | None:
    """What the run waits for first ``(until, what)``, when all its open steps only wait
    (``until`` infinite: only a message ends the wait); None when it has work in hand."""
    waits: list[tuple[float, str]] = []
    for step in timeline.steps:
        if step.status != "running":
            continue
        backoff = _backoff_until(step)
        if step.kind == "timer" and step.until is not None:
            waits.append((step.until, f"{step.name_text} (step {step.seq})"))
        elif backoff is not None and backoff > now:
            number = step.attempts[-1].number
            waits.append((backoff, f"attempt {number} of {step.call} (step {step.seq}), after its backoff"))
        elif step.kind == "signal":
            until = step.until if step.until is not None else math.inf
            waits.append((until, f"{step.name_text} (step {step.seq})"))
        else:
            return None  # something to do: an activity in flight, a value to record
    # Nothing open: the workflow is about to yield its next step (a wait for a signal is
    # journaled, SignalAwaited), so a process has work in hand, or must take the run.
    return min(waits) if waits else None


def _backoff_until(step: Step) -> float | None:
    """When the next attempt of an activity step may start, if its last attempt failed and
    was retried, and the attempt after it has not been cut short (it may be running)."""
    attempts = step.attempts
    if len(attempts) < 2 or attempts[-1].status != "running" or attempts[-1].resumed is not None:
        return None
    failed = attempts[-2]
    return failed.retry_at if failed.status == "failed" else None


def _when(until: float, now: float, *, precise: bool) -> str:
    """``, until 10:00:03.120 (local time, in 4m)`` / ``, due since ... (3s ago)``; for a
    column (not ``precise``): ``, in 4m`` / ``, due 3s ago``; nothing for a wait with no end."""
    if math.isinf(until):
        return ""
    if not precise:
        return (
            f", due {duration_text(now - until)} ago"
            if until <= now
            else f", in {duration_text(until - now)}"
        )
    when = local_time(until, precise=True)
    if until <= now:
        return f", due since {when} (local time, {duration_text(now - until)} ago)"
    return f", until {when} (local time, in {duration_text(until - now)})"


def _doing(timeline: Timeline, now: float | None) -> str | None:
    """The steps in hand; with ``now``, each attempt in flight and for how long so far."""
    parts = []
    for step in timeline.steps:
        if step.status != "running":
            continue
        text = f"step {step.seq} {step.kind} {step.call}"
        attempt = step.attempts[-1] if step.attempts else None
        if now is not None and attempt is not None and attempt.status == "running":
            began = attempt.resumed if attempt.resumed is not None else attempt.started
            text += f", attempt {attempt.number} in flight for {duration_text(max(0.0, now - began))}"
            if attempt.heartbeat is not None:
                ago = duration_text(max(0.0, now - attempt.heartbeat.t))
                text += f" (last heartbeat journaled {ago} ago, {attempt.heartbeat.details}: {_RATE})"
        elif attempt is not None and attempt.status == "running" and _backoff_until(step) is not None:
            text += f" (attempt {attempt.number} next, after its backoff)"
        elif attempt is not None and attempt.status == "running":
            text += f" (its attempt {attempt.number} was cut short: it runs again)"
        elif attempt is not None and attempt.status == "pending":
            text += f" (attempt {attempt.number} next)"
        parts.append(text)
    return "; ".join(parts) or None


def _since(timeline: Timeline, holder: Holder) -> float | None:
    """When the holder took the run; where the store does not say (PostgreSQL), when that
    process resumed it, if the journal says so."""
    if holder.since is not None:
        return holder.since
    return max((r.t for r in timeline.recoveries if r.pid == holder.pid), default=None)


def _holder_text(timeline: Timeline, holder: Holder | None, now: float) -> str | None:
    """``pid 812 on web-1, since 10:00:03 (4m ago)``; for a holder that is gone, says so."""
    if holder is None:
        return None
    since = _since(timeline, holder)
    text = holder.describe()
    if since is not None:
        text += f", since {local_time(since)} ({duration_text(max(0.0, now - since))} ago)"
    if holder.live:
        return text
    if holder.lease_expires is not None:
        return f"{text}; its lease expired at {local_time(holder.lease_expires)} and was not renewed"
    return f"{text}; that process is gone (it did not let the run go)"
