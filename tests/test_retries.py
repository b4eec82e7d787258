"""Retries, backoffs and timeouts, all on trio's MockClock (the autojump_clock fixture).

Nothing here sleeps in wall time: every wait is virtual, and the times checked
are ``trio.current_time()`` readings or the times the journal recorded.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import durable
from durable._core import events as ev


class OutOfStock(Exception):
    pass


class Declined(Exception):
    pass


class CardDeclined(Declined):
    pass


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[durable.Store]:
    if request.param == "memory":
        yield durable.MemoryStore()
    else:
        yield durable.FileStore(tmp_path / "store", sync="none")


@pytest.fixture
def memory() -> durable.MemoryStore:
    return durable.MemoryStore()


async def run(store: durable.Store, wf: durable.Workflow[..., Any], *args: Any, id: str = "r") -> Any:
    async with durable.Runtime(store) as rt:
        return await (await rt.start(wf, *args, id=id)).result()


async def journal(store: durable.Store, run_id: str = "r") -> list[Any]:
    events = await store.read(run_id)
    assert events is not None
    return events


def of_type(events: list[Any], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def deltas(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# --- retry until success ---------------------------------------------------------


async def test_a_failing_activity_is_retried_until_it_succeeds(
    store: durable.Store, autojump_clock: trio.testing.MockClock
) -> None:
    attempts: list[int] = []

    @durable.activity(retries=3, initial_backoff="1s")
    async def flaky() -> str:
        attempts.append(durable.activity_info().attempt)
        if len(attempts) < 3:
            raise ConnectionError(f"down ({len(attempts)})")
        return "ok"

    @durable.workflow
    def wf():
        return (yield flaky())

    assert await run(store, wf) == "ok"
    assert attempts == [1, 2, 3]
    events = await journal(store)
    failures = of_type(events, ev.AttemptFailed)
    assert [(f.seq, f.attempt, f.error.type, f.error.message) for f in failures] == [
        (0, 1, "ConnectionError", "down (1)"),
        (0, 2, "ConnectionError", "down (2)"),
    ]
    [done] = of_type(events, ev.ActivityCompleted)
    assert done.attempts == 3


async def test_a_sync_activity_is_retried_too(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    attempts: list[int] = []

    @durable.activity(retries=1, initial_backoff="10ms")
    def flaky() -> int:
        attempts.append(durable.activity_info().attempt)
        if len(attempts) == 1:
            raise OSError("disk busy")
        return 7

    @durable.workflow
    def wf():
        return (yield flaky())

    assert await run(memory, wf) == 7
    assert attempts == [1, 2]


# --- giving up --------------------------------------------------------------------


async def test_exhausted_retries_raise_activity_error_in_the_workflow_which_can_compensate(
    store: durable.Store, autojump_clock: trio.testing.MockClock
) -> None:
    calls: list[str] = []

    @durable.activity
    async def charge(amount: int) -> str:
        calls.append("charge")
        return "pay-1"

    @durable.activity(retries=2, initial_backoff="1s")
    async def reserve(item: str) -> str:
        calls.append("reserve")
        raise OutOfStock(f"no {item} left")

    @durable.activity
    async def refund(payment: str) -> None:
        calls.append(f"refund {payment}")

    @durable.workflow
    def order(item: str):
        payment = yield charge(100)
        try:
            yield reserve(item)
        except durable.ActivityError as exc:
            yield refund(payment)
            return {
                "compensated": True,
                "type": exc.type_name,
                "message": exc.message,
                "attempts": exc.attempts,
            }
        return {"compensated": False}

    result = await run(store, order, "lamp")
    assert result["compensated"] is True
    assert result["type"].endswith("OutOfStock")
    assert (result["message"], result["attempts"]) == ("no lamp left", 3)
    assert calls == ["charge", "reserve", "reserve", "reserve", "refund pay-1"]
    events = await journal(store)
    assert [f.attempt for f in of_type(events, ev.AttemptFailed)] == [1, 2]
    [gave_up] = of_type(events, ev.ActivityFailed)
    assert (gave_up.seq, gave_up.attempts, gave_up.error.message) == (1, 3, "no lamp left")


async def test_an_uncaught_activity_error_fails_the_workflow(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    @durable.activity(retries=1, initial_backoff="1s")
    async def broken() -> None:
        raise OutOfStock("gone")

    @durable.workflow
    def wf():
        yield broken()

    with pytest.raises(durable.WorkflowFailed, match="failed after 2 attempts") as info:
        await run(memory, wf)
    assert info.value.error.type == "durable.ActivityError"


async def test_non_retryable_errors_fail_after_one_attempt(
    store: durable.Store, autojump_clock: trio.testing.MockClock
) -> None:
    attempts: list[int] = []

    @durable.activity(retries=5, non_retryable=(Declined,))
    async def charge() -> None:
        attempts.append(durable.activity_info().attempt)
        raise CardDeclined("insufficient funds")

    @durable.workflow
    def wf():
        try:
            yield charge()
        except durable.ActivityError as exc:
            return [exc.type_name, exc.message, exc.attempts]

    type_name, message, count = await run(store, wf)
    assert type_name.endswith("CardDeclined")
    assert (message, count) == ("insufficient funds", 1)
    assert attempts == [1]
    assert of_type(await journal(store), ev.AttemptFailed) == []


async def test_zero_retries_means_one_attempt(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    attempts: list[int] = []

    @durable.activity(retries=0)
    async def once() -> None:
        attempts.append(durable.activity_info().attempt)
        raise ValueError("no")

    @durable.workflow
    def wf():
        try:
            yield once()
        except durable.ActivityError as exc:
            return exc.attempts

    assert await run(memory, wf) == 1
    assert attempts == [1]


# --- timeouts -----------------------------------------------------------------


async def test_a_sync_attempt_past_its_timeout_is_abandoned_and_counted_as_failed(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    release = threading.Event()

    @durable.activity(timeout="10s", retries=1, initial_backoff="1s")
    def stuck() -> str:
        release.wait()
        return "too late"

    @durable.workflow
    def wf():
        try:
            return (yield stuck())
        except durable.ActivityError as exc:
            return [exc.type_name, exc.message, exc.attempts]

    try:
        type_name, message, count = await run(memory, wf)
    finally:
        release.set()  # let the abandoned worker threads finish
    assert type_name.endswith("AttemptTimeout")
    assert count == 2
    assert message.startswith("attempt 2 of activity '") and "stuck' (run '" in message
    assert message.endswith(", step 0) timed out after 10s")  # names the activity, run and step
    events = await journal(memory)
    [scheduled] = of_type(events, ev.ActivityScheduled)
    [first] = of_type(events, ev.AttemptFailed)
    [gave_up] = of_type(events, ev.ActivityFailed)
    assert first.t - scheduled.t == pytest.approx(10, abs=1e-3)
    assert first.error.message.startswith("attempt 1 of activity")
    assert first.error.message.endswith("timed out after 10s")
    assert gave_up.t - first.t == pytest.approx(1 + 10, abs=1e-3)


async def test_an_async_attempt_past_its_timeout_is_cancelled_and_retried(
    store: durable.Store, autojump_clock: trio.testing.MockClock
) -> None:
    cancelled: list[int] = []
    starts: list[float] = []

    @durable.activity(timeout="5s", retries=2, initial_backoff="2s")
    async def slow_once() -> str:
        attempt = durable.activity_info().attempt
        starts.append(trio.current_time())
        if attempt == 1:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                cancelled.append(attempt)
                raise
        return f"attempt {attempt}"

    @durable.workflow
    def wf():
        return (yield slow_once())

    assert await run(store, wf) == "attempt 2"
    assert cancelled == [1]
    assert deltas(starts) == [pytest.approx(5 + 2)]
    [timed_out] = of_type(await journal(store), ev.AttemptFailed)
    assert timed_out.error.type.endswith("AttemptTimeout")


# --- backoff ---------------------------------------------------------------------


async def test_waits_between_attempts_follow_the_backoff_policy(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    starts: list[float] = []

    @durable.activity(retries=4, initial_backoff="1s", backoff=3, max_backoff="5s")
    async def failing() -> None:
        starts.append(trio.current_time())
        raise ConnectionError("down")

    @durable.workflow
    def wf():
        try:
            yield failing()
        except durable.ActivityError as exc:
            return exc.attempts

    assert await run(memory, wf) == 5
    assert deltas(starts) == pytest.approx([1, 3, 5, 5], abs=1e-3)
    failures = of_type(await journal(memory), ev.AttemptFailed)
    assert [f.retry_at - f.t for f in failures] == pytest.approx([1, 3, 5, 5], abs=1e-3)


async def test_the_default_policy_waits_one_two_four_seconds(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    starts: list[float] = []

    @durable.activity
    async def failing() -> None:
        starts.append(trio.current_time())
        raise ConnectionError("down")

    @durable.workflow
    def wf():
        try:
            yield failing()
        except durable.ActivityError as exc:
            return exc.attempts

    assert await run(memory, wf) == 4
    assert deltas(starts) == pytest.approx([1, 2, 4], abs=1e-3)


async def test_total_timeout_stops_retrying_when_the_budget_is_spent(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    starts: list[float] = []

    @durable.activity(retries=10, initial_backoff="10s", backoff=1, total_timeout="25s")
    async def failing() -> None:
        starts.append(trio.current_time())
        raise ConnectionError("down")

    @durable.workflow
    def wf():
        try:
            yield failing()
        except durable.ActivityError as exc:
            return exc.attempts

    begin = trio.current_time()
    assert await run(memory, wf) == 3  # at 0s, 10s, 20s; a retry at 30s would be past the budget
    assert [t - begin for t in starts] == pytest.approx([0, 10, 20], abs=1e-3)
    assert trio.current_time() - begin == pytest.approx(20, abs=1e-3)


async def test_total_timeout_also_cuts_a_hanging_attempt(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    @durable.activity(retries=5, total_timeout="1m")
    async def hangs() -> None:
        await trio.sleep_forever()

    @durable.workflow
    def wf():
        try:
            yield hangs()
        except durable.ActivityError as exc:
            return [exc.type_name, exc.attempts]

    begin = trio.current_time()
    type_name, attempts = await run(memory, wf)
    assert type_name.endswith("AttemptTimeout")
    assert attempts == 1
    assert trio.current_time() - begin == pytest.approx(60, abs=1e-3)


# --- per-call options ---------------------------------------------------------------


async def test_with_options_overrides_the_policy_for_one_call(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    attempts: dict[int, list[int]] = {}

    @durable.activity(retries=0)
    async def flaky(label: str) -> str:
        info = durable.activity_info()
        attempts.setdefault(info.seq, []).append(info.attempt)
        if info.attempt < 3:
            raise ConnectionError(label)
        return label

    @durable.workflow
    def wf():
        patient = yield flaky("patient").with_options(retries=2, initial_backoff="1s")
        try:
            yield flaky("impatient")
        except durable.ActivityError as exc:
            return [patient, exc.attempts]

    assert await run(memory, wf) == ["patient", 1]
    assert attempts == {0: [1, 2, 3], 1: [1]}


# --- a crash during a backoff ----------------------------------------------------------


async def test_a_crash_during_a_backoff_resumes_the_wait_where_it_was(
    store: durable.Store, autojump_clock: trio.testing.MockClock
) -> None:
    starts: list[tuple[int, float]] = []

    @durable.activity(retries=3, initial_backoff="1h", max_backoff=None)
    async def flaky() -> str:
        attempt = durable.activity_info().attempt
        starts.append((attempt, trio.current_time()))
        if attempt == 1:
            raise ConnectionError("down")
        return f"ok on attempt {attempt}"

    @durable.workflow(name="test_retries.crash_in_backoff")
    def wf():
        return (yield flaky())

    async with durable.Runtime(store) as rt:
        await rt.start(wf, id="r")
        await trio.sleep(30 * 60)  # half-way through the backoff, then stop
    events = await journal(store)
    assert [type(e) for e in events] == [ev.RunStarted, ev.ActivityScheduled, ev.AttemptFailed]
    assert events[-1].retry_at - events[-1].t == pytest.approx(3600, abs=1e-3)
    failed_at = starts[0][1]

    async with durable.Runtime(store) as rt:
        [handle] = await rt.recover()
        assert await handle.result() == "ok on attempt 2"
    assert [attempt for attempt, _ in starts] == [1, 2]
    # The journaled retry time holds, not a fresh hour from the recovery.
    assert starts[1][1] == pytest.approx(failed_at + 3600, abs=60)


async def test_the_attempt_count_survives_a_crash_so_no_retries_are_added(
    store: durable.Store, autojump_clock: trio.testing.MockClock
) -> None:
    attempts: list[int] = []

    @durable.activity(retries=1, initial_backoff="1h", max_backoff=None)
    async def failing() -> None:
        attempts.append(durable.activity_info().attempt)
        raise ConnectionError("down")

    @durable.workflow(name="test_retries.attempts_kept")
    def wf():
        try:
            yield failing()
        except durable.ActivityError as exc:
            return exc.attempts

    async with durable.Runtime(store) as rt:
        await rt.start(wf, id="r")
        await trio.sleep(60)
    async with durable.Runtime(store) as rt:
        [handle] = await rt.recover()
        assert await handle.result() == 2
    assert attempts == [1, 2]


async def test_a_restarted_process_whose_wall_clock_moved_on_waits_only_the_rest_of_the_backoff(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    # What a real restart looks like: the second process's wall clock reads the
    # time that passed meanwhile (here, both clocks are pinned to virtual time).
    wall_at_start = 1_700_000_000.0
    starts: list[tuple[int, float]] = []

    @durable.activity(retries=1, initial_backoff="1h", max_backoff=None)
    async def flaky() -> str:
        attempt = durable.activity_info().attempt
        starts.append((attempt, trio.current_time()))
        if attempt == 1:
            raise ConnectionError("down")
        return "ok"

    @durable.workflow(name="test_retries.restart_in_backoff")
    def wf():
        return (yield flaky())

    begin = trio.current_time()
    async with durable.Runtime(memory, clock_anchor=wall_at_start) as rt:
        await rt.start(wf, id="r")
        await trio.sleep(20 * 60)
    async with durable.Runtime(memory, clock_anchor=wall_at_start + trio.current_time() - begin) as rt:
        [handle] = await rt.recover()
        assert await handle.result() == "ok"
    assert [attempt for attempt, _ in starts] == [1, 2]
    assert starts[1][1] - starts[0][1] == pytest.approx(3600, abs=1e-3)


async def test_a_long_retry_series_at_max_backoff_keeps_going(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    # "Retry for a long time, once a second": the exponential wait must stay
    # capped at max_backoff however many attempts failed.
    @durable.activity(retries=1100, initial_backoff="1s", max_backoff="1s")
    async def eventually() -> int:
        attempt = durable.activity_info().attempt
        if attempt < 1100:
            raise ConnectionError("not yet")
        return attempt

    @durable.workflow
    def wf():
        return (yield eventually())

    begin = trio.current_time()
    assert await run(memory, wf) == 1100
    assert trio.current_time() - begin == pytest.approx(1099, abs=1e-3)


async def test_sys_exit_inside_an_activity_fails_the_attempt_not_the_process(
    memory: durable.MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    import sys  # noqa: PLC0415

    @durable.activity(retries=1, initial_backoff="1s")
    def exits() -> None:
        sys.exit(3)

    @durable.activity
    async def fine() -> str:
        return "fine"

    @durable.workflow
    def quits():  # type: ignore[no-untyped-def]
        try:
            yield exits()
        except durable.ActivityError as exc:
            return [exc.type_name, exc.message, exc.attempts]
        return "unreachable"

    @durable.workflow
    def other():  # type: ignore[no-untyped-def]
        return (yield fine())

    async with durable.Runtime(memory) as runtime:
        quitting = await runtime.start(quits, id="quits")
        beside = await runtime.start(other, id="other")
        assert await quitting.result() == ["SystemExit", "3", 2]  # retried per its policy, then failed
        assert await beside.result() == "fine"  # the runtime and its other runs go on


async def test_sys_exit_in_workflow_code_or_a_side_effect_fails_that_run_not_the_process(
    loop: str,
    memory: durable.MemoryStore,
) -> None:
    import sys  # noqa: PLC0415

    @durable.workflow
    def exits_in_code():  # type: ignore[no-untyped-def]
        yield durable.sleep(0)
        sys.exit(4)

    @durable.workflow
    def exits_in_side_effect():  # type: ignore[no-untyped-def]
        try:
            yield durable.side_effect(lambda: sys.exit(5))
        except durable.ActivityError as exc:  # the recorded failure is raised into the workflow
            return f"caught {exc.type_name} {exc.message}"
        return "unreachable"

    @durable.workflow
    def fine():  # type: ignore[no-untyped-def]
        yield durable.sleep(0)
        return "fine"

    async with durable.Runtime(memory) as runtime:
        in_code = await runtime.start(exits_in_code, id="in-code")
        in_side_effect = await runtime.start(exits_in_side_effect, id="in-side-effect")
        beside = await runtime.start(fine, id="fine")
        with pytest.raises(durable.WorkflowFailed) as failed:
            await in_code.result()
        assert failed.value.error.type == "SystemExit"
        assert await in_side_effect.result() == "caught SystemExit 5"
        assert await beside.result() == "fine"  # the runtime and its other runs go on
