"""Replay: how fast a journal of completed activities turns back into a suspended workflow.

Run it with ``.venv/bin/python bench/bench_replay.py`` (``--help`` for options).

Theory of operation
-------------------
The journal is built once per size by a real run: ``durable.run`` of the
``steps`` workflow with ``n + 1`` activities on a ``FileStore(sync="none")``,
cut just before the completion of the last activity. That is the journal a
crash leaves when it strikes while the last step is in flight: ``RunStarted``,
``n`` activities scheduled and completed, and the last one scheduled
(``2n + 2`` events). Three figures come from it:

(a) scan: ``durable.lowlevel.scan`` (``durable._core.codec.scan``) of the journal's bytes (framing, CRC32,
    CBOR decoding, event values);
(b) replay core: the scanned events fed to a ``durable.lowlevel.Replay`` by
    ``durable.lowlevel.replay``, the loop a runtime resumes a run with
    (generator sends, command matching, decoding of the recorded results);
(a+b) the two together, which is what SPEC §8 calls replaying the journal;
(c) resume: ``durable.run`` of the same run id on a fresh copy of the cut
    journal: a Runtime reads and opens the run (locking, scanning, one
    fdatasync), replays it, runs the last activity live and completes the run.

Each is timed at 1,000 and 10,000 activities; their ratio shows whether
replay grows linearly (a ratio near 10) or worse.

The floors under replay are measured too: one CBOR decode per record (two
records per activity, plus the recorded result), one CBOR encode of the
arguments the workflow passes again, and one ``gen.send``.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _harness as h
import attrs
import cbor2

import durable
from durable import lowlevel
from durable._core import codec as _codec
from durable.lowlevel import Replay

RUN_ID = "replay"
SIZES = (1_000, 10_000)


class Journal:
    """A cut journal of ``n`` completed activities plus the last one in flight."""

    def __init__(self, n: int, base: str | None) -> None:
        self.n = n
        with tempfile.TemporaryDirectory(dir=base) as directory:
            store = durable.FileStore(directory, sync="none")
            durable.run(h.steps, n + 1, id=RUN_ID, store=store)
            data = Path(store.journal_path(RUN_ID)).read_bytes()
        self.offsets = _record_offsets(data)
        # Drop the last ActivityCompleted and the RunCompleted.
        self.data = data[: self.offsets[-2]]
        self.offsets = self.offsets[:-2]
        self.events = lowlevel.scan(self.data, "<bench>").events
        last = self.events[-1]
        if len(self.events) != 2 * n + 2 or not (
            isinstance(last, lowlevel.ActivityScheduled) and last.seq == n
        ):
            raise RuntimeError(f"the cut journal does not hold {n} completed activities: {last!r}")

    def payloads(self) -> list[bytes]:
        """The CBOR payload of every record."""
        out = []
        for offset in self.offsets:
            (length,) = struct.unpack_from("<I", self.data, offset + 2)
            start = offset + _codec.FRAME_SIZE
            out.append(self.data[start : start + length])
        return out


def _record_offsets(data: bytes) -> list[int]:
    offsets = []
    pos = lowlevel.HEADER_SIZE
    while pos < len(data):
        offsets.append(pos)
        (length,) = struct.unpack_from("<I", data, pos + 2)
        pos += _codec.FRAME_SIZE + length
    return offsets


# --- the measurements: each returns the seconds of one timed call ----------


def feed(events: Sequence[lowlevel.Event]) -> Replay:
    """A replay core fed every event: the workflow suspended where the journal ends
    (``lowlevel.replay``, the loop a runtime resumes a run with)."""
    return lowlevel.replay(h.steps, events)


def scan_once(journal: Journal) -> Callable[[], float]:
    return lambda: h.timed(lambda: lowlevel.scan(journal.data, "<bench>"))


def replay_once(journal: Journal) -> Callable[[], float]:
    core = feed(journal.events)
    if core.outcome is not None or list(core.pending) != [journal.n]:
        raise RuntimeError(f"replay did not stop at step {journal.n}: {core.pending!r}")
    return lambda: h.timed(lambda: feed(journal.events))


def scan_and_replay_once(journal: Journal) -> Callable[[], float]:
    return lambda: h.timed(lambda: feed(lowlevel.scan(journal.data, "<bench>").events))


def resume_once(journal: Journal, base: str | None) -> Callable[[], float]:
    expected = journal.n * (journal.n + 1) // 2

    def once() -> float:
        with tempfile.TemporaryDirectory(dir=base) as directory:
            store = durable.FileStore(directory, sync="none")
            _write_journal(Path(store.journal_path(RUN_ID)), journal.data)
            result: list[Any] = []
            elapsed = h.timed(
                lambda: result.append(durable.run(h.steps, journal.n + 1, id=RUN_ID, store=store))
            )
            if result != [expected]:
                raise RuntimeError(f"resume returned {result!r}, not {expected}")
            return elapsed

    return once


def _write_journal(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# --- floors ----------------------------------------------------------------
#
# What replaying one activity cannot avoid with cbor2: decode its two records
# and its result, encode the arguments the workflow passes again, one gen.send.
# Plain cbor2.loads / cbor2.dumps, without durable's tag and type checks.


class Floor:
    """The floor operations over a whole journal, each in its own loop."""

    def __init__(self, journal: Journal) -> None:
        self.payloads = journal.payloads()
        self.results = [e.result for e in journal.events if isinstance(e, lowlevel.ActivityCompleted)]
        self.calls = [[(i,), {}] for i in range(journal.n)]
        self.n = journal.n

    def decode_records(self) -> None:
        for payload in self.payloads:
            cbor2.loads(payload)

    def decode_results(self) -> None:
        for result in self.results:
            cbor2.loads(result)

    def encode_args(self) -> None:
        for call in self.calls:
            cbor2.dumps(call)

    def sends(self) -> None:
        gen = _echo_generator()
        next(gen)
        for i in range(self.n):
            gen.send(i)

    def everything(self) -> None:
        self.decode_records()
        self.decode_results()
        self.encode_args()
        self.sends()

    def parts(self) -> dict[str, tuple[Callable[[], None], int]]:
        """Each floor operation and how many times one loop performs it."""
        return {
            "cbor2.loads of one record": (self.decode_records, len(self.payloads)),
            "cbor2.loads of one result": (self.decode_results, len(self.results)),
            "cbor2.dumps of one call's [args, kwargs]": (self.encode_args, len(self.calls)),
            "gen.send of one value": (self.sends, self.n),
        }


def _echo_generator() -> Any:
    value = None
    while True:
        value = yield value


# --- report ----------------------------------------------------------------


def collect(*, repeats: int, base: str | None, quick: bool = False) -> list[h.Figure]:
    """Measure and print every replay figure; return those for the summary table."""
    del quick  # replay is fast at every size the spec names
    small, large = SIZES
    journals = {n: Journal(n, base) for n in SIZES}
    measurements: dict[str, Callable[[Journal], Callable[[], float]]] = {
        "scan": scan_once,
        "replay": replay_once,
        "both": scan_and_replay_once,
        "resume": lambda journal: resume_once(journal, base),
    }
    timings: dict[tuple[str, int], h.Timing] = {}
    ratios: dict[str, float] = {}
    for key, make in measurements.items():
        timings[key, small], timings[key, large] = h.measure_interleaved(
            [make(journals[small]), make(journals[large])], repeats=repeats
        )
        ratios[key] = h.median_ratio(timings[key, large], timings[key, small])

    figures: dict[tuple[str, int], h.Figure] = {}
    for n in SIZES:
        journal = journals[n]
        events = len(journal.events)
        h.header(f"replay of {n:,} completed activities ({events:,} events, {len(journal.data):,} bytes)")
        for key, what, count, unit, target in (
            ("scan", "(a) scan", events, "events/s", 250_000),
            ("replay", "(b) Replay core", events, "events/s", 250_000),
            ("both", "(a+b) scan + Replay", events, "events/s", 250_000),
            ("both", "(a+b) scan + Replay", n, "activities/s", 200_000),
            ("both", "(a+b) scan + Replay", n, "us per activity", 5),
            ("resume", "(c) resume via durable.run", n, "activities/s", 200_000),
            ("resume", "(c) resume via durable.run", n, "us per activity", 5),
        ):
            timing = timings[key, n]
            name = f"{what}: {unit}"
            if unit == "us per activity":
                figure = h.cost(name, count, timing, target)
            else:
                figure = h.rate(name, count, timing, unit, target, ">=")
            figures[key + " " + unit, n] = h.report(figure)

    h.header(f"growth: time({large:,}) / time({small:,}), repeat by repeat; linear is {large // small}")
    labels = {
        "scan": "(a) scan",
        "replay": "(b) Replay core",
        "both": "(a+b) scan + Replay",
        "resume": "(c) resume",
    }
    growth = {
        key: h.report(h.Figure(f"{label}: time ratio 10k/1k", ratios[key], "x", 12, "<="))
        for key, label in labels.items()
    }

    h.header(f"floor under replay: cbor2 and gen.send only (journal of {large:,})")
    floor = Floor(journals[large])
    for name, (loop, count) in floor.parts().items():
        h.report(
            h.Figure(
                name, h.median_seconds(lambda loop=loop: h.timed(loop), repeats=repeats) / count * 1e6, "us"
            )
        )
    floor_t, both_t = h.measure_interleaved(
        [lambda: h.timed(floor.everything), scan_and_replay_once(journals[large])], repeats=repeats
    )
    per_activity = h.report(
        h.Figure("floor per activity (2 records + result + args + send)", floor_t.median / large * 1e6, "us")
    )
    # Taken side by side, so it holds when the machine's speed drifts.
    multiple = h.report(
        h.Figure(
            "(a+b) scan + Replay as a multiple of that floor", h.median_ratio(both_t, floor_t), "x floor"
        )
    )

    def summary(figure: h.Figure) -> h.Figure:
        return attrs.evolve(figure, name=f"replay {large // 1000}k: {figure.name}")

    return [
        *(
            summary(figures[key, large])
            for key in (
                "scan events/s",
                "replay events/s",
                "both events/s",
                "both activities/s",
                "both us per activity",
                "resume activities/s",
                "resume us per activity",
            )
        ),
        summary(per_activity),
        summary(multiple),
        growth["both"],
        growth["resume"],
    ]


def main(argv: Sequence[str] | None = None) -> None:
    options = h.arguments(__doc__.splitlines()[0], argv)
    h.main_table(collect(repeats=options.repeats, base=options.dir, quick=options.quick))


if __name__ == "__main__":
    main()
