"""``explain()`` and failure reports: every step kind narrated, values shown readably, counts
that add up, and a non-determinism failure blamed on the input that caused it, never another.

Each planted bug reads one input directly in workflow code; the simulator must isolate
that input (by replaying with one input changed at a time) and name no other.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from simflows import bad

import durable
import sim
from sim._report import _Story

# --- planted non-determinism: one input each ---------------------------------------------


@durable.activity(name="tests.explain.stamp")
def stamp(text: str) -> str:
    return f"stamped {text}"


@durable.workflow(name="tests.explain.stamp_with_datetime_now")
def stamp_with_datetime_now(item: str):  # type: ignore[no-untyped-def]
    yield bad.check_stock(item)
    stamped = yield stamp(f"{item} at {datetime.now().isoformat()}")  # BUG: the wall clock
    return stamped


_CALLS = [0]


@durable.workflow(name="tests.explain.stamp_with_a_counter")
def stamp_with_a_counter(item: str):  # type: ignore[no-untyped-def]
    yield bad.check_stock(item)
    _CALLS[0] += 1  # BUG: a module-level counter, bumped again by every replay
    stamped = yield stamp(f"{item} #{_CALLS[0]}")
    return stamped


CAUSES = ("wall clock", "random", "uuid", "hash seed", "module state")

PLANTED = [
    pytest.param(stamp_with_datetime_now, ("parcel",), "wall clock", id="datetime.now"),
    pytest.param(bad.ship_by_clock, ("parcel",), "wall clock", id="time.time"),
    pytest.param(bad.sample_randomly, ("survey",), "random", id="random.random"),
    pytest.param(bad.order_with_uuid4, ("book",), "uuid", id="uuid.uuid4"),
    pytest.param(bad.notify_in_set_order, (bad.USERS,), "hash seed", id="set-of-strings"),
    pytest.param(stamp_with_a_counter, ("parcel",), "module state", id="module-counter"),
    pytest.param(bad.convert_with_global, (100, "EUR"), "module state", id="global-an-activity-wrote"),
]


@pytest.mark.parametrize(("workflow", "args", "cause"), PLANTED)
def test_a_planted_bug_is_blamed_on_its_input_and_no_other(
    workflow: durable.Workflow[..., object], args: tuple[object, ...], cause: str
) -> None:
    report = sim.Simulator(hash_seeds=(1,)).explore(workflow, *args, max_crashes=1, budget=8)
    assert not report.ok
    assert not report.notes, report.notes
    for failure in report.failures:
        assert failure.kind == f"non-deterministic workflow code: the {cause}", failure.divergence
        for other in CAUSES:
            if other != cause:
                assert f"Likely cause (isolated): the {other}." not in failure.divergence
        assert "PYTHONHASHSEED" not in failure.divergence or cause == "hash seed"
    if cause == "hash seed":  # only another interpreter shows it: no crash schedule fails
        assert report.failures == report.hash_seed_failures
    else:  # the replay in other interpreters holds the clock, random and uuid still: no blame
        assert not report.hash_seed_failures
    # One bug, one kind of failure, and never more failing schedules than played.
    assert len(report.kinds()) == 1
    assert len(report.failing_schedules) <= report.schedules
    assert "1 kind of failure" in str(report)


def test_the_cause_says_what_to_do() -> None:
    report = sim.Simulator(hash_seeds=()).explore(stamp_with_datetime_now, "parcel", max_crashes=1, budget=2)
    text = report.failures[0].divergence
    assert "Replayed with only the wall clock moved 17 days ahead" in text
    assert "durable.now()" in text
    assert "durable.patched" not in text.split("Likely cause")[1]  # no versioning advice for a bug


def test_module_state_names_the_global_that_changed() -> None:
    report = sim.Simulator(hash_seeds=()).explore(stamp_with_a_counter, "parcel", max_crashes=1, budget=2)
    text = report.failures[0].divergence
    assert "it still diverged at step 1" in text
    assert re.search(r"Meanwhile, in the workflow's module, _CALLS went from \[\d+\] to \[\d+\]", text)


def test_a_deterministic_workflow_gets_no_cause() -> None:
    report = sim.Simulator(hash_seeds=(1,)).explore(bad.pay_without_key, 42, max_crashes=1, budget=3)
    assert report.ok, report.failure_text()


def test_counts_of_a_report_add_up() -> None:
    report = sim.Simulator(hash_seeds=(1, 2)).explore(
        bad.notify_in_set_order, bad.USERS, max_crashes=1, budget=4
    )
    assert len(report.hash_seed_failures) == 2 and not report.failing_schedules
    assert len(report.kinds()) == 1
    assert re.search(
        r"0 failing schedules of \d+ played, and the replay under 2 other hash seeds failed; 1 kind",
        str(report),
    )


# --- the narration ----------------------------------------------------------------------


@durable.activity(name="tests.explain.notify")
def notify(user: str, text: str) -> None:
    return None


@durable.activity(name="tests.explain.audit")
def audit(text: str) -> str:
    return f"audited {text}"


@durable.activity(name="tests.explain.delete_user")
def delete_user(user: str) -> str:
    return f"deleted {user}"


@durable.workflow(name="tests.explain.archive")
def archive(user: str):  # type: ignore[no-untyped-def]
    return (yield audit(user))


@durable.workflow(name="tests.explain.offboard")
def offboard(user: str):  # type: ignore[no-untyped-def]
    asked = yield durable.now()
    token = yield durable.uuid4()
    yield notify(user, "closing in an hour")
    yield durable.sleep("1h")
    try:
        objection = yield durable.wait_signal("objection", timeout="24h")
    except durable.SignalTimeout:
        objection = None
    archived = yield archive(user)
    won, _ = yield durable.race(durable.sleep("1m"), durable.sleep("2h"))
    deleted = yield delete_user(user)
    return [str(asked), str(token), objection, archived, won, deleted]


def _crash_before_the_last_step(report: sim.Report) -> sim.Recipe:
    points = report.reference.lifetimes[0].points
    last = [p for p in points if p.kind == "activity-returned"][-1]
    return sim.Recipe(
        seed=0,
        crashes=(sim.Crash(at=last.number, disk="kill"),),
        run_id=report.reference.recipe.run_id,
        signals=report.reference.recipe.signals,
    )


def test_explain_narrates_every_step_kind_and_what_replay_feeds_back() -> None:
    report = sim.Simulator(hash_seeds=()).explore(offboard, "ann", max_crashes=1, budget=1)
    story = report.explain(_crash_before_the_last_step(report))
    replayed = story.split("Replay re-runs the workflow")[1].split("Then, live")[0]
    for told in (
        "step 0: durable.now() gets 2023-11-14 22:13:20+00:00 back from the journal",
        "step 1: durable.uuid4() gets ",
        "step 2 (tests.explain.notify): result None from the journal",
        "step 3: durable.sleep('1h') until +1h00m",
        "step 3: the 1h timer fired at",
        "step 4: wait_signal('objection') times out at +",
        "replay raises SignalTimeout at the yield again",
        "step 5: child run ",
        "returned 'audited ann'",
        "step 6: durable.sleep('1m')",
        "is cancelled: it lost a race",
        "step 8: activity tests.explain.delete_user('ann') scheduled",
    ):
        assert told in replayed, f"{told!r} missing from:\n{story}"
    live = story.split("Then, live")[1]
    assert "step 8: runs activity tests.explain.delete_user, attempt 1" in live
    assert "(again, with the same idempotency key)" in live
    first = story.split("Process 2")[0]
    assert "the 1h passed, in virtual time" in first
    assert "no signal 'objection' came in time: SignalTimeout is raised at the yield" in first
    # Every step has a line, in replay: none skipped.
    for seq in range(9):
        assert re.search(rf"^    step {seq}\b", replayed, re.MULTILINE), f"step {seq} not narrated"


def test_explain_narrates_a_signal_kept_then_taken() -> None:
    report = sim.Simulator(hash_seeds=()).explore(
        offboard,
        "ann",
        max_crashes=1,
        budget=1,
        signals=[("objection", "still here")],  # type: ignore[call-arg]
    )
    story = report.explain(_crash_before_the_last_step(report))
    assert re.search(r"signal 'objection' arrived at \+\S+ with payload 'still here'", story)
    assert "kept in the journal until a wait_signal('objection') takes it" in story
    assert re.search(r"step 4: wait_signal\('objection'\) takes at once the signal kept since \+", story)


@durable.workflow(name="tests.explain.long_and_short")
def long_and_short(n: int):  # type: ignore[no-untyped-def]
    short = yield audit("x")
    return [short, "y" * n]


def test_values_are_whole_up_to_200_characters_then_cut_with_an_ellipsis() -> None:
    report = sim.Simulator(hash_seeds=()).explore(long_and_short, 300, max_crashes=1, budget=1)
    story = report.explain()
    assert "result 'audited x' from the journal" in story or "returned 'audited x'" in story
    assert "...." not in story
    returned = [line for line in story.splitlines() if line.startswith("Without crashes the run returned")]
    assert returned[0].endswith("….")
    assert len(returned[0]) < 260
    whole = sim.Simulator(hash_seeds=()).explore(long_and_short, 150, max_crashes=1, budget=1).explain()
    assert "y" * 150 + "']" in whole


def test_a_cancel_request_and_a_cancelled_step_are_told() -> None:
    run = sim.run_stubbed(offboard, "ann", stubs={"tests.explain.notify": None}, cancel_at="30m")
    story = _Story(None, run.journal)  # type: ignore[arg-type]
    told = [line for event in run.journal for line in story.tell(event, replaying=True)]
    assert any("a cancel request arrived at +30m00s (cancel_at)" in line for line in told), told
    assert any("durable.Cancelled is raised at the yield" in line for line in told)
    assert any("step 3 (1h) is cancelled" in line for line in told), told


@durable.workflow(name="tests.explain.one_stamp")
def one_stamp():  # type: ignore[no-untyped-def]
    return (yield stamp("a"))


def test_explain_tells_the_records_a_power_loss_took_away() -> None:
    # The narration once told only what survived: the scheduling record written before
    # the crash, and lost with it, was skipped.
    simulator = sim.Simulator(hash_seeds=())
    report = simulator.explore(one_stamp, max_crashes=1)
    point = next(p for p in report.reference.lifetimes[0].points if p.label == "activity-returned step 0")
    story = report.explain(sim.Recipe(crashes=(sim.Crash(at=point.number, disk="drop"),)))
    process_1 = story.split("Process 2")[0]
    assert re.search(
        r"step 0: activity tests\.explain\.stamp\('a'\) scheduled\n"
        r"    \(written, but the crash lost this record: it was not fsynced yet\)\n",
        process_1,
    ), process_1
    # A kill loses nothing the process wrote: nothing is marked lost.
    killed = report.explain(sim.Recipe(crashes=(sim.Crash(at=point.number, disk="kill"),)))
    assert "the crash lost this record" not in killed
