"""A FastAPI service that hands signups to durable workers: the asyncio side of durable.

    uvicorn examples.signup_service.app:app          # the web app
    durable worker examples/signup_service/workflows.py --loop asyncio   # beside it

Both use the store ``$DURABLE_STORE`` (a FileStore directory shared on one
machine, or a PostgreSQL URL shared by many). The app executes nothing: it
creates runs and sends signals through ``durable.Client``; workers run them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field, field_validator

import durable

from .workflows import signup


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client for the app's life: under asyncio, durable keeps its trio guest up
    # between calls inside the block, which makes each call cheaper.
    async with durable.Client(os.environ.get("DURABLE_STORE")) as client:
        app.state.client = client
        yield


app = FastAPI(title="signup service", lifespan=lifespan)


class Signup(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    #: How long the confirmation link stays valid (durable's duration syntax).
    wait: str = "24h"

    @field_validator("wait")
    @classmethod
    def a_duration(cls, value: str) -> str:
        durable.sleep(value)  # refused now, with durable's reason, not when the run waits
        return value


def client_of(request: Request) -> durable.Client:
    client: durable.Client = request.app.state.client
    return client


@app.post("/signups", status_code=202)
async def start_signup(body: Signup, request: Request) -> dict[str, str]:
    """Start the signup's run (the same email twice attaches to the same run)."""
    run_id = "signup-" + body.email
    try:
        await client_of(request).start(signup, body.email, body.wait, id=run_id)
    except durable.RunConflictError as exc:
        raise HTTPException(409, str(exc)) from exc
    except ValueError as exc:  # an id durable refuses (an email too long for one)
        raise HTTPException(422, str(exc)) from exc
    return {"run_id": run_id}


@app.get("/runs/{run_id}")
async def run_status(run_id: str, request: Request) -> dict[str, Any]:
    """The run's status, and its result once it has one."""
    handle = durable.ClientHandle(client_of(request), run_id, signup.name)
    try:
        status = await handle.status()
    except durable.UnknownRunError as exc:
        raise HTTPException(404, str(exc)) from exc
    answer: dict[str, Any] = {"run_id": run_id, "status": status}
    if status == "completed":
        answer["result"] = await handle.result()
    return answer


@app.post("/runs/{run_id}/signals/{name}", status_code=202)
async def send_signal(run_id: str, name: str, request: Request) -> dict[str, str]:
    """Send a signal, its payload the request's JSON body (if any)."""
    body = await request.body()
    payload = (await request.json()) if body else None
    try:
        await client_of(request).signal(run_id, name, payload)
    except durable.UnknownRunError as exc:
        raise HTTPException(404, str(exc)) from exc
    except durable.RunConflictError as exc:  # the run has ended
        raise HTTPException(409, str(exc)) from exc
    return {"run_id": run_id, "signal": name}
