"""Headless Chromium for the tests that look at a page as a person's browser draws it.

Playwright (the ``test`` extra) drives the Debian ``chromium`` package
(``/usr/bin/chromium``, installed by ``.ci/run``); it never downloads a browser of
its own. A machine without them skips those tests with the reason; under CI
(``CI=true``) that is a failure, as for PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

#: The flags a closed network needs (no background connections) and root needs (no sandbox).
_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return (
        os.environ.get("DURABLE_TEST_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


def _unavailable(reason: str) -> None:
    message = f"headless Chromium is not available: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run the browser tests: .ci/run installs Debian's chromium)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (a Playwright Browser), one per test module."""
    path = chromium_path()
    if path is None:
        _unavailable("no chromium on PATH (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only the browser tests need it
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=_ARGS)
        try:
            yield launched
        finally:
            launched.close()
