"""The simulator's own quality suite: it finds real bugs, passes correct workflows, and is deterministic.

The workflows live in ``tests/simflows``: ``bad`` holds workflows that are
wrong on purpose (each must be reported, with a recipe that plays the failure
again), ``good`` holds correct ones (each must match its crash-free run in
every single and double crash schedule). Everything here calls the simulator
from plain sync tests: ``sim`` runs ``trio.run`` itself.

Most explorations use ``sim.Simulator(hash_seeds=())``: the replay under other
string-hash seeds runs in child interpreters, costs a second per exploration,
and has tests of its own below; the crash schedules are the same either way.

Explorations that take more than a second or two carry ``@pytest.mark.slow``;
a reduced version of each always runs. Like ``tests/test_crash_process.py``,
the slow tests run in full when run on purpose (``pytest -m slow``) and in a
reduced size under CI (``CI`` set), so the whole file stays within ~30 s there.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from simflows import bad, good
from simflows.fakes import Ledger

import durable
import sim
from durable.lowlevel import ActivityCompleted, ActivityScheduled, AttemptFailed, Event
from sim._world import World

# --- cases ------------------------------------------------------------------------


@attrs.frozen
class Case:
    """One workflow call to explore, with the simulator options it needs."""

    id: str
    workflow: durable.Workflow[..., Any]
    args: tuple[Any, ...]
    faults: tuple[sim.ActivityFault, ...] = ()
    world: Ledger | None = None  # a fake service: reset before, checked after each schedule

    @property
    def plain(self) -> bool:
        """True when the module-level ``sim.explore`` / ``sim.replay_recipe`` suffice."""
        return not self.faults and self.world is None

    def simulator(self, **options: Any) -> sim.Simulator:
        if self.world is not None:
            options.update(before_each=self.world.reset, after_each=self.world.problem)
        return sim.Simulator(faults=self.faults, **options)

    def explore(self, **options: Any) -> sim.Report:
        """Every crash schedule (no hash-seed replay: see the module docstring)."""
        return self.simulator(hash_seeds=()).explore(self.workflow, *self.args, **options)

    def replay(self, recipe: sim.Recipe) -> sim.Report:
        if self.plain:
            return sim.replay_recipe(self.workflow, *self.args, recipe=recipe)
        return self.simulator().replay_recipe(self.workflow, *self.args, recipe=recipe)


@attrs.frozen
class BadCase(Case):
    step: int = 1  # the step the bug shows at
    nondeterministic: bool = True


BAD = [
    BadCase("wall-clock", bad.ship_by_clock, ("parcel",)),
    BadCase("random", bad.sample_randomly, ("survey",)),
    BadCase("module-global", bad.convert_with_global, (100, "EUR")),
    BadCase("uuid4", bad.order_with_uuid4, ("book",)),
    BadCase("non-idempotent", bad.pay_without_key, (42,), world=bad.LEDGER, step=0, nondeterministic=False),
]
BAD_BY_ID = {case.id: case for case in BAD}


@attrs.frozen
class GoodCase(Case):
    result: Any = None
    fails_with: str | None = None  # the workflow raises: its failure is the reference outcome
    full_always: bool = True  # explore every double crash in the always-run suite


FLAKY = "simflows.flaky_fetch"
GOOD = [
    GoodCase(
        "order", good.process_order, ("alice", 4200, "tok_visa"), world=good.PAYMENTS, result="charge-1"
    ),
    GoodCase("loop-with-branches", good.branchy, (6,), result=83, full_always=False),
    GoodCase(
        "saga",
        good.book_trip,
        ("room-12", 300),
        world=good.INVENTORY,
        result="compensated reserve-1 after PaymentDeclinedError: card declined for 300 (2 attempts)",
    ),
    GoodCase(
        "retries-with-backoff",
        good.fetch_with_retries,
        ("https://example.com",),
        faults=(sim.ActivityFault(FLAKY, attempt=1), sim.ActivityFault(FLAKY, attempt=2)),
        result="content of https://example.com (attempt 3)",
    ),
    GoodCase(
        "hang-past-timeout",
        good.lookup_with_timeout,
        ("key",),
        faults=(sim.ActivityFault("simflows.lookup", attempt=1, kind="hang"),),
        result="KEY (attempt 2)",
    ),
    GoodCase(
        "slow-attempt",
        good.render_slowly,
        ("doc",),
        faults=(sim.ActivityFault("simflows.render", kind="slow", seconds=30.0),),
        result="<p>doc</p>",
    ),
    GoodCase("workflow-fails", good.sell, ("teapot",), fails_with="OutOfStockError: teapot is out of stock"),
    GoodCase("async-and-sync-activities", good.mixed, (3,), result=[6, 7]),
]
GOOD_BY_ID = {case.id: case for case in GOOD}

#: Double crashes the reduced explorations play after every single crash.
REDUCED_DOUBLES = 30
#: Under CI the slow tests run one seed, with every single crash and some double crashes.
UNDER_CI = bool(os.environ.get("CI"))
SLOW_SEEDS = (1,) if UNDER_CI else (1, 2, 3)


@functools.cache
def bad_report(case_id: str) -> sim.Report:
    """Single crashes find every planted bug; the report is shared by the tests below."""
    return BAD_BY_ID[case_id].explore(max_crashes=1)


def good_report(case_id: str) -> sim.Report:
    """The always-run exploration of a good case, shared by the tests below."""
    return _good_report(case_id, GOOD_BY_ID[case_id].full_always)


@functools.cache
def _good_report(case_id: str, full: bool) -> sim.Report:
    """Every single and double crash (``full``), or every single crash and some doubles."""
    return reduced(GOOD_BY_ID[case_id], seed=0, doubles=None if full else REDUCED_DOUBLES)


def reduced(case: Case, *, seed: int, doubles: int | None) -> sim.Report:
    """Every single crash and the first ``doubles`` double crashes (None: all of them).

    Single crashes come first and there are at most ``crash_points`` of them, so
    a budget of ``crash_points + doubles`` plays them all and then some doubles.
    """
    if doubles is None:
        return case.explore(seed=seed)
    crash_points = case.explore(seed=seed, budget=1).crash_points
    return case.explore(seed=seed, budget=crash_points + doubles)


def events(world: World) -> list[Event]:
    return world.journal_events()


def one(items: list[Any]) -> Any:
    assert len(items) == 1, items
    return items[0]


def find_point(report: sim.Report, label: str) -> int:
    """The number of the reference run's crash point with this label."""
    return one([p.number for p in report.reference.lifetimes[0].points if p.label == label])


