from __future__ import annotations

import asyncio
import inspect
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    max_examples=50,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))

# pytest-xdist's workers set COLUMNS=80 (and the shell may export it): the CLI's
# output, which the tests and the docs' examples compare, must not depend on where
# the suite runs. A test that wants a width sets it itself.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)


# --- one test, both event loops --------------------------------------------------------
#
# A test that asks for ``loop`` runs twice: on trio (pytest-trio runs an ``async def``
# test, as for every other test) and on asyncio (``asyncio.run`` below runs it). Its body
# uses durable's API and ``tests/loops.py`` only, so that it means the same on both. A
# test that needs trio's own tools (a virtual clock, nurseries) is marked ``trio_only``
# and runs on trio alone.


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "loop" in metafunc.fixturenames:
        only_trio = metafunc.definition.get_closest_marker("trio_only") is not None
        metafunc.parametrize("loop", ["trio"] if only_trio else ["trio", "asyncio"])


def _on_asyncio(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return (
        callspec is not None
        and callspec.params.get("loop") == "asyncio"
        and inspect.iscoroutinefunction(getattr(item, "obj", None))
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _on_asyncio(item):  # not pytest-trio's: asyncio.run runs it (below)
            item.own_markers[:] = [mark for mark in item.own_markers if mark.name != "trio"]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not _on_asyncio(pyfuncitem):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**args))
    return True
