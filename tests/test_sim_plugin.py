"""The pytest plugin (crash_safe fixture) and the hypothesis strategies of ``sim``."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

import durable
import sim
import sim.strategies

pytest_plugins = ["pytester"]

EFFECTS: dict[str, int] = {}


@durable.activity(retries=2, timeout="10s", initial_backoff="1m")
def charge(amount: int) -> str:
    key = durable.activity_info().idempotency_key
    EFFECTS.setdefault(key, amount)
    return f"paid-{amount}"


@durable.activity
async def notify(text: str) -> None:
    EFFECTS.setdefault(durable.activity_info().idempotency_key, 0)


@durable.workflow
def order(amount: int):  # type: ignore[no-untyped-def]
    receipt = yield charge(amount)
    yield notify(receipt)
    return receipt


def test_crash_safe_fixture_passes_a_correct_workflow(crash_safe):  # type: ignore[no-untyped-def]
    report = crash_safe(order, 42, max_crashes=1)
    assert report.ok
    assert report.result == "paid-42"


def test_crash_safe_fixture_fails_with_the_recipe(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            import random
            import durable

            @durable.activity
            def act(x):
                return x

            @durable.workflow
            def flaky_code():
                yield act(random.random())

            def test_it(crash_safe):
                crash_safe(flaky_code, max_crashes=1)
            """
        )
    )
    result = pytester.runpytest_subprocess("--sim-budget=5")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*different command at step 0*", "*sim.Recipe(seed=0, crashes=*"])


def test_plugin_options_reach_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            import durable

            @durable.activity
            def act(x):
                return x

            @durable.workflow
            def two():
                yield act(1)
                yield act(2)

            def test_it(crash_safe):
                report = crash_safe(two)
                assert report.schedules == 3
            """
        )
    )
    result = pytester.runpytest_subprocess("--sim-budget=3", "--sim-seed=7")
    result.assert_outcomes(passed=1)


@settings(max_examples=15)
@given(
    recipe=sim.strategies.recipes(
        activities=["charge"], max_crashes=2, max_point=30, fault_kinds=("raise", "slow", "hang")
    )
)
def test_order_survives_every_generated_fault_plan(recipe: sim.Recipe) -> None:
    EFFECTS.clear()
    report = sim.Simulator(before_each=EFFECTS.clear).replay_recipe(order, 7, recipe=recipe)
    assert report.ok, report.failure_text()


@given(recipe=sim.strategies.recipes(activities=["a", "b"]))
def test_generated_recipes_print_as_pasteable_python(recipe: sim.Recipe) -> None:
    assert eval(repr(recipe), {"sim": sim}) == recipe


@given(plan=st.data())
def test_strategies_shrink_toward_the_plainest_plan(plan: st.DataObject) -> None:
    crashes = plan.draw(sim.strategies.crashes(max_crashes=2))
    assert len(crashes) <= 2
    assert all(1 <= c.at <= 64 and c.disk in sim.DISK_FAULTS for c in crashes)


def test_a_failing_plan_shrinks_to_a_minimal_recipe() -> None:
    ledger: list[int] = []

    @durable.activity
    def pay(amount: int) -> None:
        ledger.append(amount)  # no idempotency key: a re-run pays twice

    @durable.workflow
    def pays():  # type: ignore[no-untyped-def]
        yield pay(1)

    simulator = sim.Simulator(
        before_each=ledger.clear,
        after_each=lambda: None if len(ledger) <= 1 else f"paid {len(ledger)} times",
    )

    def fails(recipe: sim.Recipe) -> bool:
        return not simulator.replay_recipe(pays, recipe=recipe).ok

    plans = sim.strategies.recipes(max_crashes=2, max_point=16)
    minimal = find(plans, fails, settings=settings(database=None, derandomize=True))
    # Shrinking reaches a local minimum: the plainest seed and disk damage, and no
    # more crashes than the failure needs from there (one or two).
    assert fails(minimal)
    assert minimal.seed == 0, minimal
    assert 1 <= len(minimal.crashes) <= 2, minimal
    assert all(crash.disk == "kill" for crash in minimal.crashes), minimal
    assert not minimal.faults
