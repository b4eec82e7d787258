"""Real processes SIGKILLed at many points, then restarted until the run completes.

A *schedule* drives one workflow run (one id, one FileStore with ``sync="always"``,
one set of fake-service ledgers) through a series of *lives*: each life is a
fresh ``python tests/crash/driver.py`` process that calls ``durable.run``, and
its plan says how it dies:

* :class:`KillAt`: the driver SIGKILLs itself when step ``seq`` starts, or right
  after a fake service applied step ``seq``'s effect (the at-least-once window
  of SPEC §4.2: the effect happened, its completion is not journaled);
* :class:`KillAfter`: this test SIGKILLs the driver after a seeded random delay
  (a fraction of the crash-free run's duration), wherever the run happens to be,
  or not at all if the run finished first;
* no plan: the life must run to completion.

After the planned lives, one more life without a plan must finish the run. The
checks, for every schedule:

* every life that printed a result printed the crash-free reference result, and
  the journal's ``RunCompleted`` holds it too;
* guarantee 1: no step ran in a life that started with the step's
  ``ActivityCompleted`` in the journal (every activity execution appends to an
  executions log, compared with a snapshot of the journal taken before each
  life), no step ran twice within one life, and a crash never took back a
  journal event;
* guarantee 2: a step killed in flight ran again in a later life with the same
  idempotency key, and every service ledger holds exactly one effect per step;
* the final journal scans with no torn tail and holds each step scheduled and
  completed exactly once, in the reference's order.

A SIGKILL keeps the page cache, so what a killed process wrote is what the next
one reads: these tests prove recovery with real processes, files and locks;
losing unsynced writes (power loss) is the simulator's job. Nothing here
asserts on timing: a random kill may land anywhere, or after the run finished,
and each outcome has its own correct expectations.

Schedules are independent, so each test runs them concurrently (two per CPU
core): a life costs about 0.35 s of CPU, mostly importing trio and durable.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import durable
from durable._core import events as ev
from durable._core.codec import scan
from durable._core.values import loads

TESTS = Path(__file__).resolve().parent
DRIVER = TESTS / "crash" / "driver.py"
#: Lives running at once: two per core, as a life spends part of its time in sleeps and fsyncs.
PARALLEL = 2 * (os.cpu_count() or 1)
LIFE_TIMEOUT = 60.0
KILLED = -signal.SIGKILL
#: The slow tests' size: full when run on purpose (``pytest -m slow``), a twentieth under CI
#: (CI runs every test; the always-run tests are the reduced exploration).
SLOW_SCALE = 0.05 if os.environ.get("CI") else 1.0


@attrs.frozen
class Subject:
    """A workflow under test and the run the schedules drive."""

    module: Path
    workflow: str
    args: list[Any]
    run_id: str


SUBJECTS = {
    "order": Subject(
        TESTS.parent / "examples" / "process_order.py",
        "process_order",
        ["alice", 4200, "tok_visa"],
        "order-1",
    ),
    "fulfil": Subject(
        TESTS / "crash" / "fulfil.py",
        "fulfil_order",
        ["ord-7", "bob", ["tea", "cups", "kettle", "tray", "spoons", "honey", "lemons", "napkins"], "SAVE10"],
        "fulfil-7",
    ),
}


@attrs.frozen
class KillAt:
    """The driver kills itself at ``point`` ("start" or "effect") of step ``seq``."""

    seq: int
    point: str = "effect"


@attrs.frozen
class KillAfter:
    """The test kills the driver ``fraction`` of a crash-free run's duration after it is ready."""

    fraction: float


Plan = KillAt | KillAfter | None


@attrs.frozen
class Life:
    """What one driver process was asked to do and what it did."""

    number: int
    plan: Plan
    completed_before: frozenset[int]
    returncode: int
    result: Any
    printed_result: bool
    stderr: str
    events_after: list[ev.Event]
    effects_after: list[str]

    def story(self) -> str:
        outcome = {0: "finished", KILLED: "killed"}.get(self.returncode, f"exit {self.returncode}")
        done = sorted(self.completed_before)
        return f"life {self.number}: plan {self.plan!r}, steps done before {done}, {outcome}"


