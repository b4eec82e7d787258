"""Workflows that are wrong on purpose: the simulator must catch every one of them.

Each hides its bug at step 1 (step 0 is an innocent stock check), so a report
that names the step can be checked for naming the right one.
"""

from __future__ import annotations

import random
import time
import uuid

import durable

from .fakes import Ledger

_LOADED_AT = time.time()


@durable.activity(name="simflows.bad.check_stock")
def check_stock(item: str) -> int:
    return 3


# --- reads the wall clock and branches on it ---------------------------------------


@durable.activity(name="simflows.bad.ship_express")
def ship_express(item: str) -> str:
    return f"{item} by express"


@durable.activity(name="simflows.bad.ship_standard")
def ship_standard(item: str) -> str:
    return f"{item} by standard post"


@durable.workflow(name="simflows.bad.ship_by_clock")
def ship_by_clock(item: str):
    yield check_stock(item)
    if time.time() - _LOADED_AT < 86400:  # BUG: the wall clock, read in workflow code
        how = yield ship_express(item)
    else:
        how = yield ship_standard(item)
    return how


# --- passes random.random() to an activity ----------------------------------------


@durable.activity(name="simflows.bad.record_sample")
def record_sample(x: float) -> float:
    return round(x, 6)


@durable.workflow(name="simflows.bad.sample_randomly")
def sample_randomly(item: str):
    yield check_stock(item)
    stored = yield record_sample(random.random())  # BUG: random in workflow code
    return stored


# --- keeps state in a module global that replay does not rebuild ------------------

_RATES: dict[str, float] = {}


@durable.activity(name="simflows.bad.fetch_rate")
def fetch_rate(currency: str) -> float:
    _RATES[currency] = 1.25  # BUG: the workflow reads this global, not the journaled result
    return 1.25


@durable.activity(name="simflows.bad.convert")
def convert(amount: float) -> float:
    return amount


@durable.workflow(name="simflows.bad.convert_with_global")
def convert_with_global(amount: int, currency: str):
    yield fetch_rate(currency)
    rate = _RATES.pop(currency, 1.0)  # replay feeds fetch_rate from the journal: the global stays empty
    converted = yield convert(round(amount * rate, 2))
    return converted


# --- an activity with a non-idempotent effect ------------------------------------

LEDGER = Ledger(expected=("payment",))


@durable.activity(name="simflows.bad.pay")
def pay(amount: int) -> str:
    LEDGER.append("payment", f"{amount} paid")  # BUG: ignores activity_info().idempotency_key
    return f"paid {amount}"


@durable.activity(name="simflows.bad.notify")
def notify(receipt: str) -> None:
    return None


@durable.workflow(name="simflows.bad.pay_without_key")
def pay_without_key(amount: int):
    receipt = yield pay(amount)
    yield notify(receipt)
    return receipt


# --- uuid.uuid4() in workflow code -------------------------------------------------


@durable.activity(name="simflows.bad.create_order")
def create_order(order_id: str) -> str:
    return f"order {order_id}"


@durable.workflow(name="simflows.bad.order_with_uuid4")
def order_with_uuid4(item: str):
    yield check_stock(item)
    created = yield create_order(str(uuid.uuid4()))  # BUG: use durable.uuid4 / an activity
    return created


# --- iterates a set of strings (caught by the replay under other hash seeds) ------

USERS = [f"user-{i:02d}" for i in range(12)]


@durable.activity(name="simflows.bad.notify_user")
def notify_user(user: str) -> None:
    return None


@durable.workflow(name="simflows.bad.notify_in_set_order")
def notify_in_set_order(users: list[str]):
    yield check_stock("newsletter")
    for user in set(users):  # BUG: set order depends on the interpreter's hash seed
        yield notify_user(user)
    return len(users)
