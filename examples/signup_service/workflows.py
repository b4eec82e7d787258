"""The workflow behind the signup service: create an account, send a confirmation
email, wait up to a day for the click, then activate the account (or remove it).

Every activity is asyncio code (``asyncio.sleep`` stands for a call to an
asyncio client: httpx, asyncpg, redis.asyncio), so the worker runs on asyncio:

    durable worker examples/signup_service/workflows.py --loop asyncio
"""

from __future__ import annotations

import asyncio
import os

import durable

#: How long the fake services take to answer; the tests set it to 0.
LATENCY = float(os.environ.get("SIGNUP_LATENCY", "0.05"))


@durable.activity(retries=3, initial_backoff="200ms")
async def create_account(email: str) -> str:
    await asyncio.sleep(LATENCY)  # an INSERT through asyncpg, say
    return "acct-" + email.split("@", maxsplit=1)[0]


@durable.activity(retries=5, timeout="10s")
async def send_confirmation(email: str, account: str) -> None:
    key = durable.activity_info().idempotency_key  # the mail API drops a repeated key
    await asyncio.sleep(LATENCY)  # a POST through httpx.AsyncClient, say
    print(f"mail to {email}: confirm {account} (key {key})", flush=True)


@durable.activity
async def activate(account: str) -> str:
    await asyncio.sleep(LATENCY)
    return "active"


@durable.activity
async def remove_account(account: str) -> str:
    await asyncio.sleep(LATENCY)
    return "removed"


@durable.workflow(name="signup")
def signup(email: str, wait: str = "24h"):  # type: ignore[no-untyped-def]
    """What the service starts for each signup; the confirmation link sends the
    signal ``email-confirmed``."""
    account = yield create_account(email)
    yield send_confirmation(email, account)
    try:
        yield durable.wait_signal("email-confirmed", timeout=wait)
    except durable.SignalTimeout:
        return {"account": account, "state": (yield remove_account(account))}
    return {"account": account, "state": (yield activate(account))}