@attrs.frozen
class Reference:
    """The crash-free run: its result, its steps' activity names, how long it took."""

    result: Any
    activities: list[str]
    elapsed: float


# --- one life ------------------------------------------------------------------


def _paths(workdir: Path) -> dict[str, Path]:
    return {
        "store": workdir / "store",
        "ledgers": workdir / "ledgers",
        "executions": workdir / "executions.jsonl",
    }


def _command(subject: Subject, workdir: Path, number: int, plan: Plan) -> tuple[list[str], dict[str, str]]:
    paths = _paths(workdir)
    config = {
        "module": str(subject.module),
        "workflow": subject.workflow,
        "args": subject.args,
        "id": subject.run_id,
        "store": str(paths["store"]),
        "executions": str(paths["executions"]),
        "life": number,
        "kill": attrs.asdict(plan) if isinstance(plan, KillAt) else None,
    }
    env = {**os.environ, "EXAMPLE_LEDGERS": str(paths["ledgers"]), "CRASH_LEDGERS": str(paths["ledgers"])}
    return [sys.executable, str(DRIVER), json.dumps(config)], env


async def _pump(stream: Any, sink: bytearray, ready: trio.Event | None) -> None:
    async with stream:
        async for chunk in stream:
            sink += chunk
            if ready is not None and sink.startswith(b"ready\n"):
                ready.set()
    if ready is not None:
        ready.set()  # the process ended before it was ready: nothing left to wait for


async def _spawn(
    command: list[str], env: dict[str, str], cwd: Path, kill_after: float | None
) -> tuple[int, bytes, bytes]:
    """Run ``command``; SIGKILL it ``kill_after`` seconds after it prints ``ready``."""
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd
    )
    out, err = bytearray(), bytearray()
    ready = trio.Event()
    try:
        with trio.fail_after(LIFE_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, process.stdout, out, ready)
                nursery.start_soon(_pump, process.stderr, err, None)
                if kill_after is not None:
                    await ready.wait()
                    with trio.move_on_after(kill_after):
                        await process.wait()
                    process.kill()  # a no-op if it already exited
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    assert process.returncode is not None
    return process.returncode, bytes(out), bytes(err)


def read_journal(workdir: Path, run_id: str) -> list[ev.Event]:
    """The run's journal as the next process will see it (no journal yet: no events)."""
    path = Path(durable.FileStore(_paths(workdir)["store"]).journal_path(run_id))
    if not path.exists():
        return []
    return scan(path.read_bytes(), str(path)).events


def completed(events: list[ev.Event]) -> frozenset[int]:
    return frozenset(e.seq for e in events if isinstance(e, ev.ActivityCompleted))


async def run_life(subject: Subject, workdir: Path, number: int, plan: Plan, reference: Reference) -> Life:
    before = completed(read_journal(workdir, subject.run_id))
    command, env = _command(subject, workdir, number, plan)
    kill_after = plan.fraction * reference.elapsed if isinstance(plan, KillAfter) else None
    returncode, out, err = await _spawn(command, env, workdir, kill_after)
    lines = out.decode().splitlines()
    printed = len(lines) > 1
    return Life(
        number=number,
        plan=plan,
        completed_before=before,
        returncode=returncode,
        result=json.loads(lines[1])["result"] if printed else None,
        printed_result=printed,
        stderr=err.decode(),
        events_after=read_journal(workdir, subject.run_id),
        effects_after=effect_keys(workdir),
    )


async def run_schedule(
    subject: Subject, plans: list[Plan], workdir: Path, reference: Reference
) -> list[Life]:
    """Run the planned lives, then one more that must finish the run."""
    workdir.mkdir(parents=True)
    return [
        await run_life(subject, workdir, number, plan, reference)
        for number, plan in enumerate([*plans, None])
    ]


# --- the checks --------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def effect_keys(workdir: Path) -> list[str]:
    """The idempotency keys of every effect in every ledger."""
    ledgers = sorted(_paths(workdir)["ledgers"].glob("*.jsonl"))
    return [effect["key"] for path in ledgers for effect in read_lines(path)]