# --- the simulator finds real bugs ------------------------------------------------


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_bad_workflow_is_reported(case: BadCase) -> None:
    report = bad_report(case.id)
    assert not report.ok
    assert report.failures
    assert len(report.failures) <= report.schedules
    assert report.failure_text().startswith(str(report))
    for failure in report.failures:
        assert isinstance(failure.recipe, sim.Recipe)
        assert failure.recipe.crashes, "every failure here needs a crash to show"
        assert failure.divergence.strip()


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_failure_recipe_replays_the_same_divergence(case: BadCase) -> None:
    report = bad_report(case.id)
    for failure in dict.fromkeys([report.failures[0], report.failures[-1]]):
        again = case.replay(failure.recipe)
        assert again.schedules == 1
        assert not again.ok, f"{failure.recipe!r} did not fail when played again"
        assert again.failures[0].divergence == failure.divergence
        # The recipe's repr is what a user pastes: it must play the same schedule.
        pasted = eval(repr(failure.recipe), {"sim": sim})
        assert pasted == failure.recipe
        assert case.replay(pasted).failures[0].divergence == failure.divergence


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_divergence_names_the_step(case: BadCase) -> None:
    report = bad_report(case.id)
    step = re.compile(rf"\bstep {case.step}\b")
    unnamed = [f for f in report.failures if not step.search(f.divergence)]
    assert not unnamed, (
        f"{len(unnamed)} of {len(report.failures)} divergences do not name step {case.step}, e.g. "
        f"{unnamed[0].recipe!r}:\n{unnamed[0].divergence}"
    )
    if case.nondeterministic:
        no_hint = [f for f in report.failures if "Likely cause" not in f.divergence]
        assert not no_hint, (
            f"{len(no_hint)} of {len(report.failures)} divergences lack the 'Likely cause' hint, e.g. "
            f"{no_hint[0].recipe!r}:\n{no_hint[0].divergence}"
        )


