"""The asyncio example service end to end (examples/signup_service): the FastAPI app
through httpx's ASGI transport, its lifespan entered as a server would, and a real
``durable worker --loop asyncio`` process beside it; then the app behind a real
uvicorn server on 127.0.0.1.

The tests are sync functions that call ``asyncio.run`` (the app is asyncio code):
not pytest-trio's, and on the loop the service runs on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKER_OPTIONS = ["--loop", "asyncio", "--poll", "50ms", "--store"]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "store").mkdir()  # a worker refuses a store that does not exist (a typo)
    monkeypatch.setenv("DURABLE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("SIGNUP_LATENCY", "0")
    monkeypatch.syspath_prepend(str(ROOT))
    return tmp_path / "store"


@pytest.fixture
def worker(store: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [str(BIN / "durable"), "worker", "examples/signup_service/workflows.py", *WORKER_OPTIONS, str(store)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "mail to ada@example.com" in out  # the activity's print: it ran in the worker


async def until_status(client: httpx.AsyncClient, run_id: str, status: str) -> dict[str, Any]:
    """Poll the status endpoint (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(60):
        while True:
            answer = (await client.get(f"/runs/{run_id}")).json()
            if answer.get("status") == status:
                return answer  # type: ignore[no-any-return]
            await asyncio.sleep(0.05)


def test_the_app_starts_runs_that_the_worker_executes_and_forwards_signals(
    store: Path, worker: subprocess.Popen[str]
) -> None:
    from examples.signup_service.app import app  # noqa: PLC0415 - needs DURABLE_STORE set first

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://app") as client,
        ):
            started = await client.post("/signups", json={"email": "ada@example.com"})
            assert started.status_code == 202, started.text
            run_id = started.json()["run_id"]
            assert run_id == "signup-ada@example.com"
            # The worker runs it up to the wait for the click; the app never executes.
            await until_status(client, run_id, "waiting")
            signalled = await client.post(f"/runs/{run_id}/signals/email-confirmed", json={"ok": True})
            assert signalled.status_code == 202, signalled.text
            done = await until_status(client, run_id, "completed")
            assert done["result"] == {"account": "acct-ada", "state": "active"}

            # A link that expired: the run removes the account on its own.
            expired = await client.post("/signups", json={"email": "bob@example.com", "wait": "100ms"})
            done = await until_status(client, expired.json()["run_id"], "completed")
            assert done["result"] == {"account": "acct-bob", "state": "removed"}

            # Bad requests get a clear 4xx.
            json_type = {"content-type": "application/json"}
            assert (await client.post("/signups", json={"email": "not an email"})).status_code == 422
            assert (await client.post("/signups", content=b"{", headers=json_type)).status_code == 422
            bad_wait = await client.post("/signups", json={"email": "cy@x.io", "wait": "soon"})
            assert bad_wait.status_code == 422
            assert "'soon'" in bad_wait.text
            missing = await client.get("/runs/signup-nobody@example.com")
            assert missing.status_code == 404
            assert "no run 'signup-nobody@example.com'" in missing.json()["detail"]
            late = await client.post(f"/runs/{run_id}/signals/email-confirmed")
            assert late.status_code == 409
            assert "has finished" in late.json()["detail"]

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_app_behind_a_real_uvicorn_server(store: Path, worker: subprocess.Popen[str]) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "uvicorn"), "examples.signup_service.app:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
        while True:
            try:
                httpx.get(f"{base}/runs/x", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, server.stderr.read()  # type: ignore[union-attr]
                time.sleep(0.05)

        async def main() -> None:
            async with httpx.AsyncClient(base_url=base) as client:
                run_id = (await client.post("/signups", json={"email": "ada@example.com"})).json()["run_id"]
                await client.post(f"/runs/{run_id}/signals/email-confirmed")
                done = await until_status(client, run_id, "completed")
                assert done["result"]["state"] == "active"

        asyncio.run(main())
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)