def check_life(subject: Subject, life: Life, reference: Reference) -> None:
    plan = life.plan
    tail = "\n".join(life.stderr.splitlines()[-20:])
    assert life.returncode in (0, KILLED), f"the driver failed with exit {life.returncode}:\n{tail}"
    if life.returncode == 0:
        assert life.printed_result, "the driver exited 0 without printing a result"
    if life.printed_result:
        assert life.result == reference.result, f"result {life.result!r} != reference {reference.result!r}"
    if plan is None:
        assert life.returncode == 0, "a life without a kill plan was killed"
    elif isinstance(plan, KillAt):
        if plan.seq in life.completed_before:
            assert life.returncode == 0, f"step {plan.seq} was done, yet the process reached its kill"
        else:
            # The run is sequential: an unfinished step is always reached again.
            assert life.returncode == KILLED, f"the kill at step {plan.seq} never happened"
            assert plan.seq not in completed(life.events_after), "the kill left the step completed"
            if plan.point == "effect":
                key = f"{subject.run_id}/{plan.seq}"
                assert key in life.effects_after, f"killed after the effect of {key}, not in any ledger"


def check_executions(
    subject: Subject, lives: list[Life], executions: list[dict[str, Any]], reference: Reference
) -> None:
    steps = len(reference.activities)
    by_life = collections.defaultdict(list)
    for execution in executions:
        seq = execution["seq"]
        assert execution["key"] == f"{subject.run_id}/{seq}", f"bad idempotency key in {execution}"
        assert execution["activity"] == reference.activities[seq], f"wrong activity in {execution}"
        by_life[execution["life"]].append(seq)
    for life in lives:
        seqs = by_life[life.number]
        again = sorted(set(seqs) & life.completed_before)
        assert not again, (
            f"life {life.number} executed steps {again} although their completion was in the journal "
            "before it started (SPEC §4.1: a completed step is never executed again)"
        )
        twice = sorted(seq for seq, count in collections.Counter(seqs).items() if count > 1)
        assert not twice, f"life {life.number} executed steps {twice} more than once"
        plan = life.plan
        if isinstance(plan, KillAt) and life.returncode == KILLED:
            later = {seq for other in lives[life.number + 1 :] for seq in by_life[other.number]}
            assert plan.seq in later, (
                f"step {plan.seq}, killed in flight in life {life.number}, never ran again"
            )
    ran = {execution["seq"] for execution in executions}
    assert ran == set(range(steps)), f"steps executed {sorted(ran)}, expected 0..{steps - 1}"


def check_ledgers(subject: Subject, workdir: Path, steps: int) -> None:
    keys = effect_keys(workdir)
    repeated = sorted(key for key, count in collections.Counter(keys).items() if count > 1)
    assert not repeated, f"effects applied more than once for keys {repeated}"
    expected = {f"{subject.run_id}/{seq}" for seq in range(steps)}
    assert set(keys) == expected, f"ledgers hold effects for {sorted(keys)}, expected {sorted(expected)}"


def check_final_journal(subject: Subject, workdir: Path, reference: Reference) -> None:
    path = Path(durable.FileStore(_paths(workdir)["store"]).journal_path(subject.run_id))
    found = scan(path.read_bytes(), str(path))
    assert found.exists, "the journal has no header"
    assert not found.torn, f"the final journal has a torn tail at offset {found.end}"
    events = found.events
    assert isinstance(events[0], ev.RunStarted)
    assert isinstance(events[-1], ev.RunCompleted), f"the journal ends with {events[-1]!r}"
    assert loads(events[-1].result) == reference.result
    scheduled = [(e.seq, e.name) for e in events if isinstance(e, ev.ActivityScheduled)]
    assert scheduled == list(enumerate(reference.activities)), f"steps scheduled: {scheduled}"
    done = [e.seq for e in events if isinstance(e, ev.ActivityCompleted)]
    assert done == list(range(len(reference.activities))), f"steps completed, in order: {done}"
    failures = [e for e in events if isinstance(e, ev.AttemptFailed | ev.ActivityFailed | ev.RunFailed)]
    assert not failures, f"a crash was journaled as a failure: {failures}"


def check_journal_grows(lives: list[Life]) -> None:
    """A crash never takes back what the journal held: each life's journal extends the previous one."""
    for earlier, later in itertools.pairwise(lives):
        kept = later.events_after[: len(earlier.events_after)]
        assert kept == earlier.events_after, (
            f"life {later.number} lost or rewrote journal events that life {earlier.number} left"
        )


