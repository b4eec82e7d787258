"""The simulator's opt-in fault classes (fsync errors, bit rot), run_stubbed, and schedules
played in forked workers."""

from __future__ import annotations

import os

import attrs
import pytest
from simflows import bad

import durable
import sim


@durable.activity
def charge(amount: int) -> str:
    return f"paid {amount}"


@durable.activity
def refund(payment: str) -> str:
    return f"refunded {payment}"


@durable.activity
async def email(user: str, text: str) -> None:
    pass


@durable.workflow(name="tests.extras.order")
def order(user: str, amount: int):  # type: ignore[no-untyped-def]
    payment = yield charge(amount)
    try:
        yield email(user, f"receipt: {payment}")
    except durable.ActivityError as error:
        yield refund(payment)
        return {"status": "refunded", "because": error.type_name}
    return {"status": "paid", "payment": payment}


# --- opt-in fault classes ------------------------------------------------------------------


def test_fsync_errors_are_explored_when_asked_and_durable_treats_them_as_fatal() -> None:
    simulator = sim.Simulator(hash_seeds=(), disk_faults=sim.DISK_FAULTS + sim.OPT_IN_FAULTS)
    report = simulator.explore(order, "ann", 5, max_crashes=1)
    assert report.ok, report.failure_text()
    eio = [r for r in report.explorer.schedules(1) if r.crashes[0].disk == "eio"]
    fsyncs = [p for p in report.reference.lifetimes[0].points if p.kind == "before fsync"]
    assert len(eio) == len(fsyncs)  # every fsync fails once, in a schedule of its own
    world = report.explorer.play(eio[-1])
    assert world.lifetimes[0].failed_fsync is not None
    assert isinstance(world.lifetimes[0].ending.error, durable.StoreError)


def test_fsync_errors_are_not_drawn_unless_asked() -> None:
    report = sim.Simulator(hash_seeds=()).explore(order, "ann", 5, max_crashes=1)
    assert all(r.crashes[0].disk != "eio" for r in report.explorer.schedules(1))


def test_unknown_disk_faults_are_refused() -> None:
    with pytest.raises(ValueError, match="disk_faults"):
        sim.Simulator(disk_faults=("meteor",))


def test_bit_rot_in_any_durable_record_is_refused_never_misread() -> None:
    report = sim.Simulator(hash_seeds=(), bit_rot=True).explore(order, "ann", 5, max_crashes=1)
    assert report.ok, report.failure_text()
    rotten = report.explorer.bit_rot_recipes()
    assert len(rotten) == len(report.reference.final_events)
    endings = [report.explorer.play(recipe).ending for recipe in rotten]
    corrupt = [e for e in endings if isinstance(e.error, durable.JournalCorruptError)]
    # Every record but the last is proven durable by a later one: damage there is refused.
    assert len(corrupt) == len(rotten) - 1
    assert endings[-1].kind == "returned"  # the last record reads as a torn tail


def test_a_rot_recipe_prints_and_replays() -> None:
    report = sim.Simulator(hash_seeds=(), bit_rot=True).explore(order, "ann", 5, max_crashes=1)
    recipe = report.explorer.bit_rot_recipes()[1]
    assert "rot_at=" in repr(recipe)
    again = sim.replay_recipe(order, "ann", 5, recipe=recipe)
    assert again.ok


# --- run_stubbed ---------------------------------------------------------------------------


def test_run_stubbed_answers_activities_by_name_and_lists_the_calls() -> None:
    run = sim.run_stubbed(order, "ann", 5, stubs={"charge": "pay-1", "email": None})
    assert run.result == {"status": "paid", "payment": "pay-1"}
    assert run.activities == ["charge", "email"]
    assert repr(run.calls[1]) == "email('ann', 'receipt: pay-1')"


def test_an_exception_stub_fails_the_step_as_if_retries_were_exhausted() -> None:
    run = sim.run_stubbed(
        order, "ann", 5, stubs={"charge": "pay-2", "email": ConnectionError("smtp down"), "refund": "ok"}
    )
    assert run.result == {"status": "refunded", "because": "ConnectionError"}
    assert run.activities == ["charge", "email", "refund"]


def test_a_function_stub_gets_the_call_arguments() -> None:
    seen: list[tuple[object, ...]] = []

    def fake_charge(amount: int) -> str:
        seen.append((amount,))
        return f"fake-{amount}"

    run = sim.run_stubbed(order, "ann", 7, stubs={"charge": fake_charge, "email": None})
    assert seen == [(7,)]
    assert run.result["payment"] == "fake-7"


