"""Application data in the journal: dataclasses, attrs classes, pydantic models, enums,
dates, times, durations, decimals, UUIDs, tuples and frozensets, as workflow and activity
arguments and results, signal payloads, side-effect values, child-workflow calls and
``continue_as_new`` arguments; the same value and type live and on replay; early errors
for what cannot be journaled; old journals still replaying; a crafted journal never
making durable instantiate a class the code did not name; tools that show typed values
without the application's code.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import attrs
import cbor2
import pydantic
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import durable
import sim
from durable._core import named
from durable._core.values import dumps, encode_call, loads, loads_shown, same_value


class Tier(enum.Enum):
    FREE = "free"
    PRO = "pro"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Money:
    amount: decimal.Decimal
    currency: str = "EUR"


@attrs.frozen
class Address:
    city: str
    zip_code: str | None = None


class Preferences(pydantic.BaseModel):
    newsletter: bool
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class User:
    id: uuid.UUID
    name: str
    tier: Tier
    balance: Money
    address: Address | None
    prefs: Preferences
    birthday: datetime.date
    wake_at: datetime.time
    trial: datetime.timedelta
    roles: frozenset[str] = frozenset()
    history: list[tuple[str, int]] = dataclasses.field(default_factory=list)


ADA = User(
    id=uuid.UUID(int=7),
    name="ada",
    tier=Tier.PRO,
    balance=Money(decimal.Decimal("12.50")),
    address=Address("London"),
    prefs=Preferences(newsletter=True, tags=("math",)),
    birthday=datetime.date(1815, 12, 10),
    wake_at=datetime.time(7, 30),
    trial=datetime.timedelta(days=14),
    roles=frozenset({"admin"}),
    history=[("signup", 1)],
)

SEEN: list[Any] = []


@durable.activity
async def upgrade(user: User, by: Money) -> User:
    SEEN.append((type(user), type(by)))
    total = Money(user.balance.amount + by.amount, by.currency)
    return dataclasses.replace(user, balance=total, history=[*user.history, ("upgrade", 2)])


@durable.activity
async def priority_of(user: User) -> Priority:
    return Priority.HIGH if user.tier is Tier.PRO else Priority.LOW


@durable.workflow(name="tests.typed.child")
def welcome(user: User, priority: Priority) -> Any:
    yield durable.sleep("1s")
    return (user.name, priority)


@durable.workflow(name="tests.typed.account")
def account(user: User, rounds: int = 1) -> Any:
    user = yield upgrade(user, Money(decimal.Decimal("1.25")))
    priority = yield priority_of(user)
    stamp = yield durable.side_effect(lambda: (Tier.FREE, datetime.timedelta(seconds=3)))
    greeting = yield welcome(user, priority)
    address = yield durable.wait_signal("address")
    if rounds > 1:
        yield durable.continue_as_new(dataclasses.replace(user, address=address), rounds - 1)
    return {"user": user, "priority": priority, "stamp": stamp, "greeting": greeting, "address": address}


def check_account(result: dict[str, Any]) -> None:
    user = result["user"]
    assert type(user) is User and type(user.balance) is Money and type(user.address) is Address
    assert user.balance == Money(decimal.Decimal("13.75"))
    assert type(user.prefs) is Preferences and user.prefs.tags == ("math",)
    assert type(user.roles) is frozenset and user.history == [("signup", 1), ("upgrade", 2)]
    assert type(user.history[0]) is tuple
    assert result["priority"] is Priority.HIGH
    assert result["stamp"] == (Tier.FREE, datetime.timedelta(seconds=3))
    assert result["greeting"] == ("ada", Priority.HIGH)
    assert result["address"] == Address("Paris", "75001")  # a signal payload, unannotated


async def test_typed_values_travel_live_and_through_a_recovery(tmp_path: Path) -> None:
    SEEN.clear()
    store = durable.FileStore(tmp_path)
    async with durable.Runtime(store) as runtime:  # leaves while the run waits
        await runtime.start(account, ADA, id="acct")
        while "ChildStarted" not in {type(e).__name__ for e in await store.read("acct") or []}:
            await trio.sleep(0.01)
    async with durable.Runtime(store) as runtime:  # replays every typed value, then goes on
        handle = {handle.run_id: handle for handle in await runtime.recover()}["acct"]
        await runtime.signal("acct", "address", Address("Paris", "75001"))
        check_account(await handle.result())
    assert set(SEEN) == {(User, Money)}


async def test_continue_as_new_carries_typed_arguments(tmp_path: Path) -> None:
    async with durable.Runtime(durable.FileStore(tmp_path)) as runtime:
        handle = await runtime.start(account, ADA, 2, id="twice")
        await runtime.signal("twice", "address", Address("Paris", "75001"))
        while (await runtime.store.read("twice"))[0].incarnation == 0:  # type: ignore[index, union-attr]
            await trio.sleep(0.01)
        await runtime.signal("twice", "address", Address("Paris", "75001"))
        result = await handle.result()
    assert result["user"].address == Address("Paris", "75001")  # carried by continue_as_new


def test_the_crash_simulator_passes_a_workflow_of_typed_values() -> None:
    report = sim.explore(typed_without_signal, ADA, max_crashes=1)
    assert report.ok, report.failure_text()
    assert report.schedules > 10


@durable.workflow(name="tests.typed.no_signal")
def typed_without_signal(user: User) -> Any:
    user = yield upgrade(user, Money(decimal.Decimal("1.25")))
    priority = yield priority_of(user)
    yield durable.sleep("1h")
    return (user.balance, priority, (yield welcome(user, priority)))


# --- early, clear errors ----------------------------------------------------------------


@dataclasses.dataclass
class Unnamed:
    value: int


@durable.activity
async def takes_anything(thing: Any) -> Any:
    return thing


@durable.workflow(name="tests.typed.passes_unnamed")
def passes_unnamed() -> Any:
    return (yield takes_anything({"items": [Unnamed(1)]}))


@durable.activity
async def returns_unnamed() -> Any:
    SEEN.append("returned")
    return {"made": Unnamed(2)}


@durable.workflow(name="tests.typed.gets_unnamed")
def gets_unnamed() -> Any:
    try:
        yield returns_unnamed()
    except durable.ActivityError as error:
        return error.message
    return "no error"


async def test_an_unnamed_class_is_refused_at_start_naming_its_path_and_the_fix() -> None:
    store = durable.MemoryStore()
    async with durable.Runtime(store) as runtime:
        with pytest.raises(durable.SerializationError) as refused:
            await runtime.start(welcome, Unnamed(1), Priority.LOW, id="y")
    assert not await store.read("y")  # nothing was written
    text = str(refused.value)
    assert "argument 1 of workflow 'tests.typed.child'" in text
    assert "durable.register(Unnamed)" in text


async def test_an_unnamed_class_in_an_activity_argument_is_refused_at_the_yield() -> None:
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        with pytest.raises(durable.WorkflowFailed) as failed:
            await (await runtime.start(passes_unnamed, id="p")).result()
    assert "value['items'][0] has type Unnamed" in str(failed.value)
    assert "durable.register(Unnamed)" in str(failed.value)


async def test_an_unnamed_class_in_a_result_fails_the_attempt_once_without_retrying() -> None:
    SEEN.clear()
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        message = await (await runtime.start(gets_unnamed, id="g")).result()
    assert SEEN == ["returned"]  # not retried: the same code would return the same value
    assert "value['made'] has type Unnamed" in message and "durable.register(Unnamed)" in message


def test_register_takes_only_classes_durable_can_write() -> None:
    with pytest.raises(TypeError, match="dataclasses, attrs classes, pydantic models and Enum"):
        durable.register(int)


# --- old journals and changed classes ---------------------------------------------------


@dataclasses.dataclass
class Order:
    sku: str
    quantity: int
    gift: bool = False  # added after journals without it were written


@durable.activity
async def place(order: Order) -> Order:
    return order


@durable.workflow(name="tests.typed.order")
def ordering(order: Order) -> Any:
    placed = yield place(order)
    yield durable.sleep("1h")
    return placed


def _journal_before_gift(tmp_path: Path, *, fields: dict[str, Any]) -> durable.FileStore:
    """A journal written when Order had no ``gift`` field: the run is at its timer."""
    from durable._core import events as ev  # noqa: PLC0415
    from durable._core.codec import encode_header, encode_record  # noqa: PLC0415

    old = cbor2.CBORTag(27, [named.name_of(Order), fields])
    events = [
        ev.RunStarted("old", "tests.typed.order", cbor2.dumps([[old], {}]), 1_700_000_000.0),
        ev.ActivityScheduled(0, "place", cbor2.dumps([[old], {}]), 1_700_000_000.0),
        ev.ActivityCompleted(0, cbor2.dumps(old), 1, 1_700_000_000.1),
        ev.TimerStarted(1, 3600.0, 1_700_003_600.2, 1_700_000_000.2),
    ]
    store = durable.FileStore(tmp_path)
    path = Path(store.journal_path("old"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_header() + b"".join(encode_record(e, i, i) for i, e in enumerate(events)))
    return store


async def test_a_journal_from_before_a_field_with_a_default_was_added_still_replays(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = _journal_before_gift(tmp_path, fields={"sku": "book", "quantity": 2})
    async with durable.Runtime(store) as runtime:
        result = await (await runtime.start(ordering, Order("book", 2), id="old")).result()
    assert result == Order("book", 2, gift=False)


async def test_a_journal_that_does_not_fit_todays_class_names_the_class_the_field_and_the_run(
    tmp_path: Path,
) -> None:
    store = _journal_before_gift(tmp_path, fields={"sku": "book", "quantity": 2, "wrapping": "red"})
    async with durable.Runtime(store) as runtime:
        (handle,) = await runtime.recover()
        with pytest.raises(durable.DurableError) as refused:
            await handle.result()
    text = str(refused.value)
    assert type(refused.value) is durable.SerializationError  # the journal is not damaged
    assert "'old'" in text and named.name_of(Order) in text and "'wrapping'" in text
    store = _journal_before_gift(tmp_path / "2", fields={"sku": "book"})
    async with durable.Runtime(store) as runtime:
        (handle,) = await runtime.recover()
        with pytest.raises(durable.SerializationError, match="the field 'quantity', which it lacks"):
            await handle.result()


def test_a_tuple_argument_journaled_as_a_list_is_the_same_call() -> None:
    old = cbor2.dumps([[["a", 1]], {}])
    assert same_value(old, encode_call((("a", 1),), {}, what="test"))


# --- a journal is data, never code -------------------------------------------------------


def test_a_crafted_journal_cannot_make_durable_instantiate_a_class_the_code_did_not_name() -> None:
    for name in ("os.system", "subprocess.Popen", "builtins.eval", named.name_of(Unnamed)):
        crafted = cbor2.dumps(cbor2.CBORTag(27, [name, {"args": "rm -rf /"}]))
        with pytest.raises(cbor2.CBORDecodeError, match=r"which no workflow, activity or durable\.register"):
            loads(crafted)
        shown = loads_shown(crafted)  # a tool shows it, as data
        assert isinstance(shown, named.Shown) and shown.name == name
        assert repr(shown) == f"{name.rpartition('.')[2]}(args='rm -rf /')"


@dataclasses.dataclass(frozen=True)
class VoucherOfTypedValuesTest:  # a qualname no other test or docs page uses
    code: str


durable.register(VoucherOfTypedValuesTest)

# A second class whose qualname is Money, as another module of an application may have.
SecondMoney = dataclasses.make_dataclass("Money", [("amount", int)], frozen=True)
SecondMoney.__module__ = "tests_elsewhere"
durable.register(SecondMoney)


def test_a_typed_value_written_by_a_script_reads_back_in_a_worker_that_imports_the_module() -> None:
    # `python app.py` writes __main__.X; a worker that imports `app` knows app.X.
    data = cbor2.dumps(cbor2.CBORTag(27, ["__main__.VoucherOfTypedValuesTest", {"code": "x"}]))
    assert loads(data) == VoucherOfTypedValuesTest("x")
    # Two named classes of that qualname: which one is meant cannot be told, so none is.
    with pytest.raises(cbor2.CBORDecodeError, match="which no workflow"):
        loads(cbor2.dumps(cbor2.CBORTag(27, ["__main__.Money", {"amount": 1}])))


def test_durable_show_renders_typed_values_without_importing_the_code(tmp_path: Path) -> None:
    module = tmp_path / "shop_types.py"
    module.write_text(
        textwrap.dedent(
            """
            import dataclasses
            import enum
            import durable

            class Tier(enum.Enum):
                PRO = "pro"

            @dataclasses.dataclass
            class Customer:
                name: str
                tier: Tier

            @durable.activity
            def load(name: str) -> Customer:
                return Customer(name, Tier.PRO)

            @durable.workflow
            def greet(name: str):
                customer = yield load(name)
                return customer
            """
        )
    )
    durable_bin = Path(sys.executable).parent / "durable"
    run = subprocess.run(
        [str(durable_bin), "run", "shop_types.py:greet", "ada", "--id", "g", "--store", "store"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "Customer(name='ada', tier=<Tier.PRO: 'pro'>)"
    module.unlink()  # the CLI reads the journal alone
    shown = subprocess.run(
        [str(durable_bin), "show", "g", "--store", "store"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "load('ada') → Customer(name='ada', tier=Tier('pro'))" in shown.stdout


# --- round trips of generated shapes ----------------------------------------------------

leaf = st.one_of(
    st.integers(),
    st.text(max_size=5),
    st.none(),
    st.dates(),
    st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.sampled_from(list(Tier)),
    st.sampled_from(list(Priority)),
)


@st.composite
def shapes(draw: st.DrawFn) -> Any:
    """A dataclass or attrs class made on the fly, registered, with a generated value."""
    count = draw(st.integers(1, 4))
    kinds = [draw(st.sampled_from(["leaf", "list", "tuple", "optional", "nested"])) for _ in range(count)]
    values: dict[str, Any] = {}
    for index, kind in enumerate(kinds):
        name = f"f{index}"
        if kind == "list":
            values[name] = draw(st.lists(leaf, max_size=3))
        elif kind == "tuple":
            values[name] = tuple(draw(st.lists(leaf, max_size=3)))
        elif kind == "optional":
            values[name] = draw(st.one_of(st.none(), st.just(Money(decimal.Decimal("1.5")))))
        elif kind == "nested":
            values[name] = Address(draw(st.text(max_size=5)))
        else:
            values[name] = draw(leaf)
    use_attrs = draw(st.booleans())
    fields = list(values)
    if use_attrs:
        cls = attrs.make_class(f"Shape{count}", {name: attrs.field() for name in fields})
    else:
        cls = dataclasses.make_dataclass(f"Shape{count}", fields)
    durable.register(cls)
    return cls(**values)


@given(shapes())
def test_generated_dataclass_and_attrs_shapes_round_trip_with_their_types(value: Any) -> None:
    back = loads(dumps({"value": value, "list": [value]}))
    assert back == {"value": value, "list": [value]}
    for name, item in named.fields(value).items():
        assert type(named.fields(back["value"])[name]) is type(item)


# --- pydantic models on their own --------------------------------------------------------


class Invoice(pydantic.BaseModel):
    number: int
    lines: list[tuple[str, decimal.Decimal]]
    paid: bool = False


@durable.activity
async def pay(invoice: Invoice) -> Invoice:
    return invoice.model_copy(update={"paid": True})


@durable.workflow(name="tests.typed.pydantic")
def settle(invoice: Invoice) -> Any:
    paid = yield pay(invoice)
    return paid, [paid]


async def test_a_pydantic_model_as_argument_and_result_comes_back_as_the_model() -> None:
    invoice = Invoice(number=7, lines=[("tea", decimal.Decimal("3.20"))])
    async with durable.Runtime(durable.MemoryStore()) as runtime:
        paid, listed = await (await runtime.start(settle, invoice, id="inv")).result()
    assert type(paid) is Invoice and paid.paid and paid.lines == [("tea", decimal.Decimal("3.20"))]
    assert type(paid.lines[0]) is tuple and listed == [paid]
    # A pydantic payload that fails the model's validation is a clear error, not a crash.
    bad = cbor2.dumps(cbor2.CBORTag(27, [named.name_of(Invoice), {"number": "seven", "lines": []}]))
    with pytest.raises(cbor2.CBORDecodeError, match="cannot be read into today's class: ValidationError"):
        loads(bad)
