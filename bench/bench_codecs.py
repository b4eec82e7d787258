"""Payload codecs: what compressing and encrypting every payload costs, live and on replay.

Run it with ``.venv/bin/python bench/bench_codecs.py`` (``--help`` for options).

Theory of operation
-------------------
One workflow of N steps passes an order (a dict of four fields, about 100 bytes
of CBOR) to an activity and gets it back, on a MemoryStore given each codec in
turn: none, ``Zlib()``, ``AesGcm`` (one 256-bit key), and both (compress, then
encrypt). Measured in turns (``measure_interleaved``):

(a) live: one run of N steps, from ``start`` to ``result``: steps per second;
    every step seals two payloads (the call's arguments and the result);
(b) replay: what a recovery does before it goes on: ``scan`` the journal, unseal
    every payload, and ``Replay`` it (cut before its last step's end): µs per
    activity.

Each figure is printed beside the same figure without a codec (the ratio
codec / none). Nothing asserts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import _harness as h
import trio

import durable
from durable import lowlevel
from durable.codecs import AesGcm, Zlib

KEY = bytes(range(32))
CODECS: dict[str, Any] = {
    "none": None,
    "zlib": Zlib(),
    "aes-gcm": AesGcm({"k1": KEY}),
    "zlib+aes-gcm": [Zlib(), AesGcm({"k1": KEY})],
}


@durable.activity
async def pass_order(order: dict[str, Any]) -> dict[str, Any]:
    return order


@durable.workflow(name="bench.codecs.steps")
def order_steps(n: int) -> Any:
    order = {"sku": "sku-1", "quantity": 1, "customer": "ada@example.com", "note": "leave at the door"}
    for _ in range(n):
        order = yield pass_order(order)
    return order["quantity"]


def live_once(codec: Any, n: int) -> Callable[[], float]:
    async def main() -> float:
        async with durable.Runtime(durable.MemoryStore(codec=codec)) as runtime:
            start = time.perf_counter()
            await (await runtime.start(order_steps, n, id="live")).result()
            return time.perf_counter() - start

    return lambda: trio.run(main)


def journal_of(codec: Any, n: int) -> bytes:
    store = durable.MemoryStore(codec=codec)

    async def main() -> None:
        async with durable.Runtime(store) as runtime:
            await (await runtime.start(order_steps, n, id="replay")).result()

    trio.run(main)
    return bytes(store.journals["replay"])


def replay_once(codec: Any, data: bytes) -> Callable[[], float]:
    payloads = lowlevel.payloads_from(codec)

    def once() -> float:
        start = time.perf_counter()
        events = lowlevel.scan(data, "<bench>").events[:-2]  # cut before the last step's end
        if payloads is not None:
            events = payloads.unseal_all(events, "replay")
        lowlevel.replay(order_steps, events)
        return time.perf_counter() - start

    return once


def _ratio(name: str, coded: h.Timing, plain: h.Timing) -> h.Figure:
    ratio = statistics.median(c / p for c, p in zip(coded.times, plain.times, strict=True))
    return h.report(h.Figure(name, ratio, "x none", None, "ref"))


def collect(*, repeats: int, base: str | None, quick: bool = False) -> list[h.Figure]:
    """Measure and print every figure, each codec in turns with none; return them."""
    del base  # the MemoryStore: CPU only
    n = 2_000 if quick else 10_000
    names = list(CODECS)
    out: list[h.Figure] = []
    h.header(f"live, MemoryStore: {n:,} steps passing an order (2 payloads sealed per step)")
    timings = h.measure_interleaved([live_once(CODECS[name], n) for name in names], repeats=repeats)
    for name, timing in zip(names, timings, strict=True):
        out.append(h.report(h.rate(f"live, codec {name}: steps/s", n, timing, "steps/s")))
    for name, timing in zip(names[1:], timings[1:], strict=True):
        out.append(_ratio(f"live: time {name} / none", timing, timings[0]))

    h.header(f"replay (scan + unseal + Replay): {n:,} activities")
    journals = [journal_of(CODECS[name], n) for name in names]
    timings = h.measure_interleaved(
        [replay_once(CODECS[name], data) for name, data in zip(names, journals, strict=True)],
        repeats=repeats,
    )
    for name, timing in zip(names, timings, strict=True):
        out.append(h.report(h.cost(f"replay, codec {name}: us per activity", n, timing, None, "ref")))
    for name, timing in zip(names[1:], timings[1:], strict=True):
        out.append(_ratio(f"replay: time {name} / none", timing, timings[0]))
    for name, data in zip(names, journals, strict=True):
        size = h.Figure(f"journal size, codec {name}: bytes per step", len(data) / n, "B", None, "ref")
        out.append(h.report(size))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    options = h.arguments(__doc__.splitlines()[0], argv)
    print(h.environment())
    h.main_table(collect(repeats=options.repeats, base=options.dir, quick=options.quick))


if __name__ == "__main__":
    main()
