"""Correct workflows: each must match its crash-free run in every crash schedule.

Activities that touch the outside world pass ``durable.activity_info().idempotency_key``
to the fake services of :mod:`simflows.fakes`, so a re-execution after a crash
applies nothing twice.
"""

from __future__ import annotations

import trio

import durable

from .fakes import Ledger

# --- the order example of SPEC §2 -------------------------------------------------

PAYMENTS = Ledger(expected=("charge", "email"))


@durable.activity(name="simflows.charge_payment", retries=3, timeout="30s", initial_backoff="500ms")
def charge_payment(amount: int, token: str) -> str:
    key = durable.activity_info().idempotency_key
    return PAYMENTS.apply(key, "charge", f"{amount} with {token}")


@durable.activity(name="simflows.send_email")
async def send_email(user: str, message: str) -> None:
    key = durable.activity_info().idempotency_key
    PAYMENTS.apply(key, "email", f"to {user}: {message}")


@durable.workflow(name="simflows.process_order")
def process_order(customer: str, amount: int, card_tok: str):
    payment_id = yield charge_payment(amount, card_tok)
    yield send_email(customer, "Receipt for " + payment_id).with_options(retries=5)
    return payment_id


# --- a loop with branches ---------------------------------------------------------


@durable.activity(name="simflows.measure")
def measure(i: int) -> int:
    return (i * 7) % 5


@durable.activity(name="simflows.small")
def small(i: int, value: int) -> int:
    return value + i


@durable.activity(name="simflows.large")
async def large(i: int, value: int) -> int:
    return value * 10 + i


@durable.workflow(name="simflows.branchy")
def branchy(n: int):
    """For n=6: 6 measurements and 4 branch steps, 10 steps in all."""
    total = 0
    for i in range(n):
        value = yield measure(i)
        if value == 0:
            continue
        if value >= 3:
            total += yield large(i, value)
        else:
            total += yield small(i, value)
    return total


def branchy_steps(n: int) -> int:
    """How many steps ``branchy(n)`` takes."""
    return n + sum(1 for i in range(n) if measure.fn(i) != 0)


# --- a long straight chain (for the slow explorations) ----------------------------


@durable.activity(name="simflows.add")
def add(acc: int, i: int) -> int:
    return acc + i


@durable.workflow(name="simflows.chain")
def chain(n: int):
    acc = 0
    for i in range(n):
        acc = yield add(acc, i)
    return acc


# --- a saga: a step that always fails, then compensation --------------------------

INVENTORY = Ledger(expected=("reserve", "release"))


class PaymentDeclinedError(Exception):
    pass


@durable.activity(name="simflows.reserve")
def reserve(item: str) -> str:
    return INVENTORY.apply(durable.activity_info().idempotency_key, "reserve", item)


@durable.activity(name="simflows.charge_card", retries=1, initial_backoff="10s")
def charge_card(amount: int) -> str:
    raise PaymentDeclinedError(f"card declined for {amount}")


@durable.activity(name="simflows.release")
async def release(hold: str) -> None:
    INVENTORY.apply(durable.activity_info().idempotency_key, "release", hold)


@durable.workflow(name="simflows.book_trip")
def book_trip(item: str, amount: int):
    hold = yield reserve(item)
    try:
        yield charge_card(amount)
    except durable.ActivityError as exc:
        yield release(hold)
        error = exc.type_name.rsplit(".", 1)[-1]
        return f"compensated {hold} after {error}: {exc.message} ({exc.attempts} attempts)"
    return "booked"


# --- retries with backoff, a hung attempt, a slow attempt --------------------------


@durable.activity(name="simflows.flaky_fetch", retries=3, initial_backoff="1h", max_backoff=None)
def flaky_fetch(url: str) -> str:
    return f"content of {url} (attempt {durable.activity_info().attempt})"


@durable.workflow(name="simflows.fetch_with_retries")
def fetch_with_retries(url: str):
    body = yield flaky_fetch(url)
    return body


@durable.activity(name="simflows.lookup", retries=2, timeout="5s", initial_backoff="1s")
async def lookup(key: str) -> str:
    return f"{key.upper()} (attempt {durable.activity_info().attempt})"


@durable.workflow(name="simflows.lookup_with_timeout")
def lookup_with_timeout(key: str):
    value = yield lookup(key)
    return value


@durable.activity(name="simflows.render", timeout="1m")
def render(doc: str) -> str:
    return f"<p>{doc}</p>"


@durable.workflow(name="simflows.render_slowly")
def render_slowly(doc: str):
    html = yield render(doc)
    return html


# --- a workflow that fails: its failure is the reference outcome -----------------


class OutOfStockError(Exception):
    pass


@durable.activity(name="simflows.check_stock")
def check_stock(item: str) -> int:
    return 0


@durable.workflow(name="simflows.sell")
def sell(item: str):
    count = yield check_stock(item)
    if count == 0:
        raise OutOfStockError(f"{item} is out of stock")
    return count


# --- an async activity (sleeping in virtual time) and a sync one ------------------


@durable.activity(name="simflows.double_async")
async def double_async(x: int) -> int:
    await trio.sleep(10)
    return 2 * x


@durable.activity(name="simflows.increment_sync")
def increment_sync(x: int) -> int:
    return x + 1


@durable.workflow(name="simflows.mixed")
def mixed(x: int):
    doubled = yield double_async(x)
    incremented = yield increment_sync(doubled)
    return [doubled, incremented]
