"""Signals in the simulator, and each exploration's run id of its own (SPEC §13).

``sim.explore(..., signals=[(name, payload), ...])`` sends the run those
signals at every point of its life, in every order, and crash-tests each branch
this leads to: a workflow that waits for an approval is crash-tested on its
happy path, not only on its timeout. The workflows here are small, so every
exploration takes a second or two.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from simflows.fakes import Ledger

import durable
import sim
import sim.strategies
from durable._cli import main

LEDGER = Ledger()


@durable.activity
def note(what: str) -> str:
    return what


@durable.activity
def pay_twice_on_retry(amount: int) -> str:
    """Wrong on purpose: no idempotency key, so a crash after it ran pays again."""
    return LEDGER.append("payment", f"{amount} paid")


@durable.activity
def pay(amount: int) -> str:
    return LEDGER.apply(durable.activity_info().idempotency_key, "payment", f"{amount} paid")


@durable.workflow
def approval_with_bug(amount: int) -> Any:
    """Pays (without an idempotency key) only once approved: only the happy path has the bug."""
    yield note("asked")
    try:
        approver = yield durable.wait_signal("approved", timeout="1h")
    except durable.SignalTimeout:
        return "timed out"
    receipt = yield pay_twice_on_retry(amount)
    return f"{receipt} approved by {approver}"


@durable.workflow
def approval(amount: int) -> Any:
    """The same, paying with the step's idempotency key."""
    yield note("asked")
    try:
        approver = yield durable.wait_signal("approved", timeout="1h")
    except durable.SignalTimeout:
        return "timed out"
    receipt = yield pay(amount)
    return f"{receipt} approved by {approver}"


@durable.workflow
def two_items() -> Any:
    """Takes two signals of one name: its result depends on their order."""
    first = yield durable.wait_signal("item")
    yield note(first)
    second = yield durable.wait_signal("item")
    return [first, second]


def ledger_simulator(**options: Any) -> sim.Simulator:
    return sim.Simulator(hash_seeds=(), before_each=LEDGER.reset, after_each=LEDGER.problem, **options)


# --- the happy path is crash-tested -----------------------------------------------------


def test_without_signals_only_the_timeout_branch_is_tested() -> None:
    """The planted bug hides: without the signal the run never pays."""
    report = ledger_simulator().explore(approval_with_bug, 5, max_crashes=1)
    assert report.ok
    assert report.result == "timed out"


def test_the_happy_path_bug_is_found_with_the_signal() -> None:
    report = ledger_simulator().explore(approval_with_bug, 5, max_crashes=1, signals=[("approved", "ann")])
    assert not report.ok
    # A crash after the payment and before its completion is journaled pays again.
    failure = report.failures[0]
    assert "activity-returned" in failure.recipe.crashes[0].label
    assert "got:      returned 'payment-2 approved by ann'" in failure.divergence
    assert failure.recipe.signals and failure.recipe.signals[0].name == "approved"
    assert report.result == "payment-1 approved by ann"  # the first arrival: before the first step


def test_a_correct_approval_passes_every_arrival_and_crash() -> None:
    report = ledger_simulator().explore(approval, 5, max_crashes=1, signals=[("approved", "ann")])
    assert report.ok, report.failure_text()
    assert report.schedules > 50  # every branch's single crashes


@pytest.mark.slow
def test_a_correct_approval_passes_double_crashes() -> None:
    report = ledger_simulator().explore(approval, 5, signals=[("approved", "ann")])
    assert report.ok, report.failure_text()
    assert report.schedules > 300


def test_crashes_hit_the_signal_in_the_inbox_and_in_the_journal() -> None:
    """The sender is another process: a signal for the run the simulated process holds
    waits in the store's inbox until the runtime journals it; crashes hit both."""
    labels: list[str] = []
    simulator = ledger_simulator(
        on_schedule=lambda n, recipe, failure: labels.append(recipe.crashes[0].label)
    )
    assert simulator.explore(approval, 5, max_crashes=1, signals=[("approved", "ann")]).ok
    assert any("directory inbox" in label for label in labels), labels
    assert any("SignalReceived" in label for label in labels), labels


def test_the_failure_recipe_replays_the_same_schedule() -> None:
    simulator = ledger_simulator()
    report = simulator.explore(approval_with_bug, 5, max_crashes=1, signals=[("approved", "ann")])
    failure = report.failures[0]
    again = simulator.replay_recipe(approval_with_bug, 5, recipe=failure.recipe)
    assert not again.ok
    assert again.failures[0].divergence == failure.divergence
    pasted = eval(repr(failure.recipe), {"sim": sim})  # the repr is valid Python
    assert pasted == failure.recipe


