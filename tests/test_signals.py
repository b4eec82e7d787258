"""Signals: durable.wait_signal and Runtime.signal, buffered, timed out, across restarts."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import durable
import sim
from durable.lowlevel import SignalReceived

DONE: list[str] = []


@durable.activity
async def record(label: str) -> str:
    DONE.append(label)
    return label


@durable.workflow(name="tests.signals.approval")
def approval(order: str):  # type: ignore[no-untyped-def]
    yield record(f"asked about {order}")
    try:
        decision = yield durable.wait_signal("decision", timeout="24h")
    except durable.SignalTimeout as timeout:
        decision = f"no answer ({timeout.name})"
    yield record(decision)
    return decision


@durable.workflow(name="tests.signals.two")
def two_votes():  # type: ignore[no-untyped-def]
    first = yield durable.wait_signal("vote")
    second = yield durable.wait_signal("vote")
    return [first, second]


@pytest.fixture(autouse=True)
def _clear() -> None:
    DONE.clear()


async def test_a_signal_sent_during_the_wait_resumes_the_workflow_with_its_payload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        handle = await runtime.start(approval, "o-1", id="a")
        await trio.sleep(3600)
        await runtime.signal("a", "decision", "approved")
        assert await handle.result() == "approved"
    assert trio.current_time() == pytest.approx(3600)


async def test_a_signal_sent_before_the_wait_is_kept_and_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(approval, "o-2", id="a")
        await runtime.signal("a", "decision", {"by": "carol"})
        assert await handle.result() == {"by": "carol"}
    events = await store.read("a")
    assert events is not None
    assert [e.name for e in events if isinstance(e, SignalReceived)] == ["decision"]


async def test_the_timeout_raises_signal_timeout_at_the_yield(autojump_clock: trio.testing.MockClock) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        handle = await runtime.start(approval, "o-3", id="a")
        assert await handle.result() == "no answer (decision)"
    assert trio.current_time() == pytest.approx(24 * 3600)


async def test_signals_of_one_name_go_one_per_wait_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        handle = await runtime.start(two_votes, id="v")
        await runtime.signal("v", "vote", "yes")
        await runtime.signal("v", "vote", "no")
        assert await handle.result() == ["yes", "no"]


async def test_a_run_loaded_nowhere_gets_the_signal_in_its_journal_and_on_recovery(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.start(approval, "o-4", id="a")
        await trio.sleep(60)  # the process stops while the run waits
    async with durable.Runtime(durable.FileStore(tmp_path)) as sender:
        await sender.signal("a", "decision", "approved later")
    DONE.clear()
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        [handle] = await runtime.recover()
        assert await handle.result() == "approved later"
    assert DONE == ["approved later"]


async def test_a_runtime_takes_the_messages_another_runtime_leaves_for_a_run_it_holds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two runtimes on one store stand for two processes: the sender cannot take
    # the run, so its signal and cancel request wait in the store's inbox.
    store = durable.MemoryStore()
    async with durable.Runtime(store) as holder, durable.Runtime(store) as sender:
        approved = await holder.start(approval, "o-7", id="a")
        other = await holder.start(two_votes, id="v")
        await trio.sleep(60)
        await sender.signal("a", "decision", "approved elsewhere")
        await sender.cancel("v", "from elsewhere")
        assert await approved.result() == "approved elsewhere"
        with pytest.raises(durable.Cancelled, match="from elsewhere"):
            await other.result()
    assert store.inboxes == {}


async def test_a_message_journaled_before_a_crash_removed_it_is_not_journaled_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.start(two_votes, id="v")
        await trio.sleep(60)
    store = durable.FileStore(tmp_path)
    message = SignalReceived("vote", durable.lowlevel.dumps_value("yes"), 1.0, "m-1")
    await store.post("v", message)
    await store.post("v", message)  # posting the same message again is a no-op
    assert [m.message_id for m in await store.messages("v")] == ["m-1"]
    opened = await store.open("v")
    assert opened is not None
    opened.writer.append(message)  # the holder journaled it, then crashed before removing it
    await opened.writer.sync()
    opened.writer.close()
    assert await store.runs_with_messages() == {"v"}
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        handle = await runtime.start(two_votes, id="v")
        await runtime.signal("v", "vote", "no")
        assert await handle.result() == ["yes", "no"]
    events = await store.read("v") or []
    assert [e.message_id for e in events if isinstance(e, SignalReceived)] == ["m-1", ""]
    assert await store.runs_with_messages() == set()


async def test_a_restart_during_a_timed_wait_waits_only_what_is_left(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        await runtime.start(approval, "o-5", id="a")
        await trio.sleep(20 * 3600)
    restarted = trio.current_time()
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        handle = await runtime.start(approval, "o-5", id="a")
        assert await handle.result() == "no answer (decision)"
    assert trio.current_time() - restarted == pytest.approx(4 * 3600)


async def test_bad_signals_are_clear_errors(autojump_clock: trio.testing.MockClock) -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        handle = await runtime.start(approval, "o-6", id="a")
        with pytest.raises(TypeError, match="signal name"):
            await runtime.signal("a", 42, "x")  # type: ignore[arg-type]
        with pytest.raises(durable.SerializationError, match="payload of signal 'decision'"):
            await runtime.signal("a", "decision", object())
        with pytest.raises(durable.UnknownRunError, match="no run 'nope'"):
            await runtime.signal("nope", "decision", "x")
        await runtime.signal("a", "decision", "ok")
        await handle.result()
        with pytest.raises(durable.RunConflictError, match="has finished"):
            await runtime.signal("a", "decision", "too late")


def test_wait_signal_refuses_bad_names_and_timeouts_and_cannot_run_in_a_gather() -> None:
    with pytest.raises(TypeError, match="signal name"):
        durable.wait_signal("")
    with pytest.raises(ValueError, match="signal timeout"):
        durable.wait_signal("x", timeout="3 parsecs")
    with pytest.raises(TypeError, match="cannot run in a gather"):
        durable.gather(durable.wait_signal("a"), durable.wait_signal("a"))


def test_a_timed_wait_survives_every_crash() -> None:
    report = sim.Simulator(hash_seeds=()).explore(approval, "o-7")
    assert report.ok, report.failure_text()
    assert report.result == "no answer (decision)"
