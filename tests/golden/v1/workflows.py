"""The workflows the golden journals of format v1 were recorded from.

Every ``*.journal`` file next to this module was written by a real
``durable.run`` on a :class:`durable.FileStore`, running one of the cases in
:data:`CASES`. ``tests/test_golden.py`` replays each file with today's code and
checks the outcome recorded in ``expected.json``.

Rules for this module, because committed journals depend on it:

* Never change what a workflow yields or with which arguments, nor a journal
  name (``name=``): the journals must keep replaying without divergence.
* Add new workflows and cases freely (then record them with
  ``tests/golden/make_golden.py``).

The "external services" are in-memory fakes that count their calls in
:data:`CALLS`, so a test can prove that replay never executes a completed step
again. Call :func:`reset` before each run.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import hashlib
import uuid
from typing import Any

import attrs

import durable
from durable.codecs import AesGcm, Zlib

#: Calls of each activity since the last :func:`reset`, by journal name.
CALLS: collections.Counter[str] = collections.Counter()


class FakeService:
    """An external API that applies each idempotency key once and repeats its first response."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.effects: dict[str, dict[str, Any]] = {}

    def apply(self, key: str, request: dict[str, Any]) -> str:
        if key not in self.effects:
            digest = hashlib.sha256(key.encode()).hexdigest()[:10]
            self.effects[key] = {"request": request, "id": f"{self.name[:3]}_{digest}"}
        return str(self.effects[key]["id"])


payments = FakeService("payments")
mailer = FakeService("mailer")
refunds = FakeService("refunds")


#: Whether the label printer of ``golden.v1.ship`` is broken (fixed before its retry).
PRINTER = {"broken": True}


def reset() -> None:
    """Forget every call and effect (the services start empty; the printer broken)."""
    CALLS.clear()
    PRINTER["broken"] = True
    for service in (payments, mailer, refunds):
        service.effects.clear()


def _called(name: str) -> durable.ActivityInfo:
    CALLS[name] += 1
    return durable.activity_info()


# --- the smallest run: one step (the annotated dump in docs/journal-v1.md) -


@durable.activity(name="golden.v1.twice")
def twice(x: int) -> int:
    _called("golden.v1.twice")
    return 2 * x


@durable.workflow(name="golden.v1.double")
def double(x: int):  # type: ignore[no-untyped-def]
    y = yield twice(x)
    return y


# --- the order workflow (like examples/process_order.py) -------------------


@durable.activity(name="golden.v1.charge_payment", retries=3, timeout="30s", initial_backoff="1ms")
def charge_payment(amount: int, token: str) -> str:
    info = _called("golden.v1.charge_payment")
    return payments.apply(info.idempotency_key, {"amount": amount, "token": token})


@durable.activity(name="golden.v1.send_email")
async def send_email(user: str, message: str) -> None:
    info = _called("golden.v1.send_email")
    mailer.apply(info.idempotency_key, {"to": user, "message": message})


@durable.workflow(name="golden.v1.process_order")
def process_order(customer: str, amount: int, card_tok: str):  # type: ignore[no-untyped-def]
    payment_id = yield charge_payment(amount, card_tok)
    yield send_email(customer, "Receipt for " + payment_id).with_options(retries=5)
    return payment_id


# --- a retried activity: fails twice, then succeeds ------------------------


@durable.activity(name="golden.v1.fetch_rate", retries=3, initial_backoff="1ms", backoff=1.0)
def fetch_rate(currency: str) -> dict[str, Any]:
    info = _called("golden.v1.fetch_rate")
    if info.attempt <= 2:
        raise ConnectionError(f"rate service unavailable (attempt {info.attempt})")
    return {"currency": currency, "rate": decimal.Decimal("1.0825")}


@durable.workflow(name="golden.v1.convert")
def convert(amount_cents: int, currency: str):  # type: ignore[no-untyped-def]
    quote = yield fetch_rate(currency)
    converted = (decimal.Decimal(amount_cents) * quote["rate"]).quantize(decimal.Decimal(1))
    return {"currency": currency, "amount_cents": int(converted)}


# --- retries exhausted, compensation in `except durable.ActivityError` -----


class OutOfStock(Exception):
    """The warehouse has none left."""


@durable.activity(name="golden.v1.reserve_stock", retries=1, initial_backoff="1ms")
def reserve_stock(sku: str, quantity: int) -> str:
    _called("golden.v1.reserve_stock")
    raise OutOfStock(f"{sku} is out of stock (wanted {quantity})")


@durable.activity(name="golden.v1.refund_payment")
def refund_payment(payment_id: str) -> str:
    info = _called("golden.v1.refund_payment")
    return refunds.apply(info.idempotency_key, {"payment": payment_id})


@durable.workflow(name="golden.v1.book_order")
def book_order(customer: str, sku: str, amount: int, card_tok: str):  # type: ignore[no-untyped-def]
    payment_id = yield charge_payment(amount, card_tok)
    try:
        reservation = yield reserve_stock(sku, 1)
    except durable.ActivityError as err:
        refund_id = yield refund_payment(payment_id)
        return {
            "status": "refunded",
            "customer": customer,
            "payment": payment_id,
            "refund": refund_id,
            "error_type": err.type_name,
            "error_message": err.message,
            "attempts": err.attempts,
        }
    return {"status": "booked", "payment": payment_id, "reservation": reservation}


