"""``sim.run_stubbed``: a workflow's logic in virtual time, without a runtime: activities by
stubs, ``durable.now``, ``sleep``, ``random``, ``uuid4``, signals and their timeouts,
children and cancel requests."""

from __future__ import annotations

import datetime
import time
import uuid

import pytest

import durable
import sim
from durable.lowlevel import SignalReceived, TimerFired, TimerStarted


@durable.activity(name="tests.stubbed.notify")
def notify(user: str, text: str) -> None:
    raise AssertionError("stubbed: never runs")


@durable.activity(name="tests.stubbed.delete_user")
def delete_user(user: str) -> str:
    raise AssertionError("stubbed: never runs")


@durable.workflow(name="tests.stubbed.offboard")
def offboard(user: str):  # type: ignore[no-untyped-def]
    asked = yield durable.now()
    yield notify(user, "your account closes in an hour unless you object")
    yield durable.sleep("1h")
    try:
        reason = yield durable.wait_signal("objection", timeout="24h")
    except durable.SignalTimeout:
        deleted = yield delete_user(user)
        ended = yield durable.now()
        return {"deleted": deleted, "after": (ended - asked).total_seconds()}
    return {"kept": reason}


STUBS = {"tests.stubbed.notify": None, "tests.stubbed.delete_user": "gone"}


def test_now_sleep_and_a_signal_timeout_run_in_virtual_time() -> None:
    started = time.perf_counter()
    run = sim.run_stubbed(offboard, "ann", stubs=STUBS)
    assert time.perf_counter() - started < 1.0  # a day and an hour, in no real time
    assert run.result == {"deleted": "gone", "after": 3600.0 + 86400.0}
    assert run.elapsed == 3600.0 + 86400.0
    assert run.activities == ["tests.stubbed.notify", "tests.stubbed.delete_user"]
    fired = [e for e in run.journal if isinstance(e, TimerFired)]
    assert len(fired) == 2  # the sleep, then the signal's timeout


def test_a_signal_arriving_in_time_is_delivered_at_its_virtual_time() -> None:
    run = sim.run_stubbed(offboard, "ann", stubs=STUBS, signals=[("objection", "still using it", "2h")])
    assert run.result == {"kept": "still using it"}
    assert run.elapsed == 7200.0
    assert [e.t - run.journal[0].t for e in run.journal if isinstance(e, SignalReceived)] == [7200.0]


def test_a_signal_sent_before_the_wait_is_kept_for_it() -> None:
    run = sim.run_stubbed(offboard, "ann", stubs=STUBS, signals=[("objection", "early")])
    assert run.result == {"kept": "early"}
    assert run.elapsed == 3600.0  # the sleep still ran; the wait took the kept signal at once


def test_a_signal_too_late_for_the_timeout_is_not_delivered() -> None:
    with pytest.warns(sim.UnusedSignalWarning, match="'objection' was never taken: it came after"):
        run = sim.run_stubbed(offboard, "ann", stubs=STUBS, signals=[("objection", "late", "30h")])
    assert run.result["deleted"] == "gone"


def test_a_wait_without_timeout_and_no_signal_says_so() -> None:
    @durable.workflow(name="tests.stubbed.forever")
    def forever():  # type: ignore[no-untyped-def]
        return (yield durable.wait_signal("go"))

    with pytest.raises(RuntimeError, match=r"waits at step 0 for signal 'go' forever.*signals="):
        sim.run_stubbed(forever, stubs={})
    assert sim.run_stubbed(forever, stubs={}, signals=[("go", [1, 2])]).result == [1, 2]


@durable.workflow(name="tests.stubbed.draws")
def draws():  # type: ignore[no-untyped-def]
    when = yield durable.now()
    x = yield durable.random()
    u = yield durable.uuid4()
    return [when, x, u]


def test_now_random_and_uuid4_follow_the_start_and_the_seed() -> None:
    start = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    when, x, u = sim.run_stubbed(draws, stubs={}, start=start).result
    assert when == start
    assert 0.0 <= x < 1.0 and isinstance(u, uuid.UUID) and u.version == 4
    assert sim.run_stubbed(draws, stubs={}, start=start).result == [when, x, u]  # deterministic
    other = sim.run_stubbed(draws, stubs={}, start=start, seed=1).result
    assert other[1] != x and other[2] != u


def test_a_gather_of_timers_ends_with_the_longest_and_a_race_with_the_first() -> None:
    @durable.workflow(name="tests.stubbed.timers")
    def timers():  # type: ignore[no-untyped-def]
        yield durable.gather(durable.sleep("2h"), durable.sleep("1h"))
        index, _ = yield durable.race(durable.sleep("3h"), durable.sleep("30m"))
        return index

    run = sim.run_stubbed(timers, stubs={})
    assert run.result == 1
    assert run.elapsed == 7200.0 + 1800.0
    assert sorted(e.seconds for e in run.journal if isinstance(e, TimerStarted)) == [1800, 3600, 7200, 10800]


def test_a_child_workflow_runs_with_the_same_stubs_and_clock() -> None:
    @durable.workflow(name="tests.stubbed.parent")
    def parent(user: str):  # type: ignore[no-untyped-def]
        result = yield offboard(user)
        return result

    run = sim.run_stubbed(parent, "bo", stubs=STUBS)
    assert run.result["deleted"] == "gone"
    assert run.elapsed == 3600.0 + 86400.0
    assert run.activities == ["tests.stubbed.notify", "tests.stubbed.delete_user"]


def test_a_cancel_request_raises_cancelled_at_the_yield() -> None:
    run = sim.run_stubbed(offboard, "ann", stubs=STUBS, cancel_at="30m")
    assert run.cancelled == "cancel_at"
    assert run.elapsed == 1800.0
    with pytest.raises(durable.Cancelled):
        _ = run.result


def test_a_malformed_signal_is_refused() -> None:
    with pytest.raises(TypeError, match=r"\(name, payload\)"):
        sim.run_stubbed(offboard, "ann", stubs=STUBS, signals=["objection"])  # type: ignore[list-item]


@durable.workflow(name="tests.stubbed.confirm")
def _confirm():  # type: ignore[no-untyped-def]
    try:
        return (yield durable.wait_signal("email-confirmed", timeout="1h"))
    except durable.SignalTimeout:
        raise ValueError("never confirmed") from None


def test_a_signal_the_workflow_never_takes_is_named_in_a_warning() -> None:
    # A misspelt name: the test would check the timeout branch, not the one it meant.
    misspelt = r"'email-confirm' was never taken: the workflow waited for 'email-confirmed' only"
    with pytest.warns(sim.UnusedSignalWarning, match=misspelt):
        run = sim.run_stubbed(_confirm, stubs={}, signals=[("email-confirm", True)])
    assert run.unused_signals == ("email-confirm",)
    with pytest.raises(durable.WorkflowFailed, match=r"tests\.stubbed\.confirm"):
        run.result  # noqa: B018 - the property raises


def test_a_signal_sent_after_the_run_ended_is_unused_too() -> None:
    with pytest.warns(sim.UnusedSignalWarning, match="'email-confirmed' was never taken: it came after"):
        run = sim.run_stubbed(_confirm, stubs={}, signals=[("email-confirmed", 1, "2h")])
    assert run.unused_signals == ("email-confirmed",)


def test_a_signal_taken_is_not_reported() -> None:
    run = sim.run_stubbed(_confirm, stubs={}, signals=[("email-confirmed", "yes", "10m")])
    assert run.result == "yes" and run.unused_signals == ()