def test_nondeterminism_error_names_step_and_source_line() -> None:
    """When the journal already holds the step, replay stops with NonDeterminismError at its yield."""
    report = bad_report("wall-clock")
    stopped = [f for f in report.failures if "stopped with an error" in f.divergence]
    assert stopped, "no schedule replayed step 1 from the journal"
    text = stopped[0].divergence
    assert "diverged from its journal at step 1" in text
    assert "simflows.bad.ship_express('parcel')" in text  # what the journal holds
    assert "simflows.bad.ship_standard('parcel')" in text  # what the code yielded on replay
    assert "bad.py" in text  # the source line of the yield
    assert "Likely cause" in text


def test_non_idempotent_effect_is_caught_by_after_each() -> None:
    case = BAD_BY_ID["non-idempotent"]
    report = bad_report(case.id)
    failure = report.failures[0]
    assert "after_each" in failure.divergence
    assert "payment '42 paid' applied 2 times" in failure.divergence
    # Without the outside-world check, the same schedule looks fine: the result is the same.
    assert sim.replay_recipe(case.workflow, *case.args, recipe=failure.recipe).ok


def test_explain_of_an_after_each_failure_ends_with_the_divergence() -> None:
    """The narration shows the re-execution that applied the effect twice, and the verdict says so."""
    story = bad_report("non-idempotent").explain()
    assert "step 0: runs activity simflows.bad.pay, attempt 1" in story
    assert "(again, with the same idempotency key)" in story
    assert story.rsplit("\n\n", 1)[-1].startswith("DIVERGENCE: ")


def test_idempotent_activity_reexecuted_applies_its_effect_once() -> None:
    """The at-least-once window: charge runs twice with the same key, the ledger charges once."""
    case = GOOD_BY_ID["order"]
    report = good_report(case.id)
    at = find_point(report, "activity-returned step 0")
    again = case.replay(sim.Recipe(seed=0, crashes=(sim.Crash(at, "kill"),)))
    assert again.ok, again.failure_text()
    assert good.PAYMENTS.calls == 3  # charge, charge again after the crash, email
    assert sorted(kind for kind, _ in good.PAYMENTS.effects) == ["charge", "email"]


def test_hash_seed_replay_catches_set_iteration() -> None:
    """Set order is fixed per interpreter: only a replay under other hash seeds shows the bug."""
    workflow, users = bad.notify_in_set_order, bad.USERS
    report = sim.explore(workflow, users, max_crashes=1, budget=3)
    assert not report.notes, report.notes
    assert not report.ok
    for failure in report.failures:
        assert failure.recipe.hash_seed is not None  # crash schedules cannot show it
        assert not failure.recipe.crashes
        assert f"PYTHONHASHSEED={failure.recipe.hash_seed}" in failure.divergence
        assert re.search(r"diverged from its journal at step \d+", failure.divergence)
        assert "Likely cause" in failure.divergence
        again = sim.replay_recipe(workflow, users, recipe=failure.recipe)
        assert again.failures[0].divergence == failure.divergence
    assert report.explain().startswith("Replayed the crash-free journal in another interpreter")


def test_the_hash_seed_replay_blames_only_the_hash_seed() -> None:
    """The child interpreters replay with the first process's random and uuid seeds, so a
    workflow that reads random.random() is not mistaken for one that iterates a set: the crash
    schedules report it instead, with their own hint."""
    case = BAD_BY_ID["random"]
    report = sim.explore(case.workflow, *case.args, max_crashes=1)
    assert not [f for f in report.failures if f.recipe.hash_seed is not None]
    assert report.failures
    assert "Likely cause" in report.failures[0].divergence


# --- correct workflows pass every single and double crash -------------------------


def check_outcome(case: GoodCase, report: sim.Report) -> None:
    if case.fails_with is None:
        assert report.result == case.result
    else:
        assert isinstance(report.result, durable.WorkflowFailed)
        assert str(report.result.error).endswith(case.fails_with)


@pytest.mark.parametrize("case", GOOD, ids=lambda c: c.id)
def test_good_workflow_survives_every_single_and_double_crash(case: GoodCase) -> None:
    report = good_report(case.id)
    assert report.ok, report.failure_text()
    assert report.schedules > report.crash_points, "no double crash was played"
    check_outcome(case, report)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("case", GOOD, ids=lambda c: c.id)
