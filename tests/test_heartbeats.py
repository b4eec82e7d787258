"""Heartbeats (SPEC section 11): ``durable.heartbeat(details)``, ``heartbeat_timeout``, and
``activity_info().heartbeat_details`` on the next attempt.

Where a test counts time it runs on trio's MockClock (the autojump_clock fixture)
and checks ``trio.current_time()`` readings or the times the journal recorded;
the tests on both loops run in real time and check only outcomes and the journal's
own invariants (never how long something took).
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import loops
import pytest
import trio
import trio.testing

import durable
import sim
from durable import _attempts
from durable._core import events as ev
from durable._core import payloads as pl
from durable.codecs import Zlib
from durable.lowlevel import loads_value, scan


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[durable.Store]:
    if request.param == "memory":
        yield durable.MemoryStore()
    else:
        yield durable.FileStore(tmp_path / "store", sync="none")


async def run(store: durable.Store, wf: durable.Workflow[..., Any], *args: Any, id: str = "r") -> Any:
    async with durable.Runtime(store) as rt:
        return await (await rt.start(wf, *args, id=id)).result()


async def heartbeats(store: durable.Store, run_id: str = "r") -> list[ev.AttemptHeartbeat]:
    events = await store.read(run_id)
    assert events is not None
    return [e for e in events if isinstance(e, ev.AttemptHeartbeat)]


def details(records: list[ev.AttemptHeartbeat]) -> list[tuple[int, int, Any]]:
    return [(r.seq, r.attempt, loads_value(r.details)) for r in records]


# --- details reach the next attempt, in this process ------------------------------------


@attrs.frozen
class Progress:
    """Typed heartbeat details: they come back as themselves."""

    done: int
    cursor: str


durable.register(Progress)  # no annotation names it: heartbeat details are registered

seen: list[tuple[int, Any]] = []


@durable.activity(retries=2, initial_backoff="1ms")
def copy_rows(n: int) -> int:
    info = durable.activity_info()
    seen.append((info.attempt, info.heartbeat_details))
    start = info.heartbeat_details.done if info.heartbeat_details else 0
    for done in range(start + 1, n + 1):
        durable.heartbeat(Progress(done, f"row-{done}"))
        if info.attempt == 1 and done == 5:
            raise ConnectionError("the database went away")
    return n - start


@durable.activity(retries=2, initial_backoff="1ms")
async def copy_rows_async(n: int) -> int:
    info = durable.activity_info()
    seen.append((info.attempt, info.heartbeat_details))
    start = info.heartbeat_details.done if info.heartbeat_details else 0
    for done in range(start + 1, n + 1):
        durable.heartbeat(Progress(done, f"row-{done}"))
        await loops.sleep(0)
        if info.attempt == 1 and done == 5:
            raise ConnectionError("the database went away")
    return n - start


@durable.workflow
def copy(kind: str, n: int):  # type: ignore[no-untyped-def]
    rows = copy_rows if kind == "sync" else copy_rows_async
    return (yield rows(n))


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_the_next_attempt_reads_the_latest_details(loop: str, kind: str, store: durable.Store) -> None:
    seen.clear()
    # Attempt 1 copied rows 1..5 and failed; attempt 2 goes on from row 6.
    assert await run(store, copy, kind, 8) == 3
    assert seen == [(1, None), (2, Progress(5, "row-5"))]
    records = details(await heartbeats(store))
    # The first heartbeat is journaled at once; the latest (5) before the attempt's failure,
    # which is what a next attempt in another process would read.
    assert records[0] == (0, 1, Progress(1, "row-1"))
    events = await store.read("r")
    assert events is not None
    failed = next(i for i, e in enumerate(events) if isinstance(e, ev.AttemptFailed))
    before = details([e for e in events[:failed] if isinstance(e, ev.AttemptHeartbeat)])
    assert before[-1] == (0, 1, Progress(5, "row-5"))


@durable.activity(retries=3, initial_backoff="1ms")
def remembers(n: int) -> Any:
    info = durable.activity_info()
    if info.attempt == 1:
        durable.heartbeat({"step": n, "attempt": 1})
    if info.attempt < 3:
        raise ConnectionError(f"attempt {info.attempt} failed")
    return info.heartbeat_details


@durable.workflow
def remember_twice():  # type: ignore[no-untyped-def]
    return (yield durable.gather(remembers(1), remembers(2)))


async def test_an_attempt_that_did_not_heartbeat_keeps_the_details_of_the_one_before(
    loop: str, store: durable.Store
) -> None:
    # Two steps side by side (a gather), each with its own details: attempt 2 made no
    # heartbeat, so attempt 3 reads attempt 1's.
    assert await run(store, remember_twice) == [{"step": 1, "attempt": 1}, {"step": 2, "attempt": 1}]
    assert sorted(details(await heartbeats(store))) == [
        (0, 1, {"step": 1, "attempt": 1}),
        (1, 1, {"step": 2, "attempt": 1}),
    ]


@durable.activity
def quiet(x: int) -> int:
    return x + 1


@durable.activity
async def quiet_async(x: int) -> int:
    return x * 2


@durable.workflow
def no_heartbeats():  # type: ignore[no-untyped-def]
    a = yield quiet(1)
    b = yield quiet_async(a)
    return (yield durable.gather(quiet(b), quiet_async(b)))


async def test_activities_that_never_heartbeat_journal_no_heartbeat(loop: str, store: durable.Store) -> None:
    assert await run(store, no_heartbeats) == [5, 8]
    assert await heartbeats(store) == []


# --- the rate: a bounded number of records ----------------------------------------------


@durable.activity
async def chatty(n: int) -> int:
    for i in range(n):
        durable.heartbeat(i)
        await trio.sleep(0.01)
    return n


@durable.activity
def chatty_sync(n: int) -> int:
    for i in range(n):
        durable.heartbeat(i)
    return n


@durable.workflow
def chatter(kind: str, n: int):  # type: ignore[no-untyped-def]
    return (yield (chatty if kind == "async" else chatty_sync)(n))


def assert_rate(records: list[ev.AttemptHeartbeat]) -> None:
    """At most one record per HEARTBEAT_RECORD_INTERVAL seconds, by the journal's own times."""
    for earlier, later in itertools.pairwise(records):
        assert later.t - earlier.t >= _attempts.HEARTBEAT_RECORD_INTERVAL - 1e-6, (earlier, later)


