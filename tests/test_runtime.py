"""The executor through the public API: Runtime, RunHandle, durable.run, stores.

Every test runs on trio and on asyncio (the ``loop`` parameter, tests/conftest.py),
but for the few marked ``trio_only``.

A crash is made the way a service stops: leaving the ``async with Runtime``
block while an activity is in flight cancels it, and whatever was journaled
stays. A new Runtime over the same store then recovers the run.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import loops
import pytest
import trio

import durable
from durable._core import events as ev
from durable._core.values import encode_call

pytestmark = pytest.mark.usefixtures("loop")


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[durable.Store]:
    if request.param == "memory":
        yield durable.MemoryStore()
    else:
        yield durable.FileStore(tmp_path / "store")


def journal_bytes(store: durable.Store, run_id: str) -> bytes:
    if isinstance(store, durable.MemoryStore):
        return bytes(store.journals[run_id])
    assert isinstance(store, durable.FileStore)
    return Path(store.journal_path(run_id)).read_bytes()


async def events_of(store: durable.Store, run_id: str) -> list[type[Any]]:
    events = await store.read(run_id)
    assert events is not None
    return [type(e) for e in events]


class Blocker:
    """Lets a test stop a run in the middle of an activity.

    ``await blocker.block()`` waits forever while ``blocking`` is set and tells
    the test (``entered``) that an activity is now in flight.
    """

    def __init__(self) -> None:
        self.blocking = True
        self.in_flight = False

    async def block(self) -> None:
        if self.blocking:
            self.in_flight = True
            await loops.sleep(86400)

    async def entered(self) -> None:
        await loops.until(lambda: self.in_flight, "an activity is in flight")


def blocked_workflow(blocker: Blocker, name: str) -> durable.Workflow[[], None]:
    """A workflow of one activity that stays in flight while ``blocker`` blocks."""

    @durable.activity(name=f"{name}.block")
    async def block() -> None:
        await blocker.block()

    @durable.workflow(name=name)
    def blocked():
        yield block()

    return blocked


# --- start and result ------------------------------------------------------------


@durable.activity
async def double(x: int) -> int:
    return 2 * x


@durable.activity
def greet(name: str) -> str:
    return f"hello {name}"


@durable.workflow(name="test_runtime.pipeline")
def pipeline(x: int, name: str = "world"):
    doubled = yield double(x)
    greeting = yield greet(name)
    return [doubled, greeting]


async def test_start_returns_a_handle_whose_result_is_the_workflow_result(store: durable.Store) -> None:
    async with durable.Runtime(store) as rt:
        handle = await rt.start(pipeline, 21, name="alice", id="p-1")
        assert (handle.run_id, handle.workflow) == ("p-1", "test_runtime.pipeline")
        assert await handle.result() == [42, "hello alice"]
        assert handle.status == "completed"
    assert await events_of(store, "p-1") == [
        ev.RunStarted,
        ev.ActivityScheduled,
        ev.ActivityCompleted,
        ev.ActivityScheduled,
        ev.ActivityCompleted,
        ev.RunCompleted,
    ]


async def test_start_without_an_id_makes_a_new_unique_id(store: durable.Store) -> None:
    async with durable.Runtime(store) as rt:
        first = await rt.start(pipeline, 1)
        second = await rt.start(pipeline, 1)
        assert first.run_id != second.run_id
        assert await first.result() == await second.result() == [2, "hello world"]
    assert await store.run_ids() == sorted([first.run_id, second.run_id])


async def test_runs_proceed_concurrently_in_one_runtime(store: durable.Store) -> None:
    blocker = Blocker()

    @durable.activity
    async def wait_a_while() -> None:
        await blocker.block()

    @durable.workflow
    def slow():
        yield wait_a_while()
        return "slow"

    async with durable.Runtime(store) as rt:
        stuck = await rt.start(slow, id="slow")
        await blocker.entered()
        quick = await rt.start(pipeline, 2, id="quick")
        assert await quick.result() == [4, "hello world"]
        assert stuck.status == "running"


async def test_a_runtime_is_used_inside_async_with(store: durable.Store) -> None:
    rt = durable.Runtime(store)
    with pytest.raises(RuntimeError, match=r"async with durable\.Runtime"):
        await rt.start(pipeline, 1)


async def test_start_needs_a_workflow(store: durable.Store) -> None:
    async with durable.Runtime(store) as rt:
        with pytest.raises(TypeError, match=r"@durable\.workflow"):
            await rt.start(pipeline.fn, 1)  # type: ignore[arg-type]


# --- one id, one run ------------------------------------------------------------------


async def test_starting_a_finished_run_again_returns_its_stored_result_without_running_it(
    store: durable.Store,
) -> None:
    calls: list[int] = []

    @durable.activity
    def count(x: int) -> int:
        calls.append(x)
        return len(calls)

    @durable.workflow
    def counted(x: int):
        return (yield count(x))

    async with durable.Runtime(store) as rt:
        assert await (await rt.start(counted, 7, id="c-1")).result() == 1
        again = await rt.start(counted, 7, id="c-1")
        assert await again.result() == 1
    before = journal_bytes(store, "c-1")
    async with durable.Runtime(store) as rt:
        attached = await rt.start(counted, 7, id="c-1")
        assert attached.status == "completed"
        assert await attached.result() == 1
    assert calls == [7]
    assert journal_bytes(store, "c-1") == before


async def test_the_same_id_with_another_workflow_is_a_conflict(store: durable.Store) -> None:
    @durable.workflow(name="test_runtime.other")
    def other(x: int, name: str = "world"):
        return (yield double(x))

    async with durable.Runtime(store) as rt:
        await (await rt.start(pipeline, 1, id="shared")).result()
        with pytest.raises(durable.RunConflictError) as info:
            await rt.start(other, 1, id="shared")
    message = str(info.value)
    assert info.value.run_id == "shared"
    assert "'shared'" in message
    assert "'test_runtime.pipeline'" in message
    assert "'test_runtime.other'" in message
    assert "choose another id" in message


async def test_the_same_id_with_other_arguments_is_a_conflict(store: durable.Store) -> None:
    async with durable.Runtime(store) as rt:
        await (await rt.start(pipeline, 1, id="shared")).result()
    async with durable.Runtime(store) as rt:
        with pytest.raises(durable.RunConflictError) as info:
            await rt.start(pipeline, 2, name="bob", id="shared")
    message = str(info.value)
    assert "'shared'" in message
    assert "(1)" in message
    assert "(2, name='bob')" in message


async def test_the_same_id_with_other_arguments_conflicts_while_the_run_is_in_flight(
    store: durable.Store,
) -> None:
    blocker = Blocker()

    @durable.activity
    async def wait_a_while(x: int) -> None:
        await blocker.block()

    @durable.workflow
    def waits(x: int):
        yield wait_a_while(x)

    async with durable.Runtime(store) as rt:
        first = await rt.start(waits, 1, id="busy")
        await blocker.entered()
        assert await rt.start(waits, 1, id="busy") is first
        with pytest.raises(durable.RunConflictError, match="'busy'"):
            await rt.start(waits, 2, id="busy")


async def test_result_after_the_runtime_stopped_says_the_run_did_not_finish(store: durable.Store) -> None:
    # It waited forever: the run's task was cancelled with the runtime, and nothing
    # else would ever end its handle.
    blocker = Blocker()
    stopped = blocked_workflow(blocker, "test_runtime.stopped")
    async with durable.Runtime(store) as rt:
        handle = await rt.start(stopped, id="stopped")
        await blocker.entered()
    async with loops.deadline(10):
        with pytest.raises(durable.DurableError, match="'stopped' did not finish here: its Runtime stopped"):
            await handle.result()
    assert handle.status == "error"
    blocker.blocking = False
    async with durable.Runtime(store) as rt:  # the journal kept it: it resumes and ends
        assert await (await rt.start(stopped, id="stopped")).result() is None


async def test_unencodable_arguments_fail_at_start_and_write_nothing(store: durable.Store) -> None:
    async with durable.Runtime(store) as rt:
        with pytest.raises(durable.SerializationError, match="argument 2 of workflow") as info:
            await rt.start(pipeline, 1, object(), id="bad-args")
        with pytest.raises(durable.SerializationError, match="argument name= of workflow"):
            await rt.start(pipeline, 1, name={1, object()}, id="bad-args")
    assert "object" in str(info.value)
    assert await store.read("bad-args") is None
    assert await store.run_ids() == []


# --- failure -----------------------------------------------------------------------


@durable.workflow(name="test_runtime.fails")
def fails(amount: int):
    yield double(amount)
    raise ValueError(f"amount {amount} is over the limit")


async def test_a_workflow_that_raises_makes_result_raise_workflow_failed(store: durable.Store) -> None:
    async with durable.Runtime(store) as rt:
        handle = await rt.start(fails, 500, id="f-1")
        with pytest.raises(durable.WorkflowFailed) as info:
            await handle.result()
        assert handle.status == "failed"
    error = info.value
    assert (error.run_id, error.workflow) == ("f-1", "test_runtime.fails")
    assert (error.error.type, error.error.message) == ("ValueError", "amount 500 is over the limit")
    assert "'f-1'" in str(error)
    assert "ValueError: amount 500 is over the limit" in str(error)
    assert (await events_of(store, "f-1"))[-1] is ev.RunFailed


async def test_a_failed_run_attached_again_fails_the_same_way(store: durable.Store) -> None:
    async with durable.Runtime(store) as rt:
        with pytest.raises(durable.WorkflowFailed):
            await (await rt.start(fails, 5, id="f-2")).result()
    async with durable.Runtime(store) as rt:
        handle = await rt.start(fails, 5, id="f-2")
        assert handle.status == "failed"
        with pytest.raises(durable.WorkflowFailed, match="amount 5 is over the limit"):
            await handle.result()


# --- recovery ---------------------------------------------------------------------


async def test_recover_resumes_an_unfinished_run_without_repeating_completed_steps(
    store: durable.Store,
) -> None:
    blocker = Blocker()
    calls: list[str] = []

    @durable.activity
    def reserve(item: str) -> str:
        calls.append(f"reserve {item}")
        return f"r-{item}"

    @durable.activity
    async def ship(reservation: str) -> str:
        calls.append(f"ship {reservation}")
        await blocker.block()
        return f"shipped {reservation}"

    @durable.workflow(name="test_runtime.recover_order")
    def order(item: str):
        reservation = yield reserve(item)
        return (yield ship(reservation))

    async with durable.Runtime(store) as rt:
        handle = await rt.start(order, "book", id="o-1")
        await blocker.entered()
    assert handle.status == "error"  # its runtime stopped before it finished: result() says so
    assert await events_of(store, "o-1") == [
        ev.RunStarted,
        ev.ActivityScheduled,
        ev.ActivityCompleted,
        ev.ActivityScheduled,
    ]

    blocker.blocking = False
    async with durable.Runtime(store) as rt:
        [recovered] = await rt.recover()
        assert recovered.run_id == "o-1"
        assert await recovered.result() == "shipped r-book"
        assert await rt.recover() == []
    assert calls == ["reserve book", "ship r-book", "ship r-book"]
    assert (await events_of(store, "o-1"))[-3:] == [ev.RunResumed, ev.ActivityCompleted, ev.RunCompleted]


async def test_starting_an_unfinished_run_again_resumes_it(store: durable.Store) -> None:
    blocker = Blocker()
    calls: list[int] = []

    @durable.activity
    async def step(n: int) -> int:
        calls.append(n)
        if n == 1:
            await blocker.block()
        return n

    @durable.workflow
    def two_steps():
        return [(yield step(0)), (yield step(1))]

    async with durable.Runtime(store) as rt:
        await rt.start(two_steps, id="s-1")
        await blocker.entered()
    blocker.blocking = False
    async with durable.Runtime(store) as rt:
        assert await (await rt.start(two_steps, id="s-1")).result() == [0, 1]
    assert calls == [0, 1, 1]


async def test_recover_leaves_finished_runs_alone(store: durable.Store) -> None:
    async with durable.Runtime(store) as rt:
        await (await rt.start(pipeline, 3, id="done")).result()
    before = journal_bytes(store, "done")
    async with durable.Runtime(store) as rt:
        assert await rt.recover() == []
    assert journal_bytes(store, "done") == before


async def test_a_damaged_journal_does_not_keep_recover_from_resuming_the_others(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path)
    for run_id in ("damaged", "sound"):
        started = ev.RunStarted(run_id, pipeline.name, encode_call((2,), {}, what="test"), 0.0)
        writer = await store.create(started)
        assert writer is not None
        writer.append(ev.RunResumed(1.0, 1))
        writer.append(ev.RunResumed(2.0, 1))
        await writer.sync()
        writer.close()
    path = store.journal_path("damaged")
    data = bytearray(Path(path).read_bytes())
    data[40] ^= 0xFF  # inside record 0: the later records prove it was durable
    Path(path).write_bytes(bytes(data))
    async with durable.Runtime(durable.FileStore(tmp_path)) as rt:
        handles = {handle.run_id: handle for handle in await rt.recover()}
        assert set(handles) == {"damaged", "sound"}
        with pytest.raises(durable.JournalCorruptError, match="damaged"):
            await handles["damaged"].result()
        assert await handles["sound"].result() == [4, "hello world"]


async def test_recovering_a_run_of_an_unknown_workflow_names_the_workflow(store: durable.Store) -> None:
    started = ev.RunStarted("orphan", "billing.retired_workflow", encode_call((1,), {}, what="test"), 0.0)
    writer = await store.create(started)
    assert writer is not None
    writer.close()
    before = journal_bytes(store, "orphan")

    async with durable.Runtime(store) as rt:
        [handle] = await rt.recover()
        assert (handle.run_id, handle.workflow) == ("orphan", "billing.retired_workflow")
        with pytest.raises(durable.UnknownWorkflowError) as info:
            await handle.result()
    assert info.value.name == "billing.retired_workflow"
    assert info.value.run_id == "orphan"
    assert "'billing.retired_workflow'" in str(info.value)
    assert "import the module" in str(info.value)
    assert journal_bytes(store, "orphan") == before


# --- divergence ------------------------------------------------------------------


async def test_nothing_is_written_after_a_non_determinism_error(store: durable.Store) -> None:
    blocker = Blocker()

    @durable.activity
    async def reserve(item: str) -> str:
        return f"r-{item}"

    @durable.activity
    async def ship(reservation: str) -> str:
        await blocker.block()
        return "shipped"

    @durable.activity
    async def email(reservation: str) -> str:
        return "emailed"

    @durable.workflow(name="test_runtime.changing")
    def old(item: str):
        reservation = yield reserve(item)
        return (yield ship(reservation))

    async with durable.Runtime(store) as rt:
        await rt.start(old, "lamp", id="d-1")
        await blocker.entered()
    before = journal_bytes(store, "d-1")

    @durable.workflow(name="test_runtime.changing")
    def new(item: str):
        reservation = yield reserve(item)
        return (yield email(reservation))  # the changed step

    async with durable.Runtime(store) as rt:
        handle = await rt.start(new, "lamp", id="d-1")
        with pytest.raises(durable.NonDeterminismError) as info:
            await handle.result()
        assert handle.status == "error"
        [recovered] = await rt.recover()  # the registry now holds the new code
        with pytest.raises(durable.NonDeterminismError):
            await recovered.result()
    assert journal_bytes(store, "d-1") == before
    error = info.value
    assert (error.run_id, error.seq) == ("d-1", 1)
    assert error.recorded == f"activity {ship.name}('r-lamp')"
    assert error.yielded == f"activity {email.name}('r-lamp')"
    assert error.location is not None
    assert "# the changed step" in error.location

    blocker.blocking = False
    async with durable.Runtime(store) as rt:
        assert await (await rt.start(old, "lamp", id="d-1")).result() == "shipped"


# --- activity_info ---------------------------------------------------------------


def test_activity_info_outside_an_activity_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError, match=r"outside an activity"):
        durable.activity_info()


async def test_activities_read_their_run_step_and_attempt(store: durable.Store) -> None:
    seen: list[durable.ActivityInfo] = []

    @durable.activity
    def sync_step() -> None:
        seen.append(durable.activity_info())

    @durable.activity
    async def async_step() -> None:
        seen.append(durable.activity_info())

    @durable.workflow
    def both():
        yield sync_step()
        yield async_step()

    async with durable.Runtime(store) as rt:
        await (await rt.start(both, id="info-1")).result()
    assert [(i.run_id, i.seq, i.attempt, i.activity) for i in seen] == [
        ("info-1", 0, 1, sync_step.name),
        ("info-1", 1, 1, async_step.name),
    ]
    assert [i.idempotency_key for i in seen] == ["info-1/0", "info-1/1"]
    with pytest.raises(RuntimeError):
        durable.activity_info()


@pytest.mark.trio_only  # a virtual clock for its backoffs
async def test_the_idempotency_key_is_the_same_on_every_attempt(
    store: durable.Store, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[durable.ActivityInfo] = []

    @durable.activity(retries=2, initial_backoff="1s")
    async def flaky() -> str:
        seen.append(durable.activity_info())
        if len(seen) < 3:
            raise ConnectionError("try again")
        return "ok"

    @durable.workflow
    def wf():
        yield greet("x")
        return (yield flaky())

    async with durable.Runtime(store) as rt:
        assert await (await rt.start(wf, id="key-1")).result() == "ok"
    assert [i.attempt for i in seen] == [1, 2, 3]
    assert {i.idempotency_key for i in seen} == {"key-1/1"}


async def test_the_idempotency_key_survives_recovery(store: durable.Store) -> None:
    blocker = Blocker()
    seen: list[durable.ActivityInfo] = []

    @durable.activity
    async def pay() -> str:
        seen.append(durable.activity_info())
        await blocker.block()
        return "paid"

    @durable.workflow
    def wf():
        return (yield pay())

    async with durable.Runtime(store) as rt:
        await rt.start(wf, id="key-2")
        await blocker.entered()
    blocker.blocking = False
    async with durable.Runtime(store) as rt:
        [handle] = await rt.recover()
        assert await handle.result() == "paid"
    assert len(seen) == 2
    assert seen[0].idempotency_key == seen[1].idempotency_key == "key-2/0"


# --- durable.run -------------------------------------------------------------------


@durable.workflow(name="test_runtime.sync_entry")
def sync_entry(x: int):
    doubled = yield double(x)
    return doubled + 1


async def test_durable_run_in_async_code_is_refused_with_the_way_to_do_it(loop: str) -> None:
    # It blocked the running loop for the whole run (trio), or failed inside asyncio.run
    # with "cannot be called from a running event loop" and a coroutine never awaited.
    for run_on in ("trio", "asyncio"):
        with pytest.raises(RuntimeError, match=r"event loop is running here: .*durable\.Runtime"):
            durable.run(pipeline, 1, store=durable.MemoryStore(), loop=run_on)  # type: ignore[arg-type]


def test_run_with_a_store_path_runs_to_the_result(loop: str, tmp_path: Path) -> None:
    assert durable.run(sync_entry, 20, id="r-1", store=tmp_path / "s", loop=loop) == 41
    assert (tmp_path / "s" / "runs" / "r-1.journal").is_file()
    assert durable.run(sync_entry, 20, id="r-1", store=str(tmp_path / "s"), loop=loop) == 41


def test_run_without_a_store_uses_the_durable_store_variable(
    loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DURABLE_STORE", str(tmp_path / "from-env"))
    assert durable.run(sync_entry, 1, id="env-1", loop=loop) == 3
    assert (tmp_path / "from-env" / "runs" / "env-1.journal").is_file()
    assert not (tmp_path / ".durable").exists()


def test_run_without_a_store_or_variable_uses_dot_durable(
    loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    assert durable.run(sync_entry, 1, id="default-1", loop=loop) == 3
    assert (tmp_path / ".durable" / "runs" / "default-1.journal").is_file()


def test_run_without_an_id_makes_a_new_run_each_time(loop: str, tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path)
    assert durable.run(sync_entry, 1, store=store, loop=loop) == 3
    assert durable.run(sync_entry, 1, store=store, loop=loop) == 3
    run_ids = trio.run(store.run_ids)
    assert len(run_ids) == 2
    assert run_ids[0] != run_ids[1]


def test_run_raises_workflow_failed(loop: str, tmp_path: Path) -> None:
    with pytest.raises(durable.WorkflowFailed, match="over the limit"):
        durable.run(fails, 3, id="f", store=tmp_path, loop=loop)


# --- FileStore ------------------------------------------------------------------


async def test_a_file_store_refuses_a_second_writer(tmp_path: Path) -> None:
    blocker = Blocker()

    @durable.activity
    async def hold() -> None:
        await blocker.block()

    @durable.workflow(name="test_runtime.locked")
    def held():
        yield hold()

    async with durable.Runtime(durable.FileStore(tmp_path)) as first:
        await first.start(held, id="locked")
        await blocker.entered()
        with pytest.raises(durable.RunLockedError, match="'locked' is open for writing"):
            await durable.FileStore(tmp_path).open("locked")
        async with durable.Runtime(durable.FileStore(tmp_path)) as second:
            with pytest.raises(durable.RunLockedError):
                await second.start(held, id="locked")
            assert await second.recover() == []
        assert isinstance(durable.RunLockedError("x"), durable.StoreError)


async def test_journal_files_are_private_to_their_owner(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path / "store")
    async with durable.Runtime(store) as rt:
        await (await rt.start(pipeline, 1, id="private")).result()
    assert stat.S_IMODE(os.stat(store.journal_path("private")).st_mode) == 0o600


async def test_a_run_in_flight_cannot_be_opened_by_a_second_runtime(store: durable.Store) -> None:
    blocker = Blocker()
    held = blocked_workflow(blocker, "test_runtime.in_flight")
    async with durable.Runtime(store) as first:
        await first.start(held, id="busy")
        await blocker.entered()
        async with durable.Runtime(store) as second:
            with pytest.raises(durable.RunLockedError, match="'busy'"):
                await second.start(held, id="busy")
            assert await second.recover() == []


# --- bad values and bad code ---------------------------------------------------------


async def test_an_unencodable_activity_result_fails_the_step_without_retrying(store: durable.Store) -> None:
    attempts: list[int] = []

    @durable.activity(retries=3)
    def returns_an_object() -> object:
        attempts.append(durable.activity_info().attempt)
        return object()

    @durable.workflow
    def wf():
        try:
            yield returns_an_object()
        except durable.ActivityError as exc:
            return [exc.type_name, exc.message, exc.attempts]

    async with durable.Runtime(store) as rt:
        type_name, message, count = await (await rt.start(wf, id="bad-result")).result()
    assert type_name == "durable.SerializationError"
    assert "the result of activity" in message
    assert "type object" in message
    assert count == 1
    assert attempts == [1]


async def test_a_workflow_that_yields_a_non_command_stops_with_type_error(store: durable.Store) -> None:
    @durable.workflow
    def yields_a_number():
        yield 42

    async with durable.Runtime(store) as rt:
        handle = await rt.start(yields_a_number, id="bad-yield")
        with pytest.raises(TypeError, match="must yield commands"):
            await handle.result()
        assert handle.status == "error"
    assert await events_of(store, "bad-yield") == [ev.RunStarted]


async def test_an_error_in_the_runtime_block_propagates_as_itself(store: durable.Store) -> None:
    with pytest.raises(KeyError, match="from the body"):
        async with durable.Runtime(store):
            raise KeyError("from the body")