def test_good_workflow_full_exploration_several_seeds(case: GoodCase, seed: int) -> None:
    report = reduced(case, seed=seed, doubles=REDUCED_DOUBLES if UNDER_CI else None)
    assert report.ok, report.failure_text()
    assert report.schedules > report.crash_points
    check_outcome(case, report)


LONG = GoodCase("chain-30", good.chain, (30,), result=sum(range(30)))
MEDIUM = GoodCase("chain-15", good.chain, (15,), result=sum(range(15)))


def test_long_workflow_reduced() -> None:
    """Every single crash of a 15-step workflow, and some double crashes."""
    report = reduced(MEDIUM, seed=0, doubles=10)
    assert report.ok, report.failure_text()
    assert report.result == sum(range(15))
    assert report.schedules > report.crash_points


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_long_workflow_every_double_crash(seed: int) -> None:
    report = reduced(LONG, seed=seed, doubles=REDUCED_DOUBLES if UNDER_CI else None)
    assert report.ok, report.failure_text()
    assert report.result == sum(range(30))
    assert report.schedules > report.crash_points


def test_loop_with_branches_takes_ten_steps() -> None:
    report = good_report("loop-with-branches")
    scheduled = [e for e in events(report.reference) if isinstance(e, ActivityScheduled)]
    assert len(scheduled) == good.branchy_steps(6) == 10
    assert {e.name for e in scheduled} == {"simflows.measure", "simflows.small", "simflows.large"}


def test_retries_wait_their_backoff_in_virtual_time() -> None:
    """Two failed attempts and backoffs of 1h and 2h: the run spans 3 virtual hours."""
    journal = events(good_report("retries-with-backoff").reference)
    scheduled = one([e for e in journal if isinstance(e, ActivityScheduled)])
    failed = [e for e in journal if isinstance(e, AttemptFailed)]
    assert [(e.attempt, e.error.type.rsplit(".", 1)[-1]) for e in failed] == [
        (1, "InjectedFault"),
        (2, "InjectedFault"),
    ]
    assert [e.retry_at - e.t for e in failed] == [pytest.approx(3600.0), pytest.approx(7200.0)]
    completed = one([e for e in journal if isinstance(e, ActivityCompleted)])
    assert completed.attempts == 3
    assert completed.t - scheduled.t >= 3 * 3600.0


def test_hung_attempt_ends_at_its_timeout() -> None:
    journal = events(good_report("hang-past-timeout").reference)
    scheduled = one([e for e in journal if isinstance(e, ActivityScheduled)])
    failed = one([e for e in journal if isinstance(e, AttemptFailed)])
    assert failed.attempt == 1
    assert "AttemptTimeout" in failed.error.type
    assert 5.0 <= failed.t - scheduled.t < 5.5
    assert one([e for e in journal if isinstance(e, ActivityCompleted)]).attempts == 2


def test_slow_attempt_takes_its_virtual_seconds() -> None:
    journal = events(good_report("slow-attempt").reference)
    scheduled = one([e for e in journal if isinstance(e, ActivityScheduled)])
    completed = one([e for e in journal if isinstance(e, ActivityCompleted)])
    assert completed.attempts == 1
    assert completed.t - scheduled.t >= 30.0


def test_faults_apply_to_the_reference_run_too() -> None:
    """Without the faults the flaky activity succeeds at once: a different reference."""
    report = sim.Simulator(hash_seeds=()).explore(good.fetch_with_retries, "https://example.com", budget=1)
    assert report.result == "content of https://example.com (attempt 1)"


# --- the simulator is deterministic -----------------------------------------------


def _played(workflow: durable.Workflow[..., Any], args: tuple[Any, ...], recipe: sim.Recipe) -> World:
    return World(workflow, args, {}, recipe).play()


def _fingerprint(world: World) -> tuple[Any, ...]:
    lifetimes = [
        (
            lt.number,
            lt.ending.result_text(),
            lt.crashed_at.label if lt.crashed_at is not None else None,
            [(d.path, d.kept, d.lost, d.how) for d in lt.damage],
            [p.label for p in lt.points],
        )
        for lt in world.lifetimes
    ]
    executions = [attrs.astuple(e) for e in world.executions]
    return (world.journal_bytes(), lifetimes, executions)


