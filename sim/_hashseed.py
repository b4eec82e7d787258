"""Which input made a workflow non-deterministic: isolated one perturbation at a time.

Theory of operation
-------------------
The crash schedules replay a workflow with *every* input of a process changed at
once (the wall clock moved, ``random`` and ``uuid4`` reseeded), so when one
diverges, it does not say which input the workflow reads. This module finds out
the way an experimenter would, changing one thing at a time:

1. the run is recorded again, in this process, with every input held still
   (:func:`held_inputs`: the clock frozen, ``random`` and ``uuid.uuid4`` seeded,
   ``datetime`` frozen in the workflow's module), its activities and children
   answered from the crash-free journal (:func:`record`): no activity runs;
2. that journal is replayed with the same inputs: a replay that diverges
   although nothing changed means the workflow reads state of its own process
   that the run changed, *module state* (a counter, a global);
3. it is replayed again with exactly one input changed, the wall clock, then
   ``random``, then ``uuid4``: a replay that diverges names its input.
4. The *hash seed* is fixed when an interpreter starts, so it needs child
   interpreters (:class:`HashSeedReplays`): each records the run with the same
   held inputs under its own ``PYTHONHASHSEED``, in a fresh interpreter (fresh
   module state), and their journals are compared with the one recorded under
   seed 0. If two interpreters under the *same* seed disagree, the difference
   is not the hash seed's, and it is not blamed.

Only an input whose change alone reproduces the divergence is named
(:class:`Cause`); when none does, the report says the cause was not isolated.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
import types
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

import durable
from durable.lowlevel import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CancelRequested,
    ChildCompleted,
    ChildStarted,
    Event,
    RunCompleted,
    RunStarted,
    SideEffectRecorded,
    SignalReceived,
    TimerStarted,
    encode_header,
    encode_record,
    loads_shown,
    replay,
    scan,
)

from ._stubbed import _Driver  # run_stubbed's driver, answering from a journal

#: How far the wall clock moves when it is the one input changed (as far as a restart
#: moves it in the crash schedules, and not a whole number of days or seconds).
CLOCK_SHIFT = 17 * 86400.0 + 0.125


@attrs.frozen
class Cause:
    """The input whose change alone made the workflow yield other commands on replay.

    Attributes:
        name: ``"wall clock"``, ``"random"``, ``"uuid"``, ``"hash seed"`` or ``"module state"``.
        evidence: how it was isolated (what changed, what diverged).
    """

    name: str
    evidence: str

    def text(self) -> str:
        """The ``Likely cause`` paragraph of a divergence: the cause, its evidence, the fix."""
        return f"Likely cause (isolated): the {self.name}. {self.evidence.rstrip()}\n{_ADVICE[self.name]}"


_ADVICE = {
    "wall clock": "The workflow reads the clock directly (time.time(), datetime.now()): take "
    "`now = yield durable.now()` instead, whose value is journaled and replayed.",
    "random": "The workflow draws from the random module directly: take `x = yield durable.random()` "
    "instead (journaled), or draw in an activity.",
    "uuid": "The workflow calls uuid.uuid4() directly: take `id = yield durable.uuid4()` instead "
    "(journaled), or make the id in an activity.",
    "hash seed": "The workflow iterates a set (or a dict built from one) of strings or bytes, whose "
    "order changes with the interpreter's hash seed: iterate sorted(...) instead.",
    "module state": "The workflow reads state kept outside its journal (a module-level counter or "
    "global, state an activity or an earlier run left in the process), which replay does not "
    "rebuild: keep such state in local variables built from step results.",
}

_DESCRIBED = {
    "wall clock": f"the wall clock moved {CLOCK_SHIFT / 86400:.0f} days ahead",
    "random": "the random module reseeded",
    "uuid": "uuid.uuid4() reseeded",
}

#: The inputs changed one at a time in this process (the hash seed needs other interpreters).
IN_PROCESS = ("wall clock", "random", "uuid")


@contextlib.contextmanager
def held_inputs(
    workflow: durable.Workflow[..., Any], *, seed: int, clock: float, change: str | None = None
) -> Iterator[None]:
    """Hold every input a workflow may read directly still (``change``: all but that one)."""
    at = clock + (CLOCK_SHIFT if change == "wall clock" else 0.0)
    saved = (random.getstate(), time.time, time.time_ns, uuid.uuid4, os.getpid)
    real_time = time.time
    ids = random.Random(f"uuid/{seed}/{2 if change == 'uuid' else 1}")
    random.seed(seed * 7919 + (2 if change == "random" else 1))
    uuid.uuid4 = lambda: uuid.UUID(int=ids.getrandbits(128), version=4)
    os.getpid = lambda: 1001
    time.time = lambda: at
    time.time_ns = lambda: int(at * 1e9)
    replaced: list[tuple[dict[str, Any], str, object]] = []
    for names in _application_namespaces(workflow):
        for name, value in list(names.items()):
            stand_in = _frozen(value, at, real_time)
            if stand_in is not None:
                replaced.append((names, name, value))
                names[name] = stand_in
    try:
        yield
    finally:
        for names, name, value in replaced:
            names[name] = value
        state, time.time, time.time_ns, uuid.uuid4, os.getpid = saved
        random.setstate(state)


def _application_namespaces(workflow: durable.Workflow[..., Any]) -> list[dict[str, Any]]:
    """The globals of the workflow's module and of every other module of the application
    (not the standard library's, an installed package's, durable's or the simulator's): where
    a helper the workflow calls may have imported ``datetime`` or ``time.time`` by name."""
    paths = sysconfig.get_paths()
    installed = tuple({paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]})
    found = [workflow.fn.__globals__]
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or file.startswith(installed) or name.partition(".")[0] in ("durable", "sim"):
            continue
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict) and namespace is not found[0]:
            found.append(namespace)
    return found


def _frozen(value: object, at: float, real_time: object) -> object | None:
    """A stand-in, frozen at ``at``, for a clock a module imported by name (None: not one).
    Patching ``time.time`` reaches ``time.time()`` calls; ``datetime.now()`` and a
    ``from time import time`` are reached only through the names the module holds."""
    if value is datetime.datetime:
        return _frozen_classes(at)[0]
    if value is datetime.date:
        return _frozen_classes(at)[1]
    if value is datetime:
        module = types.ModuleType("datetime")
        module.__dict__.update(vars(datetime))
        module.datetime, module.date = _frozen_classes(at)  # type: ignore[attr-defined]
        return module
    if value is real_time:
        return lambda: at
    return None


def _frozen_classes(at: float) -> tuple[type[datetime.datetime], type[datetime.date]]:
    class FrozenDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> datetime.datetime:  # type: ignore[override]
            return datetime.datetime.fromtimestamp(at, tz)

        @classmethod
        def utcnow(cls) -> datetime.datetime:  # type: ignore[override]
            return datetime.datetime.fromtimestamp(at, datetime.UTC).replace(tzinfo=None)

        @classmethod
        def today(cls) -> datetime.datetime:  # type: ignore[override]
            return datetime.datetime.fromtimestamp(at)

    class FrozenDate(datetime.date):
        @classmethod
        def today(cls) -> datetime.date:  # type: ignore[override]
            return datetime.date.fromtimestamp(at)

    return FrozenDatetime, FrozenDate


def record(
    workflow: durable.Workflow[..., Any], reference: Sequence[Event], *, seed: int, clock: float
) -> list[Event]:
    """The run recorded again with every input held still, its activities, children and
    messages answered from the ``reference`` journal (nothing outside runs)."""
    first = reference[0]
    answers = {
        e.seq: e for e in reference if isinstance(e, ActivityCompleted | ActivityFailed | ChildCompleted)
    }
    arrivals: list[tuple[float, Event]] = [
        (clock + e.t - first.t, attrs.evolve(e, t=clock + e.t - first.t))
        for e in reference
        if isinstance(e, SignalReceived | CancelRequested)
    ]
    driver = _Driver({}, seed, clock, arrivals, answers)
    with held_inputs(workflow, seed=seed, clock=clock):
        return driver.run(workflow, getattr(first, "run_id", "sim"), getattr(first, "args", b"")).journal


def divergence(workflow: durable.Workflow[..., Any], journal: Sequence[Event]) -> str | None:
    """Why ``journal`` does not replay through the workflow as it is (None: it does)."""
    try:
        core = replay(workflow, journal)
    except (durable.NonDeterminismError, durable.JournalCorruptError) as error:
        return str(error)
    except Exception as error:  # the workflow's own code failed on replay
        return f"{type(error).__name__}: {error}"
    core.close()
    ended = journal[-1]
    returned = getattr(core.outcome, "result", None)
    if isinstance(ended, RunCompleted) and returned is not None and returned != ended.result:
        return f"the run returned {_shown(returned)} on replay; its journal records {_shown(ended.result)}"
    return None


def diagnose(workflow: durable.Workflow[..., Any], reference: Sequence[Event], *, seed: int) -> Cause | None:
    """The input (other than the hash seed) whose change alone makes the workflow diverge."""
    if not reference or not isinstance(reference[0], RunStarted):
        return None  # no journal to isolate anything with
    clock = time.time()
    try:
        before = _globals_seen(workflow)
        journal = record(workflow, reference, seed=seed, clock=clock)
        with held_inputs(workflow, seed=seed, clock=clock):
            unchanged = divergence(workflow, journal)
        changed = _changed(before, _globals_seen(workflow))
        if unchanged is not None and not changed:
            return None  # something changes on its own, but no input and no global of the module
        if unchanged is not None:
            return Cause(
                "module state",
                "Replayed in this process right after being recorded, with the clock, random, uuid4 "
                "and the hash seed all held the same, "
                + _first_line(unchanged).replace("it diverged", "it still diverged", 1)
                + "\n"
                + changed,
            )
        for change in IN_PROCESS:
            with held_inputs(workflow, seed=seed, clock=clock, change=change):
                found = divergence(workflow, journal)
            if found is not None:
                return Cause(
                    change,
                    f"Replayed with only {_DESCRIBED[change]} (every other input held the same), "
                    f"{_first_line(found)}\n",
                )
    except Exception:  # a run that cannot be re-recorded (it needs what only a runtime gives)
        return None
    with held_inputs(workflow, seed=seed, clock=clock):
        found = divergence(workflow, reference)
    if found is not None:
        # Nothing the simulator changes, one at a time, makes it diverge; yet the crash-free
        # run's own journal (recorded with its activities run for real) does not replay in
        # this process: what the run read lives outside its journal.
        return Cause(
            "module state",
            "With every input the simulator changes held as in the crash-free run, and none of "
            "them changed alone making a difference, that run's own journal does not replay in "
            f"this process: {_first_line(found)}\n",
        )
    return None


def _globals_seen(workflow: durable.Workflow[..., Any]) -> dict[str, str]:
    """The workflow module's data globals, as text (functions, classes and modules left out)."""
    seen = {}
    for name, value in workflow.fn.__globals__.items():
        if name.startswith("__") or callable(value) or isinstance(value, types.ModuleType):
            continue
        try:
            seen[name] = repr(value)[:200]
        except Exception:  # a repr that fails tells nothing: leave it out
            continue
    return seen


