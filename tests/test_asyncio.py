"""durable on asyncio as on trio: every primitive through the Runtime and the Client on
both loops, activities written for asyncio, the errors of the wrong loop, and no
blocking of the asyncio loop.

The tests that ask for ``loop`` run once on trio and once on asyncio
(tests/conftest.py); their durations are real and short (the virtual clock of the
other runtime tests is trio's). Activities here are asyncio code when the loop is
asyncio (``tests/loops.py`` sleeps with the loop it runs on).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import loops
import pgutil
import pytest
import sniffio
import trio

import durable
import sim

pytestmark = pytest.mark.usefixtures("loop")

CALLS: list[str] = []


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[durable.Store]:
    CALLS.clear()
    yield durable.MemoryStore() if request.param == "memory" else durable.FileStore(tmp_path / "store")


@durable.activity
async def note(label: str) -> str:
    await loops.sleep(0.001)  # a real await on the activity's own loop
    CALLS.append(f"{label} on {sniffio.current_async_library()}")
    return label


@durable.activity(retries=3, initial_backoff="10ms")
async def flaky(label: str, failures: int) -> str:
    CALLS.append(label)
    if CALLS.count(label) <= failures:
        raise ConnectionError(f"{label}: not yet")
    return label


@durable.activity(timeout="50ms", retries=0)
async def stuck() -> None:
    try:
        await loops.sleep(3600)
    finally:
        CALLS.append(f"stuck cancelled on {sniffio.current_async_library()}")


@durable.workflow(name="tests.asyncio.steps")
def steps(label: str):  # type: ignore[no-untyped-def]
    first = yield note(f"{label}-1")
    yield durable.sleep("20ms")
    both = yield durable.gather(note(f"{label}-2"), note(f"{label}-3"))
    index, won = yield durable.race(note(f"{label}-4"), durable.sleep("1h"))
    retried = yield flaky(f"{label}-flaky", 2)
    return [first, *both, index, won, retried]


@durable.workflow(name="tests.asyncio.fan_out")
def fan_out(label: str):  # type: ignore[no-untyped-def]
    first = yield note(f"{label}-1")
    yield durable.sleep("1h")
    both = yield durable.gather(note(f"{label}-2"), note(f"{label}-3"), parent())
    return [first, *both]


@durable.workflow(name="tests.asyncio.approval")
def approval():  # type: ignore[no-untyped-def]
    yield note("asked")
    try:
        decision = yield durable.wait_signal("decision", timeout="1h")
    except durable.Cancelled:
        yield note("cleaned up")
        raise
    return decision


@durable.workflow(name="tests.asyncio.child")
def child(n: int):  # type: ignore[no-untyped-def]
    return (yield note(f"child {n}"))


@durable.workflow(name="tests.asyncio.parent")
def parent():  # type: ignore[no-untyped-def]
    return (yield durable.gather(child(1), child(2)))


@durable.workflow(name="tests.asyncio.countdown")
def countdown(n: int):  # type: ignore[no-untyped-def]
    yield note(f"at {n}")
    if n > 0:
        yield durable.continue_as_new(n - 1)
    return "lift-off"


@durable.workflow(name="tests.asyncio.timeout")
def times_out():  # type: ignore[no-untyped-def]
    try:
        yield stuck()
    except durable.ActivityError as error:
        return error.type_name
    return "no timeout"


# --- every primitive, on both loops ---------------------------------------------------


async def test_timers_gather_race_and_retries_with_backoff(store: durable.Store, loop: str) -> None:
    async with loops.deadline(30), durable.Runtime(store) as runtime:
        handle = await runtime.start(steps, "a", id="steps")
        assert await handle.result() == ["a-1", "a-2", "a-3", 0, "a-4", "a-flaky"]
    assert CALLS.count("a-flaky") == 3  # two failures, retried after their backoffs
    assert f"a-1 on {loop}" in CALLS  # each async activity ran on the runtime's loop
    async with durable.Runtime(store) as runtime:  # attach: the stored result, nothing run
        CALLS.clear()
        assert await (await runtime.start(steps, "a", id="steps")).result() == [
            "a-1",
            "a-2",
            "a-3",
            0,
            "a-4",
            "a-flaky",
        ]
    assert CALLS == []


async def test_signals_and_cancellation_through_the_runtime_and_the_client(store: durable.Store) -> None:
    client = durable.Client(store)
    async with loops.deadline(30), durable.Runtime(store) as runtime:
        signalled = await runtime.start(approval, id="signalled")
        cancelled = await runtime.start(approval, id="cancelled")
        asked = f"asked on {sniffio.current_async_library()}"
        await loops.until(lambda: CALLS.count(asked) == 2, "both asked")
        await client.signal("signalled", "decision", {"ok": True})
        assert await signalled.result() == {"ok": True}
        await runtime.cancel("cancelled", "changed our mind")
        with pytest.raises(durable.Cancelled, match="changed our mind"):
            await cancelled.result()
    assert CALLS[-1].startswith("cleaned up")  # the workflow's cleanup ran before it ended


async def test_children_and_continue_as_new(store: durable.Store, loop: str) -> None:
    async with loops.deadline(30), durable.Runtime(store) as runtime:
        assert await (await runtime.start(parent, id="parent")).result() == ["child 1", "child 2"]
        assert await (await runtime.start(countdown, 2, id="countdown")).result() == "lift-off"
    # Every incarnation's activities run on the runtime's loop, children's too.
    assert [call for call in CALLS if call.startswith("at ")] == [f"at {n} on {loop}" for n in (2, 1, 0)]
    assert sorted(call for call in CALLS if call.startswith("child")) == [
        f"child {n} on {loop}" for n in (1, 2)
    ]


async def test_recover_resumes_a_run_left_in_flight(store: durable.Store) -> None:
    async with loops.deadline(30):
        async with durable.Runtime(store) as runtime:  # leaves while the run waits
            await runtime.start(approval, id="resumed")
            await loops.until(lambda: len(CALLS) == 1, "asked")
        async with durable.Runtime(store) as runtime:
            (handle,) = await runtime.recover()
            await runtime.signal("resumed", "decision", "yes")
            assert await handle.result() == "yes"
    assert len(CALLS) == 1  # the first step was not run again


async def test_an_activity_timeout_cancels_the_activity_on_its_loop(store: durable.Store, loop: str) -> None:
    async with loops.deadline(30), durable.Runtime(store) as runtime:
        assert await (await runtime.start(times_out, id="t")).result() == "durable.AttemptTimeout"
    assert [f"stuck cancelled on {loop}"] == CALLS


async def test_the_client_starts_and_reads_runs_that_a_runtime_executes(store: durable.Store) -> None:
    client = durable.Client(store)
    handle = await client.start(child, 7, id="from-client")
    assert await handle.status() == "queued"  # no worker has taken it
    async with loops.deadline(30), durable.Runtime(store) as runtime:
        (taken,) = await runtime.recover()
        assert await taken.result() == "child 7"
    assert await handle.result() == "child 7"
    assert await handle.status() == "completed"


@durable.activity(name="tests.asyncio.held")
async def held() -> str:
    CALLS.append("held")
    while "let go" not in CALLS:
        await loops.sleep(0.005)
    return "let go"


@durable.workflow(name="tests.asyncio.held_then_waits")
def held_then_waits():  # type: ignore[no-untyped-def]
    yield held()
    return (yield durable.wait_signal("decision"))  # no timeout: it waits until signalled


async def _status_becomes(handle: durable.ClientHandle, wanted: str) -> None:
    """Poll ``handle.status()`` until it says ``wanted`` (the states of ``durable ls``)."""
    seen = []
    for _ in range(3000):
        seen.append(await handle.status())
        if seen[-1] == wanted:
            return
        await loops.sleep(0.01)
    raise AssertionError(f"status never became {wanted!r}: {sorted(set(seen))}")


async def _client_status_through_each_state(
    store: durable.Store, run_id: str, *, waiting_cache: int | None = None
) -> None:
    """With ``waiting_cache=0`` the Runtime lets the waiting run go, as a worker does."""
    client = durable.Client(store)
    handle = await client.start(held_then_waits, id=run_id)
    assert await handle.status() == "queued"  # no worker, no Runtime has taken it
    cache = {} if waiting_cache is None else {"waiting_cache": waiting_cache}
    async with loops.deadline(60), durable.Runtime(store, **cache) as runtime:
        (taken,) = await runtime.recover()
        await loops.until(lambda: "held" in CALLS, "the activity in flight")
        assert await handle.status() == "running"  # held, an activity in flight
        CALLS.append("let go")
        await _status_becomes(handle, "waiting")  # for the signal, without a timeout
        await client.signal(run_id, "decision", "yes")
        if waiting_cache == 0:
            await runtime.recover()  # takes the run let go back, as a worker would
        assert await taken.result() == "yes"
    assert await handle.status() == "completed"
    with pytest.raises(durable.UnknownRunError):
        await durable.ClientHandle(client, "no-such-run", held_then_waits.name).status()


async def test_the_client_status_is_the_state_durable_ls_shows(store: durable.Store) -> None:
    """``ClientHandle.status()`` says what ``durable ls`` says: queued, running, waiting (kept
    by the Runtime, or let go), completed (stalled: tests/test_operations.py, with real
    processes killed)."""
    await _client_status_through_each_state(store, "kept")
    CALLS.clear()
    await _client_status_through_each_state(store, "let-go", waiting_cache=0)


def test_durable_run_takes_the_loop(tmp_path: Path, loop: str) -> None:
    CALLS.clear()
    assert durable.run(child, 1, store=tmp_path, loop=loop) == "child 1"  # type: ignore[arg-type]
    assert [f"child 1 on {loop}"] == CALLS


def test_durable_run_refuses_an_unknown_loop(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loop must be 'trio' or 'asyncio'"):
        durable.run(child, 1, store=tmp_path, loop="uvloop")  # type: ignore[arg-type]


# --- the wrong loop --------------------------------------------------------------------

ATTEMPTS: list[int] = []


@durable.activity(retries=5)
async def asyncio_only() -> None:
    ATTEMPTS.append(durable.activity_info().attempt)
    await asyncio.sleep(0.001)


@durable.activity(retries=5)
async def trio_only() -> None:
    ATTEMPTS.append(durable.activity_info().attempt)
    await trio.sleep(0.001)


@durable.activity(retries=5)
async def asyncio_yields_at_once() -> None:
    ATTEMPTS.append(durable.activity_info().attempt)
    await asyncio.sleep(0)  # a bare yield: trio calls it "some other framework like asyncio"


@durable.activity(retries=5)
async def asyncio_event() -> None:
    ATTEMPTS.append(durable.activity_info().attempt)
    await asyncio.Event().wait()  # with no asyncio loop, it asks None for a future


ASYNCIO_ONLY = {"asyncio": asyncio_only, "sleep(0)": asyncio_yields_at_once, "event": asyncio_event}


@durable.workflow(name="tests.asyncio.wrong_loop")
def wrong_loop(which: str):  # type: ignore[no-untyped-def]
    yield ASYNCIO_ONLY[which]() if which in ASYNCIO_ONLY else trio_only()


@pytest.mark.parametrize(("runs_on", "needs"), [("trio", "asyncio"), ("asyncio", "trio")])
def test_an_activity_written_for_the_other_loop_fails_once_with_the_fix(
    tmp_path: Path, runs_on: str, needs: str
) -> None:
    ATTEMPTS.clear()
    with pytest.raises(durable.WorkflowFailed) as failed:
        durable.run(wrong_loop, needs, store=tmp_path, loop=runs_on)  # type: ignore[arg-type]
    assert ATTEMPTS == [1]  # not retried, though its policy allows five retries
    text = str(failed.value)
    assert "LoopMismatchError" in text
    assert f"needs the {needs} event loop, but the runtime runs on {runs_on}" in text
    assert f"loop='{needs}'" in text
    assert f"--loop {needs}" in text


@pytest.mark.parametrize("which", ["sleep(0)", "event"])
def test_more_asyncio_code_on_trio_is_told_apart_too(tmp_path: Path, which: str) -> None:
    # trio's TypeError for a bare yield, and asyncio's Event or Queue asking a missing
    # loop for a future, were retried five times with errors that did not name the fix.
    ATTEMPTS.clear()
    with pytest.raises(durable.WorkflowFailed) as failed:
        durable.run(wrong_loop, which, store=tmp_path, loop="trio")
    assert ATTEMPTS == [1]
    assert "needs the asyncio event loop, but the runtime runs on trio" in str(failed.value)


def test_loop_mismatch_error_carries_its_facts() -> None:
    error = durable.LoopMismatchError("fetch", needs="asyncio", runs_on="trio")
    assert (error.activity, error.needs, error.runs_on) == ("fetch", "asyncio", "trio")
    assert "loop='asyncio'" in str(error)


# --- real asyncio libraries in activities ----------------------------------------------


@durable.activity
async def echo_over_tcp(port: int, text: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(text.encode() + b"\n")
    await writer.drain()
    answer = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return answer.decode().strip()


@durable.workflow(name="tests.asyncio.echo")
def echo(port: int, text: str):  # type: ignore[no-untyped-def]
    return (yield echo_over_tcp(port, text))


async def _serve_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = await reader.readline()
    writer.write(line.upper())
    await writer.drain()
    writer.close()


@pytest.mark.trio_only  # asyncio code throughout: it runs under asyncio.run below
def test_an_activity_talks_to_an_asyncio_tcp_server_on_the_same_loop(tmp_path: Path) -> None:
    async def main() -> str:
        server = await asyncio.start_server(_serve_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, durable.Runtime(tmp_path) as runtime:
            return await (await runtime.start(echo, port, "hello", id="echo")).result()  # type: ignore[no-any-return]

    assert asyncio.run(main()) == "HELLO"


REDIS = ("127.0.0.1", 6379)


def _redis_reachable() -> bool:
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        return False
    return True


@durable.activity
async def count_visit(key: str) -> int:
    import redis.asyncio as redis  # noqa: PLC0415 - the test extra only

    client = redis.Redis(host=REDIS[0], port=REDIS[1])
    try:
        return int(await client.incr(key))
    finally:
        await client.aclose()


@durable.workflow(name="tests.asyncio.visits")
def visits(key: str):  # type: ignore[no-untyped-def]
    first = yield count_visit(key)
    second = yield count_visit(key)
    return [first, second]


@pytest.mark.trio_only  # redis.asyncio: asyncio code, run by loop="asyncio"
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_redis_asyncio_in_activities_against_a_real_server(tmp_path: Path) -> None:
    if not _redis_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS} (CI starts it)")
        pytest.skip(f"no Redis at {REDIS[0]}:{REDIS[1]}")
    key = f"durable-test-{os.getpid()}-{tmp_path.name}"
    assert durable.run(visits, key, store=tmp_path, loop="asyncio") == [1, 2]
    # Run again: the journal answers, Redis is not called a third time.
    assert durable.run(visits, key, store=tmp_path, loop="asyncio", id=None) == [3, 4]
    # On trio, redis.asyncio raises its own ConnectionError caused by asyncio's "no running
    # event loop": still the wrong loop, said once, not retried.
    with pytest.raises(durable.WorkflowFailed) as failed:
        durable.run(visits, key, store=tmp_path, loop="trio")
    assert "failed after 1 attempt: durable.LoopMismatchError" in str(failed.value)
    gc.collect()  # redis leaves a coroutine of its cleanup unawaited on trio: collected here


# --- the simulator ---------------------------------------------------------------------


@pytest.mark.trio_only  # the simulator runs itself; its loop is an option
def test_the_simulator_explores_a_workflow_whose_activities_are_asyncio_code() -> None:
    seen: set[str] = set()
    CALLS.clear()  # what tests before this one left

    def next_schedule() -> None:  # each schedule starts from the same world
        seen.update(call.split(" on ")[1] for call in CALLS if " on " in call)
        CALLS.clear()

    report = sim.Simulator(loop="asyncio", before_each=next_schedule).explore(fan_out, "s", max_crashes=1)
    assert report.ok, report.failure_text()
    assert report.schedules > 10
    next_schedule()
    assert seen == {"asyncio"}
    with pytest.raises(ValueError, match=r"sim.Simulator\(loop='asyncio'\)"):
        sim.explore(wrong_loop, "asyncio", max_crashes=1)


# --- PostgreSQL on asyncio --------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    pgutil.require()
    schema = pgutil.fresh_schema()
    yield f"{pgutil.dsn()}?schema={schema}"
    pgutil.drop_schema(schema)


@pytest.mark.postgres
async def test_the_runtime_and_client_on_postgresql(pg_url: str, loop: str) -> None:
    CALLS.clear()
    store = durable.PostgresStore(pg_url)
    client = durable.Client(store)
    async with loops.deadline(60), durable.Runtime(store) as runtime:
        handle = await runtime.start(approval, id="pg")
        await loops.until(lambda: len(CALLS) == 1, "asked")
        await client.signal("pg", "decision", "yes")
        assert await handle.result() == "yes"
    assert [f"asked on {loop}"] == CALLS


@pytest.mark.postgres
async def test_the_client_status_on_postgresql(pg_url: str, loop: str) -> None:
    CALLS.clear()
    # Kept by the Runtime: its wait is committed for other processes to see, though
    # nothing leaves the process; and let go, as a worker does.
    await _client_status_through_each_state(durable.PostgresStore(pg_url), "kept")
    CALLS.clear()
    await _client_status_through_each_state(durable.PostgresStore(pg_url), "let-go", waiting_cache=0)


@pytest.mark.postgres
@pytest.mark.trio_only  # asyncio's loop is the one watched
def test_a_postgresql_call_that_waits_does_not_block_the_asyncio_loop(pg_url: str) -> None:
    """While the database keeps a call waiting (a lock held elsewhere), the loop runs on."""
    import psycopg  # noqa: PLC0415 - the postgres extra

    store = durable.PostgresStore(pg_url)
    schema = pg_url.rpartition("schema=")[2]

    async def main() -> tuple[int, int]:
        client = durable.Client(store)
        await client.start(child, 1, id="first")  # makes the tables
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        with psycopg.connect(pgutil.dsn(), autocommit=True) as locker:
            locker.execute("BEGIN")
            locker.execute(f'LOCK TABLE "{schema}".durable_runs IN ACCESS EXCLUSIVE MODE')
            ticker = asyncio.ensure_future(tick())
            start = asyncio.ensure_future(client.start(child, 2, id="second"))
            await asyncio.sleep(0.3)
            assert not start.done()  # the lock keeps it waiting...
            during = ticks  # ...and the loop ran all the while
            locker.execute("COMMIT")
        await asyncio.wait_for(start, 30)  # a hang guard
        ticker.cancel()
        return during, ticks

    during, after = asyncio.run(main())
    assert during >= 10, f"the asyncio loop ran {during} times in 0.3 s while a call waited"
    assert after >= during


# --- many callers at once ---------------------------------------------------------------


@pytest.mark.trio_only  # asyncio's own concurrency: asyncio.gather under asyncio.run
def test_many_asyncio_tasks_call_the_client_at_once_without_a_runtime(tmp_path: Path) -> None:
    """Each call outside a Runtime starts durable's trio guest and stops it after: calls that
    overlap share it, and one that comes while it stops waits for it (one per thread)."""

    async def caller(client: durable.Client, n: int) -> list[str]:
        statuses = []
        for k in range(10):
            handle = await client.start(child, n, id=f"c{n}-{k}")
            statuses.append(await handle.status())
        return statuses

    async def main() -> list[list[str]]:
        client = durable.Client(tmp_path)
        return await asyncio.gather(*(caller(client, n) for n in range(10)))

    assert asyncio.run(main()) == [["queued"] * 10] * 10


async def test_a_client_in_async_with_keeps_working_inside_and_after(tmp_path: Path) -> None:
    async with durable.Client(tmp_path) as client:
        handle = await client.start(child, 1, id="held")
        assert await handle.status() == "queued"
    assert await handle.status() == "queued"  # outside the block, each call on its own
    with pytest.raises(durable.UnknownRunError):
        await client.signal("no-such-run", "x")