def _determinism_recipes(
    workflow: durable.Workflow[..., Any], args: tuple[Any, ...], faults: tuple[sim.ActivityFault, ...]
) -> list[sim.Recipe]:
    """A single and a double crash at an unsynced write, for every disk fault."""
    points = _played(workflow, args, sim.Recipe(faults=faults)).lifetimes[0].points
    writes = [p.number for p in points if p.kind == "after write"]
    recipes = []
    for index, disk in enumerate(sim.DISK_FAULTS):
        at = writes[(3 * index + 1) % len(writes)]
        recipes.append(sim.Recipe(seed=7, crashes=(sim.Crash(at, disk),), faults=faults))
        recipes.append(sim.Recipe(seed=7, crashes=(sim.Crash(at, disk), sim.Crash(3, disk)), faults=faults))
    return recipes


DETERMINISM_CASES = [GOOD_BY_ID["async-and-sync-activities"], GOOD_BY_ID["retries-with-backoff"]]


@pytest.mark.parametrize("case", DETERMINISM_CASES, ids=lambda c: c.id)
def test_same_recipe_gives_byte_identical_journals(case: GoodCase) -> None:
    recipes = [sim.Recipe(faults=case.faults), *_determinism_recipes(case.workflow, case.args, case.faults)]
    for recipe in recipes:
        first = _fingerprint(_played(case.workflow, case.args, recipe))
        second = _fingerprint(_played(case.workflow, case.args, recipe))
        assert first == second, f"{recipe!r} played twice gave different worlds"
        assert len(first[0]) > 16, "the journal holds more than its header"
        assert len(first[1]) == len(recipe.crashes) + 1 or first[1][-1][1] != "crashed"


def _summary(report: sim.Report) -> tuple[Any, ...]:
    return (
        report.schedules,
        report.crash_points,
        report.ok,
        [(repr(f.recipe), f.divergence) for f in report.failures],
        report.reference.journal_bytes(),
    )


@pytest.mark.parametrize(
    "case", [BAD_BY_ID["random"], GOOD_BY_ID["saga"], BAD_BY_ID["non-idempotent"]], ids=lambda c: c.id
)
def test_same_seed_gives_identical_reports(case: Case) -> None:
    crash_points = case.explore(budget=1).crash_points
    # The same run id too: each exploration has one of its own otherwise (tests/test_sim_signals.py).
    first = case.explore(seed=3, budget=crash_points + 20, run_id="same")
    second = case.explore(seed=3, budget=crash_points + 20, run_id="same")
    assert _summary(first) == _summary(second)
    assert first.schedules > first.crash_points  # double crashes included


def test_different_seeds_may_choose_different_disk_faults() -> None:
    """Every schedule of the random workflow fails, so its failures show every crash drawn."""
    case = BAD_BY_ID["random"]
    chosen = {}
    for seed in range(4):
        report = case.explore(seed=seed, max_crashes=1)
        assert {f.recipe.seed for f in report.failures} == {seed}
        chosen[seed] = tuple(c.disk for f in report.failures for c in f.recipe.crashes)
        assert set(chosen[seed]) <= set(sim.DISK_FAULTS)
    assert len(set(chosen.values())) > 1, chosen
    assert len({disk for disks in chosen.values() for disk in disks}) > 2


def test_crash_lands_on_the_numbered_point() -> None:
    case = GOOD_BY_ID["async-and-sync-activities"]
    reference = _played(case.workflow, case.args, sim.Recipe())
    points = reference.lifetimes[0].points
    assert [p.number for p in points] == list(range(1, len(points) + 1))
    for point in points:
        world = _played(case.workflow, case.args, sim.Recipe(crashes=(sim.Crash(point.number, "kill"),)))
        crashed = world.lifetimes[0].crashed_at
        assert crashed is not None
        assert (crashed.number, crashed.label) == (point.number, point.label)
        assert [p.label for p in world.lifetimes[0].points] == [p.label for p in points[: point.number]]
        assert len(world.lifetimes) == 2
        assert world.ending.value == [6, 7]


def test_crash_point_past_the_end_is_never_reached() -> None:
    case = GOOD_BY_ID["async-and-sync-activities"]
    world = _played(case.workflow, case.args, sim.Recipe(crashes=(sim.Crash(10_000),)))
    assert len(world.lifetimes) == 1
    assert world.lifetimes[0].crashed_at is None
    assert world.ending.value == [6, 7]