@pytest.mark.trio_only
async def test_ten_thousand_heartbeats_make_a_bounded_number_of_records(
    store: durable.Store, autojump_clock: trio.testing.MockClock
) -> None:
    # 10,000 heartbeats 10 ms apart: 100 s of virtual time, one record per 10 s.
    started = trio.current_time()
    assert await run(store, chatter, "async", 10_000) == 10_000
    took = trio.current_time() - started
    records = await heartbeats(store)
    assert 1 <= len(records) <= took / _attempts.HEARTBEAT_RECORD_INTERVAL + 1
    assert len(records) >= 5  # ...and more than one: the details go on being journaled
    assert details(records)[0] == (0, 1, 0)
    assert_rate(records)


async def test_ten_thousand_heartbeats_from_a_thread_make_a_bounded_number_of_records(
    loop: str, store: durable.Store
) -> None:
    assert await run(store, chatter, "sync", 10_000) == 10_000
    records = await heartbeats(store)
    assert 1 <= len(records) <= 1 + (records[-1].t - records[0].t) / _attempts.HEARTBEAT_RECORD_INTERVAL
    assert details(records)[0] == (0, 1, 0)
    assert_rate(records)


# --- heartbeat_timeout ----------------------------------------------------------------------


@durable.activity(retries=2, initial_backoff="1s", heartbeat_timeout="30s")
async def stalls(beats: int) -> str:
    info = durable.activity_info()
    for i in range(beats):
        durable.heartbeat(i)
        await trio.sleep(10)
    if info.attempt == 1:
        await trio.sleep_forever()  # hung: only its heartbeat_timeout ends it
    return f"done on attempt {info.attempt}, from {info.heartbeat_details}"


@durable.workflow
def stall(beats: int):  # type: ignore[no-untyped-def]
    return (yield stalls(beats))


@pytest.mark.trio_only
@pytest.mark.parametrize("beats", [0, 4])
async def test_heartbeat_timeout_fails_a_hung_attempt_and_the_retry_succeeds(
    store: durable.Store, autojump_clock: trio.testing.MockClock, beats: int
) -> None:
    assert await run(store, stall, beats) == f"done on attempt 2, from {beats - 1 if beats else None}"
    events = await store.read("r")
    assert events is not None
    scheduled = next(e for e in events if isinstance(e, ev.ActivityScheduled))
    (failed,) = [e for e in events if isinstance(e, ev.AttemptFailed)]
    # The last heartbeat came at 10 s x (beats - 1), the attempt failed 30 s later (or 30 s
    # after it started, when it never heartbeated).
    silent_since = 10.0 * (beats - 1) if beats else 0.0
    assert failed.t - scheduled.t == pytest.approx(silent_since + 30.0)
    assert failed.error.type == "durable.AttemptTimeout"
    since = f"its last came {10 * (beats - 1)}s after it started" if beats else "it never heartbeated"
    assert failed.error.message == (
        "attempt 1 of activity 'stalls' (run 'r', step 0) timed out: its heartbeats stopped, none "
        f"for 30s, its heartbeat_timeout ({since})"
    )