def test_arrivals_cover_before_during_and_after_the_timeout() -> None:
    """Every recipe explored, played without its crash, ends one of the three ways."""
    recipes: list[sim.Recipe] = []
    simulator = ledger_simulator(on_schedule=lambda n, recipe, failure: recipes.append(recipe))
    assert simulator.explore(approval, 5, max_crashes=1, signals=[("approved", "ann")]).ok
    plans = {recipe.signals for recipe in recipes}
    results = set()
    for plan in plans:
        crash_free = sim.Recipe(signals=plan, run_id="arrivals")
        results.add(ledger_simulator().replay_recipe(approval, 5, recipe=crash_free).result)
    assert results == {"payment-1 approved by ann", "timed out"}
    kinds = set()
    for plan in plans:
        world = sim._world.World(approval, (5,), {}, sim.Recipe(signals=plan)).play()
        names = [type(e).__name__ for e in world.final_events]
        kinds.add(
            "before" if "SignalAwaited" not in names else "timer" if "TimerFired" in names else "during"
        )
    assert kinds == {"before", "during", "timer"}


def test_a_signal_after_the_timeout_takes_the_timeout_branch() -> None:
    late = sim.Recipe(signals=(sim.Signal("approved", "ann", after=50),), run_id="late")
    report = ledger_simulator().replay_recipe(approval, 5, recipe=late)
    assert report.ok
    assert report.result == "timed out"


def test_two_signals_in_both_orders() -> None:
    recipes: list[sim.Recipe] = []
    simulator = sim.Simulator(hash_seeds=(), on_schedule=lambda n, recipe, failure: recipes.append(recipe))
    report = simulator.explore(two_items, max_crashes=1, signals=[("item", "x"), ("item", "y")])
    assert report.ok, report.failure_text()
    orders = {tuple(s.payload for s in recipe.signals) for recipe in recipes}
    assert orders == {("x", "y"), ("y", "x")}
    reversed_order = next(r for r in recipes if r.signals[0].payload == "y")
    crash_free = attrs.evolve(reversed_order, crashes=())
    assert sim.replay_recipe(two_items, recipe=crash_free).result == ["y", "x"]


@durable.workflow
def two_approvals() -> Any:
    """Waits for the manager, then for finance, each with a timeout."""
    try:
        manager = yield durable.wait_signal("manager", timeout="1h")
        finance = yield durable.wait_signal("finance", timeout="1h")
    except durable.SignalTimeout:
        return "timed out"
    yield note(f"{manager} and {finance}")
    return [manager, finance]


def test_two_signals_each_while_the_run_waits_for_it() -> None:
    """Beside arriving together, each signal arrives at a point of its own: the manager's
    while the run waits for it, then the finance's while the run waits for that one."""
    recipes: list[sim.Recipe] = []
    simulator = sim.Simulator(hash_seeds=(), on_schedule=lambda n, recipe, failure: recipes.append(recipe))
    report = simulator.explore(two_approvals, max_crashes=1, signals=[("manager", "ann"), ("finance", "bob")])
    assert report.ok, report.failure_text()
    awaited = set()
    for plan in {recipe.signals for recipe in recipes}:
        world = sim._world.World(two_approvals, (), {}, sim.Recipe(signals=plan)).play()
        awaited.add(sum(type(e).__name__ == "SignalAwaited" for e in world.final_events))
    assert 2 in awaited  # both waits began before their signal came


def test_signals_must_be_name_payload_pairs() -> None:
    with pytest.raises(TypeError, match=r"signals must be \(name, payload\) pairs"):
        sim.explore(approval, 5, signals=["approved"])  # type: ignore[list-item]
    with pytest.raises(durable.SerializationError, match="the payload of signal 'approved'"):
        sim.explore(approval, 5, signals=[("approved", object())])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=sim.strategies.recipes(signal_pairs=[("approved", "ann")], max_crashes=1, max_point=40))
def test_hypothesis_draws_signal_plans(recipe: sim.Recipe) -> None:
    assert len(recipe.signals) == 1
    report = ledger_simulator().replay_recipe(approval, 5, recipe=recipe)
    assert report.ok, report.failure_text()


# --- isolation: a run id of each exploration's own --------------------------------------

KEYS: list[str] = []


@durable.activity
def remember_key() -> str:
    key = durable.activity_info().idempotency_key
    KEYS.append(key)
    return key


@durable.workflow
def keyed() -> Any:
    return (yield remember_key())


