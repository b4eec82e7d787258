"""Hypothesis strategies for fault plans: crashes, activity faults, whole recipes.

They shrink toward the plainest plan that still fails: fewer crashes, earlier
crash points, the kindest disk damage (``kill`` first), fewer activity faults,
seed 0. A failing example prints as a ``sim.Recipe(...)`` you can paste into
``sim.replay_recipe``::

    from hypothesis import given
    import sim, sim.strategies

    @given(recipe=sim.strategies.recipes(activities=["charge_payment"]))
    def test_order_survives_any_plan(recipe):
        report = sim.replay_recipe(process_order, "alice", 4200, "tok", recipe=recipe)
        assert report.ok, report.failure_text()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from ._disk import DISK_FAULTS
from ._plan import ACTIVITY_FAULTS, ActivityFault, Crash, Recipe, Signal


def crashes(*, max_crashes: int = 2, max_point: int = 64) -> st.SearchStrategy[tuple[Crash, ...]]:
    """Up to ``max_crashes`` crashes (one per process lifetime), at points 1..``max_point``.

    A point beyond what a lifetime reaches means that lifetime does not crash.
    """
    crash = st.builds(
        Crash,
        at=st.integers(min_value=1, max_value=max_point),
        disk=st.sampled_from(DISK_FAULTS),
    )
    return st.lists(crash, max_size=max_crashes).map(tuple)


def activity_faults(
    activities: Sequence[str], *, max_faults: int = 3, max_attempt: int = 3
) -> st.SearchStrategy[tuple[ActivityFault, ...]]:
    """Up to ``max_faults`` faults of the named activities on attempts 1..``max_attempt``.

    ``"hang"`` only ends through the activity's timeout: include it only for
    activities that have one, or the run is reported as hung.
    """
    if not activities:
        return st.just(())
    fault = st.builds(
        ActivityFault,
        activity=st.sampled_from(list(activities)),
        attempt=st.integers(min_value=1, max_value=max_attempt),
        kind=st.sampled_from(ACTIVITY_FAULTS),
        seconds=st.sampled_from([0.0, 1.0, 60.0, 3600.0]),
    )
    return st.lists(fault, max_size=max_faults, unique_by=lambda f: (f.activity, f.attempt)).map(tuple)


def signals(
    pairs: Sequence[tuple[str, Any]], *, max_after: int = 64
) -> st.SearchStrategy[tuple[Signal, ...]]:
    """The ``(name, payload)`` signals, each sent once the journal holds 1..``max_after``
    records (or the run waits for a message only), in any order.

    Shrinks toward the order given and the earliest arrival. A signal whose arrival
    comes after the run ended is never sent: the run took its other branch.
    """
    pairs = [tuple(pair) for pair in pairs]
    if not pairs:
        return st.just(())
    arrival = st.integers(min_value=1, max_value=max_after)

    def sent(order: list[tuple[Any, ...]]) -> st.SearchStrategy[tuple[Signal, ...]]:
        return st.tuples(
            *(st.builds(Signal, st.just(name), st.just(payload), arrival) for name, payload in order)
        )

    return st.permutations(pairs).flatmap(sent)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for the simulator's scheduling and disk-damage choices."""
    return st.integers(min_value=0, max_value=2**32 - 1)


def recipes(
    *,
    activities: Sequence[str] = (),
    max_crashes: int = 2,
    max_point: int = 64,
    max_faults: int = 3,
    fault_kinds: Sequence[str] = ACTIVITY_FAULTS,
    signal_pairs: Sequence[tuple[str, Any]] = (),
    run_id: str = "sim",
) -> st.SearchStrategy[Recipe]:
    """Whole fault plans: a seed, crashes, faults of the named activities, and the arrival of
    the ``signal_pairs`` (``(name, payload)``, see :func:`signals`), for run ``run_id``."""
    kinds = list(fault_kinds)
    faults = activity_faults(activities, max_faults=max_faults).map(
        lambda fs: tuple(f for f in fs if f.kind in kinds)
    )
    return st.builds(
        Recipe,
        seed=seeds(),
        crashes=crashes(max_crashes=max_crashes, max_point=max_point),
        faults=faults,
        signals=signals(signal_pairs),
        run_id=st.just(run_id),
    )


#: Another name for :func:`recipes`: a fault plan is a recipe.
fault_plans = recipes

__all__ = ["activity_faults", "crashes", "fault_plans", "recipes", "seeds", "signals"]
