"""An order-fulfilment workflow of 20-odd steps, for the real-process crash tests.

It loops over the order's items (two steps per item), branches on the coupon and
on the total, then loops over parcels. Async activities sleep on trio, sync ones
sleep in their worker thread, so a run lasts long enough for a kill sent at a
random time to land in the middle of it.

Every activity applies exactly one effect through the ``FakeService`` of
``examples/process_order.py``: one fsynced JSON line per idempotency key in
``<ledger dir>/<service>.jsonl``, where a repeated key gets the first response
back instead of a second effect. The ledger directory comes from the
environment variable ``CRASH_LEDGERS``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import trio

import durable

#: How long each activity takes before its effect, in seconds.
STEP_DELAY = 0.004
PARCEL_SIZE = 3


def _load_example_services() -> Any:
    """The fake services of ``examples/process_order.py``, the same code the example uses."""
    path = Path(__file__).resolve().parents[2] / "examples" / "process_order.py"
    spec = importlib.util.spec_from_file_location("crash_fulfil_example_services", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FakeService


FakeService = _load_example_services()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _price(item: str) -> int:
    return 20 + int(_digest(item)[:4], 16) % 80


LEDGERS = os.environ.get("CRASH_LEDGERS", ".durable/crash-services")
warehouse = FakeService("warehouse", LEDGERS)
pricing = FakeService("pricing", LEDGERS)
orders = FakeService("orders", LEDGERS)
payments = FakeService("payments", LEDGERS)
shipping = FakeService("shipping", LEDGERS)
mailer = FakeService("mailer", LEDGERS)


def _key() -> str:
    return durable.activity_info().idempotency_key


@durable.activity
def reserve_stock(order_id: str, items: list[str]) -> str:
    time.sleep(STEP_DELAY)
    return str(warehouse.apply(_key(), {"order": order_id, "items": items})["id"])


@durable.activity
async def quote_price(item: str) -> int:
    await trio.sleep(STEP_DELAY)
    pricing.apply(_key(), {"item": item})
    return _price(item)


@durable.activity
def add_line(order_id: str, item: str, price: int) -> str:
    time.sleep(STEP_DELAY)
    return str(orders.apply(_key(), {"order": order_id, "item": item, "price": price})["id"])


@durable.activity
async def redeem_coupon(coupon: str, total: int) -> int:
    await trio.sleep(STEP_DELAY)
    pricing.apply(_key(), {"coupon": coupon, "total": total})
    return total // 10


@durable.activity
def flag_for_review(order_id: str, total: int) -> None:
    time.sleep(STEP_DELAY)
    orders.apply(_key(), {"review": order_id, "total": total})


@durable.activity(retries=2)
def charge(order_id: str, amount: int) -> str:
    time.sleep(STEP_DELAY)
    return str(payments.apply(_key(), {"order": order_id, "amount": amount})["id"])


@durable.activity
async def pack_parcel(order_id: str, items: list[str]) -> str:
    await trio.sleep(STEP_DELAY)
    return str(warehouse.apply(_key(), {"order": order_id, "pack": items})["id"])


@durable.activity
def book_courier(order_id: str, parcels: list[str]) -> str:
    time.sleep(STEP_DELAY)
    return str(shipping.apply(_key(), {"order": order_id, "parcels": parcels})["id"])


@durable.activity
async def send_receipt(customer: str, message: str) -> None:
    await trio.sleep(STEP_DELAY)
    mailer.apply(_key(), {"to": customer, "message": message})


@durable.workflow
def fulfil_order(order_id: str, customer: str, items: list[str], coupon: str | None):  # type: ignore[no-untyped-def]
    """Reserve, price each item, maybe discount and review, charge, pack, ship, email."""
    reservation = yield reserve_stock(order_id, items)
    total = 0
    lines = []
    for item in items:
        price = yield quote_price(item)
        lines.append((yield add_line(order_id, item, price)))
        total += price
    if coupon is not None:
        total -= yield redeem_coupon(coupon, total)
    if total > 300:
        yield flag_for_review(order_id, total)
    payment = yield charge(order_id, total)
    parcels = []
    for start in range(0, len(items), PARCEL_SIZE):
        parcels.append((yield pack_parcel(order_id, items[start : start + PARCEL_SIZE])))
    tracking = yield book_courier(order_id, parcels)
    yield send_receipt(customer, f"Order {order_id}: {total} charged ({payment}), tracking {tracking}")
    return {
        "reservation": reservation,
        "lines": lines,
        "total": total,
        "payment": payment,
        "parcels": parcels,
        "tracking": tracking,
    }