def test_two_explorations_never_share_an_idempotency_key() -> None:
    KEYS.clear()
    first = sim.Simulator(hash_seeds=()).explore(keyed, max_crashes=1)
    first_keys = set(KEYS)
    KEYS.clear()
    second = sim.Simulator(hash_seeds=()).explore(keyed, max_crashes=1)
    assert first.reference.run_id != second.reference.run_id
    assert first.reference.run_id.startswith("sim-")
    assert first_keys and set(KEYS) and not first_keys & set(KEYS)


def test_run_id_pins_it_and_the_recipe_keeps_it() -> None:
    KEYS.clear()
    report = sim.Simulator(hash_seeds=()).explore(keyed, max_crashes=1, run_id="order-7")
    assert report.ok
    assert set(KEYS) == {"order-7/0"}
    assert report.result == "order-7/0"
    recipe = sim.Recipe(run_id="order-7", crashes=(sim.Crash(3),))
    assert "run_id='order-7'" in repr(recipe)
    assert sim.replay_recipe(keyed, recipe=recipe).result == "order-7/0"


def test_an_old_recipe_replays_under_run_id_sim() -> None:
    assert sim.replay_recipe(keyed, recipe=sim.Recipe(seed=0)).result == "sim/0"


# --- durable sim --signal --before-each --after-each ------------------------------------

FLOWS = textwrap.dedent(
    """
    import durable

    PAID = []

    def reset():
        PAID.clear()

    def problem():
        return f"paid {len(PAID)} times" if len(PAID) > 1 else None

    @durable.activity
    def pay(amount):
        PAID.append(amount)  # no idempotency key: wrong on purpose
        return amount

    @durable.workflow
    def expense(amount):
        try:
            approver = yield durable.wait_signal("approved", timeout="1h")
        except durable.SignalTimeout:
            return "timed out"
        yield pay(amount)
        return f"approved by {approver}"
    """
)


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "sigflows.py"
    path.write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "sigflows", raising=False)
    return path


def _sim(*args: str) -> Any:
    return CliRunner().invoke(main, ["sim", *args, "--crashes", "1"])


def test_cli_signal_and_before_each_find_the_happy_path_bug(flows: Path) -> None:
    outcome = _sim(
        "sigflows.py:expense",
        "5",
        "--signal",
        "approved='ann'",
        "--before-each",
        "sigflows.py:reset",
        "--after-each",
        "sigflows.py:problem",
    )
    assert outcome.exit_code == 1, outcome.output
    assert "paid 2 times" in outcome.output
    assert "signals approved='ann': sent at every point of the run" in outcome.output
    assert "signals=(sim.Signal(name='approved', payload='ann'" in outcome.output


def test_cli_without_the_signal_tests_the_timeout_only(flows: Path) -> None:
    outcome = _sim("sigflows.py:expense", "5", "--after-each", "sigflows.py:problem", "--run-id", "e-1")
    assert outcome.exit_code == 0, outcome.output
    assert "'timed out'" in outcome.output


def test_cli_signal_payload_is_a_literal_or_a_string(flows: Path) -> None:
    outcome = _sim(
        "sigflows.py:expense", "5", "--signal", "approved=ann", "--before-each", "sigflows.py:reset"
    )
    assert outcome.exit_code == 0, outcome.output  # without --after-each nothing looks at PAID
    assert "approved by ann" in outcome.output


def test_cli_before_each_names_what_is_wrong(flows: Path) -> None:
    outcome = _sim("sigflows.py:expense", "5", "--before-each", "sigflows.py:nothing")
    assert outcome.exit_code == 2
    assert "has no function named 'nothing'" in outcome.output
    outcome = _sim("sigflows.py:expense", "5", "--signal", "=x")
    assert outcome.exit_code == 2
    assert "NAME=PAYLOAD" in outcome.output


def test_a_replayed_recipe_says_what_it_did_not_play_as_written() -> None:
    # A hand-written recipe once passed in silence when its crash point was past the
    # run's end, and its signals' after= were quietly replaced.
    recipe = sim.Recipe(crashes=(sim.Crash(at=999),), signals=(sim.Signal("approved", "ann", after=2),))
    report = ledger_simulator().replay_recipe(approval, 5, recipe=recipe)
    never = r"crash 1 \(at point 999\) never happened: that lifetime reached \d+ crash points"
    moved = r"signal 'approved': sent after record \d+ \(where it lands .*\), not 2 as the recipe says"
    assert [bool(re.fullmatch(moved, n)) for n in report.notes] == [True, False], report.notes
    assert re.fullmatch(never, report.notes[1]), report.notes
    assert "\nnote: crash 1 (at point 999) never happened" in str(report)