def test_crash_point_labels_name_the_records_written() -> None:
    """Labels say what a write carries (``before write of ActivityCompleted(seq=0)``), not just its size."""
    report = good_report("order")
    labels = [p.label for p in report.reference.lifetimes[0].points]
    journal = f"{report.reference.run_id}.journal"  # the exploration's own run id
    assert f"before write of RunStarted to {journal}" in labels
    assert f"before write of ActivityScheduled(seq=0) to {journal}" in labels, labels
    assert f"before write of ActivityCompleted(seq=0) to {journal}" in labels, labels
    assert f"before write of RunCompleted to {journal}" in labels, labels


# --- assert_crash_safe and explore's arguments ------------------------------------


def test_assert_crash_safe_raises_with_recipe_and_divergence() -> None:
    """The default pipeline (hash-seed replay included) on the wall-clock bug, which only crashes show."""
    case = BAD_BY_ID["wall-clock"]
    with pytest.raises(AssertionError) as raised:
        sim.assert_crash_safe(case.workflow, *case.args, max_crashes=1)
    text = str(raised.value)
    first = bad_report(case.id).failures[0]
    assert "sim.Recipe(" in text
    # The same schedule, but under this exploration's own run id.
    own = re.search(r"run_id='(sim-[0-9a-f]{12})'", text)
    assert own is not None, text
    assert (
        repr(attrs.evolve(first.recipe, run_id=own.group(1))).replace(first.recipe.run_id, own.group(1))
        in text
    )
    assert first.divergence in text


def test_simulator_assert_crash_safe_uses_its_outside_world_check() -> None:
    case = BAD_BY_ID["non-idempotent"]
    with pytest.raises(AssertionError, match=r"sim\.Recipe\(.*activity-returned step 0"):
        case.simulator(hash_seeds=()).assert_crash_safe(case.workflow, *case.args, max_crashes=1)


def test_assert_crash_safe_returns_the_report_of_a_good_workflow() -> None:
    report = sim.assert_crash_safe(good.mixed, 3, max_crashes=1, budget=5)
    assert isinstance(report, sim.Report)
    assert report.ok
    assert not report.notes, report.notes  # the hash-seed replay ran
    assert report.result == [6, 7]
    assert report.schedules == 5