def _changed(before: dict[str, str], after: dict[str, str]) -> str:
    """Which globals a recording and a replay of the run changed (the state replay did not rebuild)."""
    changed = [
        f"{name} went from {before[name]} to {after[name]}"
        for name in before
        if after.get(name) != before[name]
    ]
    if not changed:
        return ""
    return f"Meanwhile, in the workflow's module, {'; '.join(changed[:3])}."


def _first_line(text: str) -> str:
    """The gist of a replay's divergence: where, and both sides (a NonDeterminismError's
    ``journal:`` and ``code:`` lines), without its general advice."""
    lines = text.strip().splitlines() or [text]
    where = re.search(r"diverged from its journal at (step \d+|its end)", lines[0])
    head = f"it diverged at {where.group(1)}:" if where else lines[0]
    sides = [line.strip() for line in lines[1:] if line.strip().startswith(("journal:", "code:"))]
    return "\n  ".join([head, *sides])


def _shown(data: bytes) -> str:
    text = repr(loads_shown(data))
    return text if len(text) <= 200 else text[:199] + "…"


#: Set in the child interpreters: they import the workflow's module, and one that explores
#: at import (a script without ``if __name__ == "__main__":``) would explore again in
#: each child, beside the parent, sharing its files (found by a new-user trial: failures
#: that did not reproduce).
CHILD_MARK = "DURABLE_SIM_HASH_SEED_CHILD"