@durable.activity(retries=3, initial_backoff="1ms", heartbeat_timeout="300ms")
def hangs_in_a_thread(release: str) -> int:
    info = durable.activity_info()
    durable.heartbeat(info.attempt)
    if info.attempt == 1:
        RELEASES[release].wait(60)  # hung: abandoned at its heartbeat_timeout, released at the end
        durable.heartbeat("late")  # from an abandoned attempt: ignored
    return info.attempt


@durable.activity(retries=3, initial_backoff="1ms", heartbeat_timeout="300ms")
async def hangs_async() -> int:
    info = durable.activity_info()
    durable.heartbeat(info.attempt)
    if info.attempt == 1:
        await loops.sleep(3600)
    return info.attempt


RELEASES: dict[str, threading.Event] = {}


@durable.workflow
def hang(kind: str, release: str):  # type: ignore[no-untyped-def]
    return (yield hangs_in_a_thread(release) if kind == "sync" else hangs_async())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_heartbeat_timeout_in_real_time_on_both_loops(
    loop: str, kind: str, store: durable.Store
) -> None:
    release = RELEASES[f"{loop}-{kind}"] = threading.Event()
    try:
        async with loops.deadline(60):
            assert await run(store, hang, kind, f"{loop}-{kind}") >= 2
    finally:
        release.set()
    events = await store.read("r")
    assert events is not None
    first = next(e for e in events if isinstance(e, ev.AttemptFailed))
    assert first.attempt == 1 and first.error.type == "durable.AttemptTimeout"
    assert "its heartbeats stopped, none for 300ms" in first.error.message
    assert details(await heartbeats(store))[0] == (0, 1, 1)
    assert "late" not in [d for _, _, d in details(await heartbeats(store))]


def test_heartbeat_timeout_is_validated_like_the_other_durations() -> None:
    assert durable.RetryPolicy(heartbeat_timeout="1m").heartbeat_timeout == 60.0
    assert durable.RetryPolicy().heartbeat_timeout is None
    with pytest.raises(ValueError, match="heartbeat_timeout must be longer than zero"):
        durable.RetryPolicy(heartbeat_timeout=0)
    with pytest.raises(ValueError, match="heartbeat_timeout '3 parsecs' is not a duration"):
        durable.activity(heartbeat_timeout="3 parsecs")
    with pytest.raises(ValueError, match="heartbeat_timeout must be a finite, non-negative duration"):
        quiet.with_options(heartbeat_timeout=-1)
    with pytest.raises(TypeError, match="heartbeat_timeout must be a duration"):
        quiet(1).with_options(heartbeat_timeout=[30])
    assert quiet(1).with_options(heartbeat_timeout="2s").policy.heartbeat_timeout == 2.0


# --- clear errors -----------------------------------------------------------------------------


def test_heartbeat_outside_an_activity_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"durable.heartbeat\(\) was called outside an activity"):
        durable.heartbeat("anything")


@durable.activity(retries=0)
def bad_details() -> str:
    try:
        durable.heartbeat(object())
    except durable.SerializationError as error:
        return str(error)
    return "no error"


@durable.workflow
def bad():  # type: ignore[no-untyped-def]
    return (yield bad_details())


async def test_details_the_journal_cannot_hold_are_an_error_at_the_call(
    loop: str, store: durable.Store
) -> None:
    message = await run(store, bad)
    assert message.startswith(
        "the heartbeat details of activity 'bad_details' cannot be stored in the journal"
    )
    assert "object" in message
    assert await heartbeats(store) == []


def test_in_activity_gives_heartbeat_details_and_heartbeats_go_nowhere() -> None:
    with sim.in_activity(attempt=2, heartbeat_details=Progress(3, "row-3")):
        durable.heartbeat(Progress(4, "row-4"))
        assert durable.activity_info().heartbeat_details == Progress(3, "row-3")
        with pytest.raises(durable.SerializationError):
            durable.heartbeat({1, 2, object()})


# --- payload codecs seal the details ----------------------------------------------------------


SECRET = "row-secret-cursor"


@durable.activity(retries=1, initial_backoff="1ms")
def secret_progress() -> Any:
    info = durable.activity_info()
    durable.heartbeat({"cursor": SECRET})
    if info.attempt == 1:
        raise ConnectionError("again")
    return info.heartbeat_details


@durable.workflow
def secretly():  # type: ignore[no-untyped-def]
    return (yield secret_progress())