def check_schedule(subject: Subject, workdir: Path, lives: list[Life], reference: Reference) -> None:
    steps = len(reference.activities)
    check_journal_grows(lives)
    for life in lives:
        try:
            check_life(subject, life, reference)
        except AssertionError as exc:
            raise AssertionError(f"life {life.number}: {exc}") from None
    check_executions(subject, lives, read_lines(_paths(workdir)["executions"]), reference)
    check_ledgers(subject, workdir, steps)
    check_final_journal(subject, workdir, reference)


async def explore(schedules: list[Schedule], references: dict[str, Reference], tmp_path: Path) -> None:
    """Run every schedule (:data:`PARALLEL` at a time) and check it; report all failures."""
    failures: list[str] = []
    limiter = trio.CapacityLimiter(PARALLEL)

    async def one(schedule: Schedule) -> None:
        subject, reference = SUBJECTS[schedule.subject], references[schedule.subject]
        workdir = tmp_path / f"{schedule.subject}-{schedule.label}"
        lives: list[Life] = []
        async with limiter:
            try:
                lives = await run_schedule(subject, schedule.plans, workdir, reference)
                check_schedule(subject, workdir, lives, reference)
            except Exception as exc:  # any failure, reported with the schedule's story
                story = "\n  ".join(life.story() for life in lives)
                failures.append(
                    f"{schedule.subject} schedule {schedule.label} {schedule.plans!r} in {workdir}:\n"
                    f"  {story}\n  -> {type(exc).__name__}: {exc}"
                )

    async with trio.open_nursery() as nursery:
        for schedule in schedules:
            nursery.start_soon(one, schedule)
    summary = f"{len(failures)} of {len(schedules)} crash schedules failed:\n\n"
    assert not failures, summary + "\n\n".join(failures)


# --- the reference run -------------------------------------------------------


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Reference]:
    """Each subject run once without crashes, checked like any schedule."""
    found = {}
    for name, subject in SUBJECTS.items():
        workdir = tmp_path_factory.mktemp(f"reference-{name}")
        command, env = _command(subject, workdir, 0, None)
        done = subprocess.run(
            command, env=env, cwd=workdir, capture_output=True, text=True, check=False, timeout=LIFE_TIMEOUT
        )
        assert done.returncode == 0, done.stderr
        output = json.loads(done.stdout.splitlines()[1])
        events = read_journal(workdir, subject.run_id)
        names = [e.name for e in events if isinstance(e, ev.ActivityScheduled)]
        reference = Reference(output["result"], names, output["elapsed"])
        life = Life(
            number=0,
            plan=None,
            completed_before=frozenset(),
            returncode=done.returncode,
            result=output["result"],
            printed_result=True,
            stderr=done.stderr,
            events_after=events,
            effects_after=effect_keys(workdir),
        )
        check_schedule(subject, workdir, [life], reference)
        executions = read_lines(_paths(workdir)["executions"])
        assert [e["seq"] for e in executions] == list(range(len(names)))
        found[name] = reference
    return found


def test_references(references: dict[str, Reference]) -> None:
    """The crash-free runs are what the schedules need: right, and long enough."""
    order = references["order"]
    assert order.activities == ["charge_payment", "send_email"]
    assert order.result == "pay_" + hashlib.sha256(b"order-1/0").hexdigest()[:10]  # the fake's payment id
    fulfil = references["fulfil"].activities
    assert len(fulfil) >= 20
    assert fulfil.count("quote_price") == fulfil.count("add_line") == 8  # the loop over items
    assert {"redeem_coupon", "flag_for_review"} <= set(fulfil)  # the coupon and review branches
    assert references["fulfil"].result["total"] > 300


# --- the schedules -------------------------------------------------------------


@attrs.frozen
class Schedule:
    """The planned lives of one run of ``subject`` (a key of :data:`SUBJECTS`)."""

    subject: str
    label: str
    plans: list[Plan]


def kill_at_each_step(name: str, reference: Reference, point: str, stride: int = 1) -> list[Schedule]:
    steps = range(0, len(reference.activities), stride)
    return [Schedule(name, f"{point}-{seq}", [KillAt(seq, point)]) for seq in steps]


