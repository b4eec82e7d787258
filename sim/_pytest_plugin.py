"""pytest plugin (registered by entry point): crash-test a workflow in one line.

    def test_order_is_crash_safe(crash_safe):
        crash_safe(process_order, "alice", 4200, "tok_visa")

``crash_safe`` explores every crash schedule and fails the test with the first
failure's recipe and divergence. Options: ``--sim-seed``, ``--sim-budget``,
``--sim-max-crashes``. The imports stay lazy so that loading the plugin costs
nothing in projects that do not use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sim", "durable crash simulator")
    group.addoption("--sim-seed", type=int, default=0, help="seed of crash_safe explorations (default 0)")
    group.addoption(
        "--sim-budget", type=int, default=None, help="most schedules per crash_safe call (default: all)"
    )
    group.addoption(
        "--sim-max-crashes", type=int, default=2, help="crashes per schedule in crash_safe (default 2)"
    )


@pytest.fixture
def crash_safe(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``crash_safe(wf, *args, **kwargs)``: explore every crash schedule, fail on the first failure.

    Keyword options ``seed``, ``max_crashes``, ``budget`` and ``simulator`` (a
    ``sim.Simulator`` with faults or before/after hooks) override the command line.
    """
    import sim  # noqa: PLC0415 - lazy: the plugin is loaded in every pytest run

    config = request.config

    def check(workflow: Any, *args: Any, simulator: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("seed", config.getoption("--sim-seed"))
        kwargs.setdefault("budget", config.getoption("--sim-budget"))
        kwargs.setdefault("max_crashes", config.getoption("--sim-max-crashes"))
        report = (simulator or sim.Simulator()).explore(workflow, *args, **kwargs)
        if not report.ok:
            pytest.fail(report.failure_text(), pytrace=False)
        return report

    return check
