"""Child workflows: yield a call of another workflow, and it runs as a child run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import durable
import sim
from durable.lowlevel import ChildCompleted, ChildStarted, StepCancelled

DONE: list[str] = []


@durable.activity
async def record(label: str) -> str:
    DONE.append(label)
    return label


@durable.workflow(name="tests.children.ship")
def ship(item: str, fail: bool = False):  # type: ignore[no-untyped-def]
    label = yield record(f"packed {item}")
    if fail:
        raise ValueError(f"no stock for {item}")
    yield record(f"shipped {item}")
    return label.upper()


@durable.workflow(name="tests.children.order")
def order(items: list[str]):  # type: ignore[no-untyped-def]
    first = yield ship(items[0])
    rest = yield durable.gather(*[ship(item) for item in items[1:]])
    return [first, *rest]


@durable.workflow(name="tests.children.compensating")
def compensating(item: str):  # type: ignore[no-untyped-def]
    try:
        yield ship(item, fail=True)
    except durable.ChildWorkflowError as error:
        yield record(f"refund {item}")
        return f"{error.type_name}: {error.message} (run {error.run_id})"
    return "shipped"


@durable.workflow(name="tests.children.waiting")
def waiting():  # type: ignore[no-untyped-def]
    return (yield durable.wait_signal("go"))


@durable.workflow(name="tests.children.racing")
def racing():  # type: ignore[no-untyped-def]
    return (yield durable.race(waiting(), durable.sleep("1h")))


@durable.workflow(name="tests.children.parent_of_waiting")
def parent_of_waiting():  # type: ignore[no-untyped-def]
    return (yield waiting())


@pytest.fixture(autouse=True)
def _clear() -> None:
    DONE.clear()


async def test_a_child_runs_as_its_own_run_and_its_result_comes_back(loop: str) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(order, ["a", "b", "c"], id="o")
        assert await handle.result() == ["PACKED A", "PACKED B", "PACKED C"]
    assert sorted(await store.run_ids()) == ["o", "o/0", "o/1", "o/2"]
    events = await store.read("o") or []
    started = [e for e in events if isinstance(e, ChildStarted)]
    assert [(e.seq, e.workflow, e.run_id) for e in started] == [
        (0, "tests.children.ship", "o/0"),
        (1, "tests.children.ship", "o/1"),
        (2, "tests.children.ship", "o/2"),
    ]
    assert len([e for e in events if isinstance(e, ChildCompleted)]) == 3
    child = await store.read("o/1") or []
    assert durable.lowlevel.loads_value(child[-1].result) == "PACKED B"  # type: ignore[union-attr]


async def test_a_failed_child_raises_child_workflow_error_in_the_parent(loop: str) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        handle = await runtime.start(compensating, "x", id="c")
        assert await handle.result() == "ValueError: no stock for x (run c/0)"
    assert DONE == ["packed x", "refund x"]


async def test_a_parent_resumed_after_a_stop_finds_its_child_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.start(parent_of_waiting, id="p")
        await trio.sleep(60)  # the process stops while the child waits
    assert await durable.FileStore(tmp_path).run_ids() == ["p", "p/0"]
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        handle = await runtime.start(parent_of_waiting, id="p")
        await trio.sleep(1)
        await runtime.signal("p/0", "go", "went")
        assert await handle.result() == "went"
    events = await durable.FileStore(tmp_path).read("p") or []
    assert len([e for e in events if isinstance(e, ChildStarted)]) == 1  # the same child, not a second


async def test_recover_resumes_parent_and_child_together(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.start(parent_of_waiting, id="p")
        await trio.sleep(60)
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        handles = {h.run_id: h for h in await runtime.recover()}
        assert set(handles) == {"p", "p/0"}
        await runtime.signal("p/0", "go", 7)
        assert await handles["p"].result() == 7
        assert await handles["p/0"].result() == 7


async def test_cancelling_the_parent_cancels_its_child(autojump_clock: trio.testing.MockClock) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(parent_of_waiting, id="p")
        await trio.sleep(1)
        await runtime.cancel("p", "changed my mind")
        with pytest.raises(durable.Cancelled):
            await handle.result()
        with pytest.raises(durable.Cancelled, match="parent run 'p' cancelled step 0"):
            await (await runtime.start(waiting, id="p/0")).result()


async def test_a_child_that_loses_a_race_is_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(racing, id="r")
        assert await handle.result() == (1, None)  # race's (index, result), a tuple
        with pytest.raises(durable.Cancelled):
            await (await runtime.start(waiting, id="r/0")).result()
    events = await store.read("r") or []
    assert [e.seq for e in events if isinstance(e, StepCancelled)] == [0]


async def test_a_child_cancelled_on_its_own_raises_child_workflow_error_in_the_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        handle = await runtime.start(parent_of_waiting, id="p")
        await trio.sleep(1)
        await runtime.cancel("p/0", "not needed")
        with pytest.raises(durable.WorkflowFailed, match=r"ChildWorkflowError.*was cancelled"):
            await handle.result()


def test_calling_a_workflow_makes_a_command_that_runs_nothing() -> None:
    call = ship("a")
    assert isinstance(call, durable.ChildCall)
    assert call.describe() == "child workflow tests.children.ship('a')"
    assert DONE == []
    with pytest.raises(durable.SerializationError, match=r"tests\.children\.ship"):
        ship(object())  # type: ignore[arg-type]


async def test_a_parent_that_changed_its_child_call_is_a_divergence(loop: str, tmp_path: Path) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        await (await runtime.start(order, ["a"], id="o")).result()
        store = runtime.store
    events = await store.read("o") or []
    core = durable.lowlevel.Replay(compensating, events[0])  # type: ignore[arg-type]
    with pytest.raises(durable.NonDeterminismError, match=r"child workflow tests\.children\.ship"):
        for event in events[1:]:
            core.apply(event)


@pytest.mark.parametrize(
    ("workflow", "args", "result"),
    [
        (order, (["a", "b"],), ["PACKED A", "PACKED B"]),
        (compensating, ("x",), "ValueError: no stock for x (run sim/0)"),
        (racing, (), (1, None)),
    ],
    ids=["gather-of-children", "failed-child", "child-loses-a-race"],
)
def test_workflows_with_children_are_crash_safe(workflow: Any, args: tuple[Any, ...], result: Any) -> None:
    # The child's run id is its parent's with a suffix: a fixed run_id makes it part of the result.
    report = sim.explore(workflow, *args, max_crashes=1, run_id="sim")
    assert report.ok, report.explain()
    assert report.result == result
    assert report.schedules > 10


@pytest.mark.postgres
async def test_a_parent_waits_for_a_child_that_another_worker_holds() -> None:
    # Two PostgresStore instances on one schema stand for two worker processes.
    import pgutil  # noqa: PLC0415 - only this test needs the PostgreSQL test helpers

    first = pgutil.fresh_store(lease_ttl="30s")
    second = pgutil.store_on(first.schema)
    try:
        async with durable.Runtime(first, poll=0.05) as a, durable.Runtime(second, poll=0.05) as b:
            child = await b.start(waiting, id="p/0")  # worker B holds the child run
            parent = await a.start(parent_of_waiting, id="p")  # A cannot take it: it reads its journal
            await trio.sleep(0.3)
            assert child.status == "running" and parent.status == "running"
            await a.signal("p/0", "go", "from B")  # through the inbox, to the worker that holds it
            with trio.fail_after(60):  # a hang guard, not a timing assertion
                assert await parent.result() == "from B"
        events = await second.read("p") or []
        assert [e.run_id for e in events if isinstance(e, ChildStarted)] == ["p/0"]
    finally:
        await second.aclose()
        await first.aclose()