def test_a_script_that_explores_at_import_does_not_explore_again_in_the_children(tmp_path: Path) -> None:
    # The hash-seed replay imports the workflow's module in child interpreters: a script
    # exploring at its top level explored again in each, beside the parent and sharing
    # its files, and the parent reported failures that did not reproduce.
    script = tmp_path / "explores_at_import.py"
    script.write_text(
        "import os, durable, sim\n"
        "@durable.activity\n"
        "def add(total, i):\n"
        "    return total + i\n"
        "@durable.workflow\n"
        "def total(n):\n"
        "    acc = 0\n"
        "    for i in range(n):\n"
        "        acc = yield add(acc, i)\n"
        "    return acc\n"
        "with open(os.environ['MARKS'], 'a') as marks:\n"
        "    marks.write('explored\\n')\n"
        "report = sim.explore(total, 3, max_crashes=1)\n"
        "print(report.ok, report.notes)\n"
    )
    marks = tmp_path / "marks"
    env = dict(os.environ, MARKS=str(marks), PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    # The children got as far as the mark, then the simulator refused to explore there.
    # Each of the three children (hash seeds 0, 1, 2) ran the script to its explore() and
    # stopped there; only the parent explored, and its report says why the replay could not run.
    assert marks.read_text().count("explored") == 4, marks.read_text()
    assert done.stdout.startswith("True "), done.stdout
    assert "the hash-seed replay could not run" in done.stdout, done.stdout
    assert "Put that code under `if __name__ ==" in done.stdout, done.stdout


def test_arguments_the_workflow_does_not_take_are_refused_before_exploring() -> None:
    # The crash-free run failed with a TypeError, every schedule failed the same way, and
    # the exploration passed.
    missing = r"do not fit workflow 'simflows.chain'\(n.*\): missing a required argument: 'n'"
    with pytest.raises(TypeError, match=missing):
        sim.explore(good.chain)
    with pytest.raises(TypeError, match="unexpected keyword argument 'm'"):
        sim.Simulator().replay_recipe(good.chain, 1, m=2, recipe=sim.Recipe())


BOOKINGS: dict[str, bool] = {}


@durable.activity(name="tests.sim.book")
def book(key: str) -> str:
    BOOKINGS[key] = True
    return key


@durable.activity(name="tests.sim.decline", retries=0)
def decline() -> None:
    raise ValueError("declined")


@durable.activity(name="tests.sim.cancel_strictly", retries=0)
def cancel_strictly(key: str) -> None:
    del BOOKINGS[key]  # a KeyError when it runs twice: not idempotent


@durable.activity(name="tests.sim.notify")
def notify(key: str) -> str:
    return f"cancelled {key}"


@durable.workflow(name="tests.sim.strict_saga")
def strict_saga() -> Any:
    key = yield book("trip")
    try:
        yield decline()
    except durable.ActivityError:
        try:
            yield cancel_strictly(key)
        except durable.ActivityError:
            return "could not cancel"
        return (yield notify(key))
    return "booked"


def test_a_path_changed_by_an_activity_that_ran_again_names_it_too() -> None:
    # The advice blamed only the workflow's code (clock, random, globals) when a deterministic
    # workflow took another path because a compensation failed when a crash ran it again.
    simulator = sim.Simulator(hash_seeds=(), before_each=BOOKINGS.clear)
    report = simulator.explore(strict_saga, max_crashes=1)
    assert not report.ok
    texts = [f.divergence for f in report.failures if "different number of steps" in f.divergence]
    assert texts, report.failure_text()
    assert "Or: 'tests.sim.cancel_strictly' ran again after the crash" in texts[0], texts[0]


def test_skipping_the_hash_seed_replay_says_so_accurately() -> None:
    """``hash_seeds=()`` skips the replay on purpose; a note must not blame the workflow's module."""
    report = sim.Simulator(hash_seeds=()).explore(good.mixed, 3, budget=1)
    assert not [note for note in report.notes if "cannot be imported" in note], report.notes


def test_workflow_keyword_arguments_pass_through() -> None:
    report = sim.Simulator(hash_seeds=()).explore(good.mixed, x=4, seed=1, max_crashes=1, budget=3)
    assert report.result == [8, 9]
    assert report.schedules == 3


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"max_crashes": 0}, r"max_crashes must be at least 1 \(got 0\)"),
        ({"max_crashes": -1}, r"max_crashes"),
        ({"budget": 0}, r"budget must be a positive number of schedules \(got 0\)"),
        ({"budget": -5}, r"budget"),
    ],
)
def test_explore_rejects_bad_options(options: dict[str, int], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        sim.explore(good.mixed, 3, **options)
    with pytest.raises(ValueError, match=pattern):
        sim.assert_crash_safe(good.mixed, 3, **options)


def test_budget_caps_the_schedules() -> None:
    report = sim.Simulator(hash_seeds=()).explore(good.mixed, 3, budget=5)
    assert report.schedules == 5
    assert report.ok


@pytest.mark.parametrize(
    "not_a_workflow",
    [good.mixed.fn, good.double_async, "simflows.mixed", None],
    ids=["undecorated-generator", "activity", "name", "none"],
)
def test_non_workflow_is_a_type_error(not_a_workflow: Any) -> None:
    with pytest.raises(TypeError, match=r"@durable\.workflow"):
        sim.explore(not_a_workflow, 3)
    with pytest.raises(TypeError, match=r"@durable\.workflow"):
        sim.assert_crash_safe(not_a_workflow, 3)
    with pytest.raises(TypeError, match=r"@durable\.workflow"):
        sim.replay_recipe(not_a_workflow, 3, recipe=sim.Recipe())


def test_plan_values_are_validated() -> None:
    with pytest.raises(ValueError, match="at"):
        sim.Crash(0)
    with pytest.raises(ValueError, match="disk"):
        sim.Crash(1, "flood")
    with pytest.raises(ValueError, match="kind"):
        sim.ActivityFault("x", kind="explode")
    with pytest.raises(ValueError, match="attempt"):
        sim.ActivityFault("x", attempt=0)
    with pytest.raises(TypeError, match=r"sim\.Crash"):
        sim.Recipe(crashes=(3,))  # type: ignore[arg-type]


# --- explain ----------------------------------------------------------------------


def test_explain_good_workflow_tells_the_lesson() -> None:
    """The default narration of a good workflow shows crash, journal, replay, re-execution, same result."""
    story = good_report("order").explain()
    assert "CRASH at crash point" in story
    assert "The journal now holds:" in story
    assert "from the journal" in story, f"replay fed no step from the journal:\n{story}"
    assert "(again, with the same idempotency key)" in story
    assert "Same result as the run without crashes" in story


def test_explain_recipe_in_the_at_least_once_window() -> None:
    report = good_report("order")
    at = find_point(report, "activity-returned step 1")
    recipe = sim.Recipe(seed=0, crashes=(sim.Crash(at, "kill"),))
    story = report.explain(recipe)
    assert story.startswith(f"Schedule {recipe!r}\nWithout crashes the run returned 'charge-1'.")
    assert f"CRASH at crash point {at}: activity-returned step 1." in story
    assert "at-least-once window" in story
    assert "The journal now holds: RunStarted, ActivityScheduled(step 0), ActivityCompleted(step 0)" in story
    assert "step 0 (simflows.charge_payment): result 'charge-1' from the journal" in story
    assert (
        "step 1: runs activity simflows.send_email, attempt 1, idempotency key sim/1 "
        "(again, with the same idempotency key): returned None"
    ) in story
    assert story.endswith("Same result as the run without crashes: returned 'charge-1'. Invariants hold.")


@pytest.mark.parametrize(
    ("disk", "damage"),
    [
        ("drop", "dropped"),
        ("torn", "torn: kept"),
        ("zeros", "zero-filled after"),
        ("garbage", "garbage after"),
        ("hole", "hole of"),
    ],
)
def test_explain_names_the_disk_damage(disk: str, damage: str) -> None:
    """A power loss with unsynced bytes in the journal says what it did to the file."""
    report = good_report("order")
    at = find_point(report, "activity-returned step 1")  # the ActivityScheduled(seq=1) is unsynced
    story = report.explain(sim.Recipe(seed=0, crashes=(sim.Crash(at, disk),)))
    assert f"sim.journal: {damage}" in story, story


def test_explain_failure_narrates_the_failing_schedule() -> None:
    report = bad_report("random")
    failure = report.failures[0]
    story = report.explain()
    assert story.splitlines()[0] == f"Schedule {failure.recipe!r}"
    assert "CRASH at crash point" in story
    verdict = story.rsplit("\n\n", 1)[-1]
    assert verdict == f"DIVERGENCE: {failure.divergence}"


@durable.workflow(name="tests.sim.goes_on_anew")
def goes_on_anew(n: int):  # type: ignore[no-untyped-def]
    yield durable.sleep(1)
    if n < 2:
        yield durable.continue_as_new(n + 1)
    return n


def test_the_simulator_catches_writes_into_a_journal_continue_as_new_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guarantee 8: a process that keeps writing to the journal a rename took off its
    path loses that work; the simulator's disk sees the write and the check names it."""
    from durable._core import events as ev  # noqa: PLC0415
    from durable._store_file import FileStore  # noqa: PLC0415

    original = FileStore.restart

    async def leaky(self: FileStore, started: Any, writer: Any) -> Any:
        close = writer.close
        writer.close = lambda: None  # the old journal stays open past the swap...
        fresh = await original(self, started, writer)
        writer.append(ev.RunResumed(0.0, 1))  # ...and is written to after it
        close()
        return fresh

    monkeypatch.setattr(FileStore, "restart", leaky)
    report = sim.Simulator(hash_seeds=()).explore(goes_on_anew, 0, max_crashes=1)
    assert not report.ok
    assert "after that file had been replaced or removed" in report.failures[0].divergence


@durable.activity
def _noted(label: str) -> str:
    return label


@durable.workflow(name="tests.sim.two_timers")
def _two_timers():  # type: ignore[no-untyped-def]
    began = yield durable.now()
    yield _noted("before")  # the run is let go at the race and taken back when due
    index, _ = yield durable.race(durable.sleep("10m"), durable.sleep("1h"))
    ended = yield durable.now()
    return index, round((ended - began).total_seconds())


def test_a_run_let_go_comes_back_at_its_due_time_not_at_the_simulators_next_poll() -> None:
    # The simulator's runtime looks at the store once a virtual day: a run let go for
    # ten minutes once came back a day later, and the one-hour timer won the race.
    report = sim.explore(_two_timers, max_crashes=1)
    assert report.ok, report.explain()
    assert report.result == (0, 600)