def test_a_workflow_that_raises_gives_its_error_and_result_raises_workflow_failed() -> None:
    @durable.workflow(name="tests.extras.broken")
    def broken():  # type: ignore[no-untyped-def]
        yield charge(1)
        raise RuntimeError("boom")

    run = sim.run_stubbed(broken, stubs={"charge": "x"})
    assert run.error is not None and run.error.type == "RuntimeError"
    with pytest.raises(durable.WorkflowFailed, match="boom"):
        _ = run.result


def test_a_missing_stub_names_the_activity_and_the_stubs_given() -> None:
    with pytest.raises(KeyError, match=r"no stub for activity 'email' \(stubs given: charge\)"):
        sim.run_stubbed(order, "ann", 5, stubs={"charge": "pay"})


def test_run_stubbed_needs_a_workflow() -> None:
    with pytest.raises(TypeError, match=r"durable\.workflow"):
        sim.run_stubbed(charge, stubs={})  # type: ignore[arg-type]


@durable.workflow(name="tests.sim_extras.napper")
def napper():  # type: ignore[no-untyped-def]
    yield durable.sleep("1h")


def test_run_stubbed_sleeps_in_virtual_time() -> None:
    run = sim.run_stubbed(napper, stubs={})  # more in test_sim_stubbed.py
    assert run.elapsed == 3600.0


@durable.activity(name="tests.sim_extras.tagged")
def tagged(label: str) -> str:
    info = durable.activity_info()
    return f"{label} {info.idempotency_key} {info.attempt}"


def test_in_activity_lets_an_activity_s_own_code_read_activity_info() -> None:
    with sim.in_activity(run_id="order-1", seq=2, attempt=3) as info:
        assert tagged.fn("charge") == "charge order-1/2 3"
        assert info.idempotency_key == "order-1/2"
    with pytest.raises(RuntimeError, match="outside an activity"):
        tagged.fn("charge")


def test_run_stubbed_answers_a_patch_and_a_race_as_the_executor_would() -> None:
    @durable.activity(name="tests.sim_extras.fast")
    def fast() -> str:
        return "fast"

    @durable.activity(name="tests.sim_extras.slow")
    def slow() -> str:
        return "slow"

    @durable.workflow(name="tests.sim_extras.patched_race")
    def patched_race():  # type: ignore[no-untyped-def]
        new = yield durable.patched("v2")
        index, value = yield durable.race(fast(), slow())
        return [new, index, value]

    run = sim.run_stubbed(patched_race, stubs={"tests.sim_extras.fast": "F", "tests.sim_extras.slow": "S"})
    assert run.result == [True, 0, "F"]  # live: the new path; the first answered wins the race
    assert [call.activity for call in run.calls] == ["tests.sim_extras.fast"]


# --- schedules played in forked workers ------------------------------------------------------


def _explored(simulator: sim.Simulator, workers: int) -> tuple[sim.Report, list[tuple[int, str, bool]]]:
    """An exploration of the non-idempotent payment in ``workers`` processes, and what
    ``on_schedule`` saw (in order)."""
    seen: list[tuple[int, str, bool]] = []
    simulator = attrs.evolve(
        simulator,
        workers=workers,
        before_each=bad.LEDGER.reset,
        after_each=bad.LEDGER.problem,
        on_schedule=lambda n, recipe, failure: seen.append((n, repr(recipe), failure is None)),
    )
    # One run id for both explorations (each has its own otherwise), so their reports compare.
    return simulator.explore(bad.pay_without_key, 42, max_crashes=2, run_id="workers"), seen


def test_workers_find_the_same_failures_in_the_same_order_as_one_process() -> None:
    """Forked workers play the schedules (each with its own copy of the fake service, reset
    by before_each and checked by after_each): the report is the one a single process gives."""
    simulator = sim.Simulator(hash_seeds=())
    alone, seen_alone = _explored(simulator, workers=1)
    forked, seen_forked = _explored(simulator, workers=2)
    assert not alone.ok
    assert forked.schedules == alone.schedules
    assert forked.failures == alone.failures
    assert seen_forked == seen_alone


def test_a_schedule_a_worker_cannot_play_is_played_in_this_process() -> None:
    """A worker that fails (here: before_each raises in workers only) leaves the rest of the
    schedules to this process, which reports as a single process does."""
    parent = os.getpid()

    def reset_here_only() -> None:
        if os.getpid() != parent:
            raise RuntimeError("not in a worker")
        bad.LEDGER.reset()

    simulator = sim.Simulator(hash_seeds=())
    alone, _ = _explored(simulator, workers=1)
    forked, _ = _explored(attrs.evolve(simulator, before_each=reset_here_only), workers=2)
    assert forked.failures == alone.failures