# --- a failed workflow: it raises ------------------------------------------


@durable.activity(name="golden.v1.lookup_customer")
def lookup_customer(customer: str) -> dict[str, Any]:
    _called("golden.v1.lookup_customer")
    return {"customer": customer, "limit": 1000}


@durable.workflow(name="golden.v1.validate_order")
def validate_order(customer: str, amount: int):  # type: ignore[no-untyped-def]
    profile = yield lookup_customer(customer)
    if amount > profile["limit"]:
        raise ValueError(f"order of {amount} exceeds the limit {profile['limit']} of {customer!r}")
    return "valid"


# --- every journal value type, through arguments and a result --------------


@durable.activity(name="golden.v1.echo")
def echo(value: Any) -> Any:
    _called("golden.v1.echo")
    return value


@durable.workflow(name="golden.v1.echo_values")
def echo_values(values: dict[str, Any], *, label: str):  # type: ignore[no-untyped-def]
    echoed = yield echo(values)
    return {"label": label, "echoed": echoed}


def _label(prefix: str) -> str:
    return f"{prefix}-label"


@durable.workflow(name="golden.v1.primitives")
def primitives(name: str):  # type: ignore[no-untyped-def]
    started = yield durable.now()
    number = yield durable.random()
    ident = yield durable.uuid4()
    label = yield durable.side_effect(_label, name)
    yield durable.sleep("10ms")
    if (yield durable.patched("golden-patch")):
        doubled = yield twice(3)
    else:
        doubled = 0
    return {
        "started": started.isoformat(),
        "number": number,
        "uuid": str(ident),
        "label": label,
        "doubled": doubled,
    }


@durable.workflow(name="golden.v1.fan_out")
def fan_out(x: int):  # type: ignore[no-untyped-def]
    both = yield durable.gather(twice(x), twice(x + 1))
    index, first = yield durable.race(twice(x + 2), durable.sleep("1h"))
    return {"both": both, "winner": index, "first": first}


@durable.workflow(name="golden.v1.approval")
def approval(order: str):  # type: ignore[no-untyped-def]
    decision = yield durable.wait_signal("decision", timeout="1h")
    doubled = yield twice(len(decision))
    return {"order": order, "decision": decision, "doubled": doubled}


@durable.workflow(name="golden.v1.cancellable")
def cancellable(x: int):  # type: ignore[no-untyped-def]
    try:
        yield durable.wait_signal("never", timeout="1h")
    except durable.Cancelled:
        yield twice(x)
        raise


@durable.workflow(name="golden.v1.looper")
def looper(n: int):  # type: ignore[no-untyped-def]
    n = yield twice(n)
    if n < 20:
        yield durable.continue_as_new(n)
    return n


@durable.workflow(name="golden.v1.family")
def family(x: int):  # type: ignore[no-untyped-def]
    doubled = yield fan_out(x)
    try:
        yield validate_order("nobody", x * 1000)
    except durable.ChildWorkflowError as error:
        return [doubled, error.type_name]
    return [doubled, None]