def refuse_in_a_hash_seed_child() -> None:
    """Raise if this interpreter is a hash-seed child: the module it imported explores at
    import, which must not happen again here (see :data:`CHILD_MARK`)."""
    if os.environ.get(CHILD_MARK):
        raise RuntimeError(
            "the module of the workflow explores (or replays a recipe) when it is imported: the "
            "simulator imports it again in child interpreters to test the hash seed, which would "
            'explore again beside it. Put that code under `if __name__ == "__main__":` (or in '
            "a test function)"
        )


_CHILD = r"""
import importlib, importlib.util, sys
from durable.lowlevel import encode_header, encode_record, scan
from durable._core.commands import lookup_workflow
from sim._hashseed import record

module, path, name, seed, clock = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
if path:
    spec = importlib.util.spec_from_file_location("__sim_replayed__", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
else:
    importlib.import_module(module)
reference = scan(sys.stdin.buffer.read(), "reference journal").events
journal = record(lookup_workflow(name), reference, seed=seed, clock=clock)
sys.stdout.buffer.write(encode_header() + b"".join(encode_record(e, i, i) for i, e in enumerate(journal)))
"""

#: The hash seed of the interpreters whose journal the others are compared with.
CONTROL_SEED = 0


def _module_source(workflow: durable.Workflow[..., Any]) -> tuple[str, str] | None:
    """How a child interpreter finds the workflow: (module name, file path or "")."""
    module = workflow.fn.__module__
    if module != "__main__":
        return module, ""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return (module, path) if path else None