async def test_payload_codecs_seal_the_details(loop: str, tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store", codec=Zlib())
    assert await run(store, secretly) == {"cursor": SECRET}
    data = Path(store.journal_path("r")).read_bytes()
    sealed = [e.details for e in scan(data, "r").events if isinstance(e, ev.AttemptHeartbeat)]
    assert sealed and all(pl.is_sealed(d) for d in sealed)
    # Through the store, plain again.
    assert details(await heartbeats(store))[0] == (0, 1, {"cursor": SECRET})


# --- the simulator: heartbeats that stop arriving ------------------------------------------


@durable.activity(retries=2, initial_backoff="1s", heartbeat_timeout="3s")
async def sync_files(n: int) -> int:
    info = durable.activity_info()
    start = info.heartbeat_details or 0
    for i in range(start, n):
        await trio.sleep(1)
        durable.heartbeat(i + 1)
    return n


@durable.workflow
def mirror(n: int):  # type: ignore[no-untyped-def]
    copied = yield sync_files(n)
    return f"copied {copied}"


def test_the_simulator_makes_heartbeats_stop_and_the_timeout_ends_the_attempt() -> None:
    silent = sim.ActivityFault("sync_files", attempt=1, kind="silent", seconds=5)
    report = sim.replay_recipe(mirror, 20, recipe=sim.Recipe(faults=(silent,)))
    assert report.ok, report.failure_text()
    events = report.reference.final_events
    (failed,) = [e for e in events if isinstance(e, ev.AttemptFailed)]
    assert failed.error.type == "durable.AttemptTimeout"
    # Heartbeats at 1..4 s arrived; from 5 s on, none: the attempt timed out 3 s after the last.
    assert "its last came 4s after it started" in failed.error.message
    scheduled = next(e for e in events if isinstance(e, ev.ActivityScheduled))
    assert failed.t - scheduled.t == 7.0
    attempts = [(x.attempt, x.outcome) for x in report.reference.executions]
    assert attempts == [(1, "cancelled (its timeout expired)"), (2, "returned 20")]
    assert next(loads_value(e.details) for e in events if isinstance(e, ev.AttemptHeartbeat)) == 1


def test_the_stop_heartbeating_fault_is_crash_tested() -> None:
    # Crashes everywhere, heartbeat records included. Attempt 1's heartbeats stop after 2 s,
    # so it times out wherever a crash made it start again from (its journaled details say 1
    # at most); the oracle compares every schedule with the crash-free run. (An attempt that
    # a crash made go on from further ahead could finish before its timeout: another history,
    # as valid, that the crash-free run cannot vouch for.)
    silent = sim.ActivityFault("sync_files", attempt=1, kind="silent", seconds=2)
    report = sim.Simulator(faults=(silent,)).assert_crash_safe(mirror, 12)
    assert report.schedules > 100


def test_a_silent_fault_of_an_activity_without_heartbeat_timeout_changes_nothing() -> None:
    silent = sim.ActivityFault("quiet", kind="silent")
    report = sim.replay_recipe(no_heartbeats, recipe=sim.Recipe(faults=(silent,)))
    assert report.ok, report.failure_text()


# --- after a crash: a real process SIGKILLed while its activity heartbeats -------------------

DRIVER = """
import os, signal, sys
import durable
from durable import _attempts

store_path, kind, interval, loop = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
_attempts.HEARTBEAT_RECORD_INTERVAL = interval
KILL = os.path.join(store_path, "..", "kill")

def work():
    info = durable.activity_info()
    print("attempt", info.attempt, "details", info.heartbeat_details, flush=True)
    if not os.path.exists(KILL):
        return info.heartbeat_details
    for done in (1, 2, 3):
        durable.heartbeat({"done": done})
    os.kill(os.getpid(), signal.SIGKILL)

@durable.activity
def copy_sync():
    return work()

@durable.activity
async def copy_async():
    return work()

@durable.workflow
def job():
    return (yield (copy_sync if kind == "sync" else copy_async)())

print("result", durable.run(job, id="job", store=durable.FileStore(store_path), loop=loop))
"""


def life(tmp_path: Path, kind: str, interval: float, loop: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    store = tmp_path / "store"
    return subprocess.run(
        [sys.executable, str(script), str(store), kind, str(interval), loop],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("interval", "read"), [(1e9, 1), (0.0, 3)])
def test_after_a_sigkill_the_next_attempt_reads_the_journaled_details(
    tmp_path: Path, loop: str, kind: str, interval: float, read: int
) -> None:
    # The first life heartbeats 1, 2, 3 and is killed. With a huge interval only the first
    # heartbeat is journaled (the other two were in memory, and are lost with the process);
    # with no interval, each one is.
    (tmp_path / "kill").touch()
    killed = life(tmp_path, kind, interval, loop)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert killed.stdout.splitlines() == ["attempt 1 details None"]
    (tmp_path / "kill").unlink()
    resumed = life(tmp_path, kind, interval, loop)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines() == [
        f"attempt 1 details {{'done': {read}}}",
        f"result {{'done': {read}}}",
    ]
