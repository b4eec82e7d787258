"""Typed values beside plain ones: what a dataclass argument and result cost, live and on replay.

Run it with ``.venv/bin/python bench/bench_typed.py`` (``--help`` for options).

Theory of operation
-------------------
Two workflows of N steps do the same work on the same data: each step passes
an order to an activity and gets one back. In ``plain_steps`` the order is a
dict ``{"sku": str, "quantity": int, "price": Decimal}``; in ``typed_steps``
it is the frozen dataclass ``Order`` with the same three fields, written by
name (journal contract v1, 8.1) and read back as an ``Order``. Measured in
turns (``measure_interleaved``):

(a) live: one run of N steps on the MemoryStore, from ``start`` to ``result``:
    steps per second;
(b) replay: ``scan`` + ``Replay`` of the run's journal cut before its end (what
    a recovery does before it goes on): µs per activity.

The ratio typed / plain is printed for each; SPEC §9's aim is at most 1.5x.
Nothing asserts.
"""

from __future__ import annotations

import dataclasses
import decimal
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import _harness as h
import trio

import durable
from durable import lowlevel


@dataclasses.dataclass(frozen=True)
class Order:
    sku: str
    quantity: int
    price: decimal.Decimal


@durable.activity
async def pass_plain(order: dict[str, Any]) -> dict[str, Any]:
    return order


@durable.activity
async def pass_typed(order: Order) -> Order:
    return order


@durable.workflow(name="bench.typed.plain")
def plain_steps(n: int) -> Any:
    order = {"sku": "sku-1", "quantity": 1, "price": decimal.Decimal("9.90")}
    for _ in range(n):
        order = yield pass_plain(order)
    return order["quantity"]


@durable.workflow(name="bench.typed.typed")
def typed_steps(n: int) -> Any:
    order = Order("sku-1", 1, decimal.Decimal("9.90"))
    for _ in range(n):
        order = yield pass_typed(order)
    return order.quantity


def live_once(workflow: durable.Workflow[..., Any], n: int) -> Callable[[], float]:
    async def main() -> float:
        async with durable.Runtime(durable.MemoryStore()) as runtime:
            start = time.perf_counter()
            await (await runtime.start(workflow, n, id="live")).result()
            return time.perf_counter() - start

    return lambda: trio.run(main)


def journal_of(workflow: durable.Workflow[..., Any], n: int) -> bytes:
    store = durable.MemoryStore()

    async def main() -> None:
        async with durable.Runtime(store) as runtime:
            await (await runtime.start(workflow, n, id="replay")).result()

    trio.run(main)
    return bytes(store.journals["replay"])


def replay_once(workflow: durable.Workflow[..., Any], data: bytes) -> Callable[[], float]:
    def once() -> float:
        start = time.perf_counter()
        events = lowlevel.scan(data, "<bench>").events[:-2]  # cut before the last step's end
        lowlevel.replay(workflow, events)
        return time.perf_counter() - start

    return once


def _ratio(name: str, typed: h.Timing, plain: h.Timing) -> h.Figure:
    ratio = statistics.median(t / p for t, p in zip(typed.times, plain.times, strict=True))
    return h.report(h.Figure(name, ratio, "x plain", 1.5, "<="))


def collect(*, repeats: int, base: str | None, quick: bool = False) -> list[h.Figure]:
    """Measure and print every figure, plain and typed in turns; return them."""
    del base  # the MemoryStore: CPU only
    n = 2_000 if quick else 10_000
    out: list[h.Figure] = []
    h.header(f"live, MemoryStore: {n:,} steps passing an order (a dict, a dataclass)")
    plain_t, typed_t = h.measure_interleaved(
        [live_once(plain_steps, n), live_once(typed_steps, n)], repeats=repeats
    )
    out.append(h.report(h.rate("live, dict order: steps/s", n, plain_t, "steps/s")))
    out.append(h.report(h.rate("live, dataclass order: steps/s", n, typed_t, "steps/s")))
    out.append(_ratio("live: time typed / plain", typed_t, plain_t))

    h.header(f"replay (scan + Replay): {n:,} activities")
    plain_data, typed_data = journal_of(plain_steps, n), journal_of(typed_steps, n)
    plain_t, typed_t = h.measure_interleaved(
        [replay_once(plain_steps, plain_data), replay_once(typed_steps, typed_data)], repeats=repeats
    )
    out.append(h.report(h.cost("replay, dict order: us per activity", n, plain_t, None, "ref")))
    out.append(h.report(h.cost("replay, dataclass order: us per activity", n, typed_t, None, "ref")))
    out.append(_ratio("replay: time typed / plain", typed_t, plain_t))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    options = h.arguments(__doc__.splitlines()[0], argv)
    print(h.environment())
    h.main_table(collect(repeats=options.repeats, base=options.dir, quick=options.quick))


if __name__ == "__main__":
    main()