class HashSeedReplays:
    """Child interpreters recording the run under other hash seeds (and the control seed),
    started at once and read when :meth:`results` is called: they run while the parent
    explores. Each records with every other input held still (see the module docstring)."""

    def __init__(
        self, workflow: durable.Workflow[..., Any], journal: bytes, seeds: tuple[int, ...], *, sim_seed: int
    ) -> None:
        self._workflow = workflow
        self._journal = journal
        self._sim_seed = sim_seed
        self._clock = time.time()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._note: str | None = None
        self._source = _module_source(workflow) if seeds else None
        if not seeds:
            return
        if self._source is None:
            self._note = "the hash-seed replay was skipped: the workflow's module cannot be imported"
            return
        for hash_seed in dict.fromkeys((CONTROL_SEED, *seeds)):
            self._children[hash_seed] = self._start(hash_seed)

    def _start(self, hash_seed: int) -> subprocess.Popen[bytes]:
        assert self._source is not None
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        # The journal goes in through a file of the child's own (an offset of its own),
        # so that starting a child never waits for it to read.
        with tempfile.TemporaryFile() as journal_file:
            journal_file.write(self._journal)
            journal_file.seek(0)
            module, path = self._source
            args = [module, path, self._workflow.name, str(self._sim_seed), repr(self._clock)]
            return subprocess.Popen(
                [sys.executable, "-c", _CHILD, *args],
                stdin=journal_file,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env, PYTHONHASHSEED=str(hash_seed), **{CHILD_MARK: "1"}),
            )

    def results(self) -> tuple[dict[int, str], str | None]:
        """Wait for the children; return ``({seed: divergence}, note)`` (see
        :func:`hash_seed_divergences`)."""
        journals: dict[int, list[Event]] = {}
        note = self._note
        for seed, child in self._children.items():
            found, problem = _read(child)
            if found is None:
                note = f"the hash-seed replay could not run: {problem}"
            else:
                journals[seed] = found
        self._children.clear()
        control = journals.pop(CONTROL_SEED, None)
        if control is None:
            return {}, note
        found_divergences = {
            seed: text
            for seed, journal in journals.items()
            if (text := _compared(control, journal, seed)) is not None
        }
        if found_divergences:
            # Before blaming the hash seed: does another interpreter under the same seed agree?
            again, problem = _read(self._start(CONTROL_SEED))
            if again is None or _compared(control, again, CONTROL_SEED) is not None:
                why = problem or "it recorded other commands"
                return {}, (
                    "the hash-seed replay found nothing it can blame on the hash seed: a second "
                    f"interpreter under the same hash seed disagreed with the first ({why}): the "
                    "workflow reads an input that differs between interpreters"
                )
        return found_divergences, note

    def stop(self) -> None:
        """Stop the children that are still running (an exploration that raised)."""
        for child in self._children.values():
            if child.poll() is None:
                child.kill()
            child.communicate()
        self._children.clear()