def random_kills(name: str, seeds: range, lives: int) -> list[Schedule]:
    """``lives`` kills in a row at seeded random times (some land after the run finished)."""
    schedules = []
    for seed in seeds:
        rng = random.Random(f"random-{lives}-{seed}")
        plans: list[Plan] = [KillAfter(round(rng.uniform(0.0, 1.2), 3)) for _ in range(lives)]
        schedules.append(Schedule(name, f"random-{lives}-{seed}", plans))
    return schedules


def mixed_kills(name: str, seeds: range, reference: Reference, most: int) -> list[Schedule]:
    """1..``most`` kills in a row, each from inside a step or from outside at a random time."""
    steps = len(reference.activities)
    schedules = []
    for seed in seeds:
        rng = random.Random(f"mixed-{seed}")
        plans: list[Plan] = []
        for _ in range(rng.randint(1, most)):
            if rng.random() < 0.7:
                plans.append(KillAt(rng.randrange(steps), rng.choice(["effect", "effect", "start"])))
            else:
                plans.append(KillAfter(round(rng.uniform(0.0, 1.2), 3)))
        schedules.append(Schedule(name, f"mixed-{seed}", plans))
    return schedules


def slow_seeds(count: int) -> range:
    """Seeds for the slow tests, disjoint from the always-run ones, scaled by :data:`SLOW_SCALE`."""
    return range(100, 100 + max(1, round(count * SLOW_SCALE)))


@pytest.mark.parametrize("name", SUBJECTS)
async def test_kill_right_after_each_effect(
    name: str, references: dict[str, Reference], tmp_path: Path
) -> None:
    """(a) At every step: the effect is applied, the process dies before journaling the completion."""
    await explore(kill_at_each_step(name, references[name], "effect"), references, tmp_path)


async def test_kill_at_random_times(references: dict[str, Reference], tmp_path: Path) -> None:
    """(b) One SIGKILL from outside at a seeded random time, then a restart."""
    schedules = [*random_kills("order", range(2), 1), *random_kills("fulfil", range(4), 1)]
    await explore(schedules, references, tmp_path)


async def test_several_kills_in_a_row(references: dict[str, Reference], tmp_path: Path) -> None:
    """(c) The same run killed again and again, in the same window and in others, before it may finish."""
    last = len(references["fulfil"].activities) - 1
    schedules = [
        Schedule("order", "charge-thrice-then-email", [KillAt(0), KillAt(0), KillAt(0, "start"), KillAt(1)]),
        Schedule("fulfil", "same-window", [KillAt(7), KillAt(7), KillAt(7, "start"), KillAt(8)]),
        Schedule("fulfil", "march", [KillAt(0), KillAt(5), KillAt(12, "start"), KillAt(last)]),
        *random_kills("fulfil", range(1), 3),
        *mixed_kills("fulfil", range(1), references["fulfil"], 4),
    ]
    await explore(schedules, references, tmp_path)


@pytest.mark.slow
async def test_kill_at_each_step_start(references: dict[str, Reference], tmp_path: Path) -> None:
    """Every step killed as it starts, before its effect (under CI: every twentieth step)."""
    stride = round(1 / SLOW_SCALE)
    schedules = [kill_at_each_step(name, references[name], "start", stride) for name in SUBJECTS]
    await explore([s for per_subject in schedules for s in per_subject], references, tmp_path)


@pytest.mark.slow
async def test_kill_at_random_times_many(references: dict[str, Reference], tmp_path: Path) -> None:
    """More seeds of (b), and of three random kills in a row."""
    schedules = [
        *random_kills("order", slow_seeds(16), 1),
        *random_kills("fulfil", slow_seeds(40), 1),
        *random_kills("order", slow_seeds(4), 3),
        *random_kills("fulfil", slow_seeds(10), 3),
    ]
    await explore(schedules, references, tmp_path)


@pytest.mark.slow
async def test_mixed_kills_many(references: dict[str, Reference], tmp_path: Path) -> None:
    """Up to five kills in a row, from inside steps and from outside, at seeded random places."""
    schedules = [
        *mixed_kills("order", slow_seeds(12), references["order"], 5),
        *mixed_kills("fulfil", slow_seeds(30), references["fulfil"], 5),
    ]
    await explore(schedules, references, tmp_path)