# Sets hold only small ints: their CBOR order does not depend on the process's hash seed.
ECHO_VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "int": -7,
    "uint64": 2**64 - 1,
    "bignum": 2**70,
    "negative_bignum": -(2**70),
    "float": 1.5,
    "float64": 0.1,
    "text": "h\u00e9llo \u2603",
    "bytes": b"\x00\xd5J\xff",
    "list": [1, [2, "three"]],
    "tuple": (1, 2),
    "dict": {"nested": {"n": 1}, "empty": {}},
    "int_keys": {1: "one", 2: "two"},
    "set": {3, 1, 2},
    "frozenset": frozenset({7}),
    "datetime_utc": datetime.datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=datetime.UTC),
    "datetime_offset": datetime.datetime(
        2024, 5, 1, 14, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    ),
    "date": datetime.date(2024, 5, 1),
    "decimal": decimal.Decimal("-12.340"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


# --- the cases -------------------------------------------------------------


@attrs.frozen
class Case:
    """One golden journal: the run that wrote it.

    Attributes:
        run_id: the run's id; the file is ``<run_id>.journal``.
        workflow: the workflow it ran.
        args, kwargs: the arguments it was started with.
        cut_after_scheduled: for an unfinished run, keep the journal only up to the end
            of the ``ActivityScheduled`` record of this step (the process "died" while it ran).
        resume: for a resumed run, record the cut journal, then run it again to its end.
        codec: the payload codecs of the store it was recorded in (journal contract v1, 8.2).
    """

    run_id: str
    workflow: durable.Workflow[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    cut_after_scheduled: int | None = None
    resume: bool = False
    signals: tuple[tuple[str, Any], ...] = ()
    cancel: str | None = None
    codec: Any = None
    #: Send the signals only once the run waits for one (its SignalAwaited is journaled).
    signal_when_waiting: bool = False
    #: For a failed run retried (``durable retry``): fix what failed, then retry with
    #: this reason and run it to its end (see make_golden.run_case).
    retry: str | None = None


# --- a failed run retried (RunRetried: the failure superseded, the step run again) ----


@durable.activity(name="golden.v1.pack")
def pack(order: str) -> str:
    _called("golden.v1.pack")
    return f"box-{order}"


@durable.activity(name="golden.v1.print_label", retries=1, initial_backoff="1ms")
def print_label(box: str) -> str:
    info = _called("golden.v1.print_label")
    if PRINTER["broken"]:
        raise OSError("label printer jammed")
    return f"label-{box}-attempt-{info.attempt}"


@durable.workflow(name="golden.v1.ship")
def ship(order: str):  # type: ignore[no-untyped-def]
    box = yield pack(order)
    label = yield print_label(box)
    return [box, label]


# --- heartbeats (AttemptHeartbeat: the details the next attempt reads) ---------------


@durable.activity(name="golden.v1.upload", retries=1, initial_backoff="1ms")
def upload(parts: int) -> str:
    info = _called("golden.v1.upload")
    start = (info.heartbeat_details or {"done": 0})["done"]
    for done in range(start + 1, parts + 1):
        durable.heartbeat({"done": done})
        if info.attempt == 1 and done == 2:
            raise ConnectionError("upload connection reset")
    return f"uploaded {parts} parts, resumed from part {start}"


@durable.workflow(name="golden.v1.transfer")
def transfer(parts: int):  # type: ignore[no-untyped-def]
    return (yield upload(parts))


# --- typed values (journal contract v1, section 8.1: tag 27) ---------------------------


class Plan(enum.Enum):
    BASIC = "basic"
    PRO = "pro"


@dataclasses.dataclass(frozen=True)
class Price:
    amount: decimal.Decimal
    currency: str = "EUR"


@attrs.frozen
class Subscriber:
    name: str
    plan: Plan
    price: Price
    renews_every: datetime.timedelta
    remind_at: datetime.time
    tags: frozenset[str] = frozenset()


SUBSCRIBER = Subscriber(
    "grace",
    Plan.PRO,
    Price(decimal.Decimal("9.90")),
    datetime.timedelta(days=30),
    datetime.time(9, 15),
    frozenset({"early", "annual"}),
)


@durable.activity(name="golden.v1.renew")
def renew(subscriber: Subscriber, on: datetime.date) -> tuple[Price, datetime.date]:
    _called("renew")
    return subscriber.price, on + subscriber.renews_every


@durable.workflow(name="golden.v1.subscription")
def subscription(subscriber: Subscriber, on: datetime.date):  # type: ignore[no-untyped-def]
    price, next_on = yield renew(subscriber, on)
    return {"price": price, "next": next_on, "plan": subscriber.plan, "tags": subscriber.tags}


# --- payload codecs (journal contract v1, section 8.2) ---------------------------------

#: A key for the golden journals only: published here, so it protects nothing.
GOLDEN_KEY = bytes(range(32))
ZLIB = Zlib()
ENCRYPTED = [Zlib(), AesGcm({"golden-2026-12": GOLDEN_KEY})]


CASES: dict[str, Case] = {
    case.run_id: case
    for case in [
        Case("double", double, (21,)),
        Case("order-completed", process_order, ("alice", 4200, "tok_visa")),
        Case("convert-retried", convert, (10_000, "USD")),
        Case("book-compensated", book_order, ("carol", "sku-7", 1999, "tok_mc")),
        Case("validate-failed", validate_order, ("dave", 5000)),
        Case("order-unfinished", process_order, ("erin", 800, "tok_amex"), cut_after_scheduled=1),
        Case("order-resumed", process_order, ("frank", 950, "tok_visa"), cut_after_scheduled=1, resume=True),
        Case("echo-values", echo_values, (ECHO_VALUES,), {"label": "all v1 value types"}),
        Case("primitives", primitives, ("gold",)),
        Case("fan-out", fan_out, (5,)),
        Case("approval", approval, ("o-9",), signals=(("decision", "approved"),)),
        Case("cancelled", cancellable, (4,), cancel="golden reason"),
        Case("continued", looper, (3,)),
        Case("family", family, (4,)),
        Case("typed-values", subscription, (SUBSCRIBER, datetime.date(2026, 12, 5))),
        Case("codec-zlib", approval, ("o-10",), signals=(("decision", "approved"),), codec=ZLIB),
        Case(
            "codec-encrypted",
            subscription,
            (SUBSCRIBER, datetime.date(2026, 12, 5)),
            codec=ENCRYPTED,
        ),
        Case("ship-retried", ship, ("o-1",), retry="printer fixed"),
        Case("transfer-heartbeats", transfer, (3,)),
        Case(
            "approval-awaited",
            approval,
            ("o-11",),
            signals=(("decision", "approved"),),
            signal_when_waiting=True,
        ),
    ]
}