def _read(child: subprocess.Popen[bytes]) -> tuple[list[Event] | None, str]:
    """The journal a child recorded, or None and why it has none."""
    stdout, stderr = child.communicate(timeout=120)
    if child.returncode == 0:
        try:
            return scan(stdout, "a journal recorded under another hash seed").events, ""
        except durable.JournalCorruptError as error:
            return None, str(error)
    text = stderr.decode(errors="replace").strip()
    return None, text.splitlines()[-1] if text else f"exit status {child.returncode}"


def _compared(control: list[Event], journal: list[Event], seed: int) -> str | None:
    """Where ``journal`` (recorded under hash seed ``seed``) first differs from ``control``."""
    for want, have in zip(control, journal, strict=False):
        if _normal(want) != _normal(have):
            step = getattr(want, "seq", None)
            where = f"step {step}" if step is not None else "its end"
            return (
                f"with PYTHONHASHSEED={seed} the workflow diverged from its journal at {where} "
                f"(recorded in another interpreter under PYTHONHASHSEED={CONTROL_SEED}, every other "
                f"input held the same):\n  journal: {_described(want)}\n  code:    {_described(have)}\n"
                + Cause("hash seed", "Only the hash seed differed between the two interpreters.").text()
            )
    if len(control) != len(journal):
        return (
            f"with PYTHONHASHSEED={seed} the workflow diverged from its journal at its end: "
            f"{len(journal)} records instead of {len(control)}\n"
            + Cause("hash seed", "Only the hash seed differed between the two interpreters.").text()
        )
    return None


def _normal(event: Event) -> tuple[Any, ...]:
    """An event without its time."""
    return tuple(v for k, v in attrs.asdict(event, recurse=False).items() if k != "t")


def _described(event: Event) -> str:
    if isinstance(event, ActivityScheduled | ChildStarted):
        args, kwargs = loads_shown(event.args)
        parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        name = event.name if isinstance(event, ActivityScheduled) else event.workflow
        return f"{name}({', '.join(parts)})"
    if isinstance(event, TimerStarted):
        return f"sleep {event.seconds:g}s"
    if isinstance(event, SideEffectRecorded):
        return f"recorded value {event.name}"
    if isinstance(event, RunCompleted):
        return f"the run returned {_shown(event.result)}"
    return type(event).__name__


def hash_seed_divergences(
    workflow: durable.Workflow[..., Any],
    journal: bytes,
    seeds: tuple[int, ...],
    *,
    sim_seed: int,
) -> tuple[dict[int, str], str | None]:
    """Record the run under each hash seed and compare with the control seed's; return
    ``({seed: divergence}, note)``.

    The note explains why the check could not run (e.g. the workflow's module is
    not importable by a child interpreter); it is None when the check ran.
    """
    return HashSeedReplays(workflow, journal, seeds, sim_seed=sim_seed).results()


def journal_bytes(events: Sequence[Event]) -> bytes:
    """Events as a journal file's bytes (for a child interpreter to scan)."""
    return encode_header() + b"".join(encode_record(e, i, i) for i, e in enumerate(events))
