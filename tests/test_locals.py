"""Time travel: ``durable.lowlevel.locals_at`` and ``durable show ID --locals [--at STEP]``.

A run's workflow is rebuilt by replaying its journal up to the ``yield`` of a
step, and its local variables are read from the suspended generator: they must
be the values the run held there, step by step, for every kind of step (an
activity, a timer, a signal, a child workflow, a retried run), nested ``yield
from`` generators included. Nothing runs (activities count their calls) and
nothing is written (the journal's bytes, a run another process holds).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from click.testing import CliRunner

import durable
from durable._cli import main
from durable._core.commands import _REGISTRY
from durable.lowlevel import RunLocals, StepNotReached, locals_at

CALLS: list[str] = []
BROKEN: set[str] = set()


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    CALLS.clear()
    BROKEN.clear()
    # The code these tests load (a tutorial's shop.py) registers workflows under names
    # other tests use too ("process_order"): the registry is restored after each test,
    # else a later simulation of examples/process_order.py replays someone else's code.
    registered = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(registered)


@durable.activity(name="tests.locals.add")
def add(a: int, b: int) -> int:
    CALLS.append(f"add({a}, {b})")
    return a + b


@durable.activity(name="tests.locals.note")
def note(text: str) -> str:
    CALLS.append(f"note({text})")
    if text in BROKEN:
        raise RuntimeError(f"cannot note {text!r}")
    return text.upper()


@durable.workflow(name="tests.locals.steps")
def steps(n: int):  # type: ignore[no-untyped-def]
    total = 0
    for i in range(3):
        total += yield add(i, n)
    label = f"total {total}"
    shouted = yield note(label)
    return shouted


@durable.workflow(name="tests.locals.steps_changed")
def steps_changed(n: int):  # type: ignore[no-untyped-def]
    total = 0
    for i in range(3):
        total += yield add(i, n + 1)  # other arguments: the journal no longer matches
    return total


def collect(items: list[int]):  # type: ignore[no-untyped-def]
    collected = []
    for item in items:
        collected.append((yield add(item, 100)))
    return collected


@durable.workflow(name="tests.locals.nested")
def nested(items: list[int]):  # type: ignore[no-untyped-def]
    heading = "collecting"
    got = yield from collect(items)
    yield note(f"{heading}: {got}")
    return got


@dataclasses.dataclass(frozen=True)
class Customer:
    name: str
    tier: str


@durable.activity(name="tests.locals.lookup")
def lookup(name: str) -> Customer:
    return Customer(name, "pro")


@durable.workflow(name="tests.locals.typed")
def typed(name: str):  # type: ignore[no-untyped-def]
    customer = yield lookup(name)
    yield note(customer.tier)
    return customer


@durable.workflow(name="tests.locals.approval")
def approval(order: str):  # type: ignore[no-untyped-def]
    yield durable.sleep("1h")
    waited = "an hour"  # noqa: F841 - a local to look at, not to use
    decision = yield durable.wait_signal("decision", timeout="1d")
    yield note(f"{order} {decision}")
    return decision


@durable.workflow(name="tests.locals.child")
def child(n: int):  # type: ignore[no-untyped-def]
    doubled = yield add(n, n)
    return doubled


@durable.workflow(name="tests.locals.parent")
def parent(n: int):  # type: ignore[no-untyped-def]
    from_child = yield child(n)
    yield note(f"child said {from_child}")
    return from_child


@durable.workflow(name="tests.locals.rounds")
def rounds(round_no: int):  # type: ignore[no-untyped-def]
    done = yield add(round_no, 0)
    if round_no < 2:
        yield durable.continue_as_new(round_no + 1)
    return done


@durable.workflow(name="tests.locals.fanout")
def fanout(n: int):  # type: ignore[no-untyped-def]
    pair = yield durable.gather(add(n, 1), add(n, 2))
    total = sum(pair)
    yield note(f"sum {total}")
    return total


def run_to_end(workflow: Any, *args: Any, run_id: str = "r") -> list[Any]:
    """Run ``workflow`` to its end on a MemoryStore (virtual time) and return its journal."""
    store = durable.MemoryStore()

    async def main() -> list[Any]:
        async with durable.Runtime(store) as runtime:
            await (await runtime.start(workflow, *args, id=run_id)).result()
        events = await store.read(run_id)
        assert events is not None
        return events

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --- the Python API --------------------------------------------------------------------


def test_locals_change_step_by_step_as_the_run_went() -> None:
    events = run_to_end(steps, 10)
    CALLS.clear()
    seen = [locals_at(events, step=step) for step in range(4)]
    assert [(s["i"], s["total"]) for s in seen[:3]] == [(0, 0), (1, 10), (2, 21)]
    assert seen[3]["label"] == "total 33" and seen[3]["total"] == 33
    assert "label" not in seen[2].frames[0].values  # not assigned yet at step 2
    assert seen[1].doing == "activity tests.locals.add(1, 10)" and seen[1].outcome == "11"
    assert seen[0].frames[0].function == "steps" and "yield add(i, n)" in seen[0].frames[0].source
    assert seen[2].frames[0].texts["total"] == "21"
    assert CALLS == []  # replay ran no activity


def test_the_default_is_the_latest_step() -> None:
    events = run_to_end(steps, 10)
    state = locals_at(events)
    assert (state.step, state.last_step, state.ended) == (3, 3, True)
    assert state["label"] == "total 33"
    assert "its last step: the run has ended" in str(state)


def test_yield_from_shows_each_generator_frame() -> None:
    events = run_to_end(nested, [1, 2])
    state = locals_at(events, step=1)
    assert [f.function for f in state.frames] == ["nested", "collect"]
    outer, inner = state.frames
    assert outer.values == {"items": [1, 2], "heading": "collecting"}
    assert inner.values["collected"] == [101] and inner.values["item"] == 2
    assert state["item"] == 2
    after = locals_at(events, step=2)
    assert [f.function for f in after.frames] == ["nested"] and after["got"] == [101, 102]


def test_typed_values_come_back_as_the_workflow_sees_them() -> None:
    events = run_to_end(typed, "ada")
    state = locals_at(events, step=1)
    assert state["customer"] == Customer("ada", "pro")
    assert isinstance(state["customer"], Customer)
    assert state.frames[0].texts["customer"] == "Customer(name='ada', tier='pro')"
    document = state.to_json()
    [customer] = [v for v in document["frames"][0]["locals"] if v["name"] == "customer"]
    assert customer["type"].endswith("test_locals.Customer")


def test_a_timer_and_a_signal_and_a_live_run_waiting_for_it() -> None:
    store = durable.MemoryStore()

    async def main() -> tuple[RunLocals, list[Any]]:
        async with durable.Runtime(store) as runtime:
            handle = await runtime.start(approval, "o-1", id="a")
            await trio.sleep(7200)  # the hour passed: the run waits for its signal
            events = await store.read("a")
            assert events is not None
            waiting = locals_at(events)
            await runtime.signal("a", "decision", "approved")
            assert await handle.result() == "approved"
        events = await store.read("a")
        assert events is not None
        return waiting, events

    waiting, events = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert (waiting.step, waiting.ended) == (1, False)
    assert waiting["waited"] == "an hour" and "decision" not in waiting.frames[0].values
    assert "the run's state now" in str(waiting)
    assert "decision" in waiting.doing
    at_timer = locals_at(events, step=0)
    assert "waited" not in at_timer.frames[0].values and at_timer.doing.startswith("timer")
    after = locals_at(events, step=2)
    assert after["decision"] == "approved"


def test_a_signal_sent_before_the_wait_still_shows_the_wait() -> None:
    """The step is yielded and resolved within one event: replay must still stop at it."""
    store = durable.MemoryStore()

    async def main() -> list[Any]:
        async with durable.Runtime(store) as runtime:
            handle = await runtime.start(approval, "o-2", id="b")
            await runtime.signal("b", "decision", "early")
            await handle.result()
        events = await store.read("b")
        assert events is not None
        return events

    events = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    state = locals_at(events, step=1)
    assert state["waited"] == "an hour" and "decision" not in state.frames[0].values
    assert locals_at(events, step=2)["decision"] == "early"


def test_a_child_workflow_step() -> None:
    events = run_to_end(parent, 4)
    at_child = locals_at(events, step=0)
    assert at_child.doing == "child tests.locals.child(4)"
    assert at_child.outcome == "8" and "from_child" not in at_child.frames[0].values
    assert locals_at(events, step=1)["from_child"] == 8


def test_a_retried_run_replays_its_whole_journal() -> None:
    store = durable.MemoryStore()
    BROKEN.add("total 33")

    async def main() -> list[Any]:
        async with durable.Runtime(store) as runtime:
            with pytest.raises(durable.WorkflowFailed):
                await (await runtime.start(steps, 10, id="r")).result()
            BROKEN.clear()
            assert await (await runtime.retry("r", "fixed")).result() == "TOTAL 33"
        events = await store.read("r")
        assert events is not None
        return events

    events = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert any(isinstance(e, durable.lowlevel.RunRetried) for e in events)
    state = locals_at(events)
    assert (state.step, state.ended, state["label"]) == (3, True, "total 33")
    assert locals_at(events, step=2)["total"] == 21


def test_a_run_that_continued_as_new_numbers_its_steps_on() -> None:
    events = run_to_end(rounds, 0)  # the last incarnation's fresh journal
    state = locals_at(events)
    assert (state.first_step, state.step, state["round_no"]) == (2, 2, 2)
    assert "step 2 of 2..2" in str(state)
    with pytest.raises(StepNotReached, match="reaches step 2;"):
        locals_at(events, step=0)


def test_each_step_of_a_gather_stops_at_the_gather() -> None:
    events = run_to_end(fanout, 10)
    first, second = locals_at(events, step=0), locals_at(events, step=1)
    assert first.frames[0].line == second.frames[0].line and "gather" in second.frames[0].source
    assert "pair" not in second.frames[0].values
    assert first.doing == "activity tests.locals.add(10, 1)"
    assert second.doing == "activity tests.locals.add(10, 2)"
    assert second.outcome == "12"
    assert locals_at(events, step=2)["pair"] == [11, 12]


def test_a_changed_workflow_gives_the_divergence() -> None:
    events = run_to_end(steps, 10)
    with pytest.raises(durable.NonDeterminismError) as caught:
        locals_at(events, workflows={"tests.locals.steps": steps_changed}, step=0)
    assert caught.value.seq == 0
    assert caught.value.recorded == "activity tests.locals.add(0, 10)"
    assert "add(0, 11)" in caught.value.yielded


def test_a_step_the_journal_never_reached() -> None:
    events = run_to_end(steps, 10)
    with pytest.raises(StepNotReached) as caught:
        locals_at(events, step=4)
    assert (caught.value.step, caught.value.first, caught.value.last) == (4, 0, 3)
    assert "steps 0 to 3" in str(caught.value)
    with pytest.raises(StepNotReached):
        locals_at(events, step=-1)


def test_from_a_store_directory(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert durable.run(steps, 1, id="s", store=durable.FileStore(store)) == "TOTAL 6"
    assert locals_at(store, "s", step=2)["total"] == 3
    with pytest.raises(ValueError, match="no run 'nope'"):
        locals_at(store, "nope")


# --- the command line --------------------------------------------------------------------

SHOP = """
    import durable

    @durable.activity
    def charge(amount: int) -> str:
        return f"pay-{amount}"

    @durable.activity
    def email(user: str, text: str) -> None:
        return None

    @durable.workflow
    def order(user: str, amount: int):
        payment = yield charge(amount)
        yield email(user, "receipt " + payment)
        return payment
    """

SLOW = """
    import time
    import durable

    @durable.activity
    def wait_a_while(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @durable.workflow
    def slow(seconds: float):
        started = "yes"
        yield wait_a_while(seconds)
        return started
    """


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "shopcli.py").write_text(textwrap.dedent(SHOP))
    (tmp_path / "slowcli.py").write_text(textwrap.dedent(SLOW))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    path, modules = list(sys.path), set(sys.modules)
    yield tmp_path
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    registry = durable._core.commands._REGISTRY
    for name in ("order", "slow"):
        registry.pop(name, None)


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def durable_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "durable"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def test_cli_prints_the_locals_at_each_step(shop: Path) -> None:
    assert cli("run", "shopcli.py:order", "ada", "42", "--id", "o-1")[0] == 0
    code, out, _ = cli("show", "o-1", "--locals", "--at", "0")
    assert code == 0, out
    assert "step 0 of 0..1" in out and "payment = 'pay" not in out and "shopcli.py:14" in out
    assert "user   = 'ada'" in out and "amount = 42" in out
    code, out, _ = cli("show", "o-1", "--locals")
    assert code == 0 and "step 1 of 0..1" in out and "payment = 'pay-42'" in out
    assert "shopcli.py:15" in out  # the frame: its file and line


def test_cli_finds_the_code_or_says_how_to_pass_it(shop: Path) -> None:
    assert cli("run", "shopcli.py:order", "ada", "42", "--id", "o-1")[0] == 0
    outside = durable_cli(
        "show", "o-1", "--locals", "--store", str(shop / ".durable"), cwd=shop / "elsewhere"
    )
    assert outside.returncode == 2 and "--code FILE_OR_MODULE" in outside.stderr, outside.stderr
    given = durable_cli(
        "show", "o-1", "--locals", "--code", str(shop / "shopcli.py"), "--store", str(shop / ".durable"),
        cwd=shop / "elsewhere",
    )  # fmt: skip
    assert given.returncode == 0 and "payment = 'pay-42'" in given.stdout, given.stderr
    wrong = durable_cli(
        "show", "o-1", "--locals", "--code", str(shop / "slowcli.py"), "--store", str(shop / ".durable"),
        cwd=shop / "elsewhere",
    )  # fmt: skip
    assert wrong.returncode == 2 and "defines: slow" in wrong.stderr, wrong.stderr


def test_cli_json(shop: Path) -> None:
    assert cli("run", "shopcli.py:order", "ada", "42", "--id", "o-1")[0] == 0
    code, out, _ = cli("show", "o-1", "--locals", "--at", "1", "--json")
    assert code == 0
    document = json.loads(out)
    assert list(document) == [
        "version", "id", "workflow", "step", "first_step", "last_step", "ended", "doing", "outcome", "frames"
    ]  # fmt: skip
    assert (document["step"], document["ended"], document["outcome"]) == (1, True, "None")
    [frame] = document["frames"]
    assert list(frame) == ["function", "file", "line", "source", "locals"]
    assert {"name": "payment", "type": "str", "value": "'pay-42'"} in frame["locals"]


def test_cli_exit_codes(shop: Path) -> None:
    assert cli("run", "shopcli.py:order", "ada", "42", "--id", "o-1")[0] == 0
    code, out, err = cli("show", "o-1", "--locals", "--at", "2")
    assert code == 2 and out == "" and "never reached step 2" in err and err.count("\n") == 1
    code, _, err = cli("show", "o-1", "--at", "1")
    assert code == 2 and "--at and --code go with --locals" in err
    code, _, err = cli("show", "nope", "--locals")
    assert code == 2 and "no run 'nope'" in err
    # The workflow changed: the receipt goes out first.
    changed = SHOP.replace(
        'payment = yield charge(amount)\n        yield email(user, "receipt " + payment)',
        'yield email(user, "receipt")\n        payment = yield charge(amount)',
    )
    assert changed != SHOP
    (shop / "shopcli2.py").write_text(textwrap.dedent(changed))
    code, out, err = cli("show", "o-1", "--locals", "--code", "shopcli2.py")
    assert code == 1 and out == ""
    assert "no longer matches its journal" in err and "diverged from its journal at step 0" in err
    assert "journal: activity charge(42)" in err and "code:    activity email('ada', 'receipt')" in err


def test_cli_refuses_encoded_payloads_without_the_codec(shop: Path) -> None:
    (shop / "codecmod.py").write_text("import durable.codecs\ncodec = durable.codecs.Zlib(min_size=0)\n")
    sys.path.insert(0, str(shop))
    codec = importlib.import_module("codecmod").codec
    order = importlib.import_module("shopcli").order
    sealed = durable.FileStore(shop / ".durable", codec=codec)
    assert durable.run(order, "ada", 42, id="o-1", store=sealed) == "pay-42"
    code, _, err = cli("show", "o-1", "--locals")
    assert code == 2 and "--codec" in err, err
    code, out, _ = cli("show", "o-1", "--locals", "--codec", "codecmod:codec")
    assert code == 0 and "payment = 'pay-42'" in out


def start_slow_run(shop: Path) -> subprocess.Popen[bytes]:
    """A real process running the run s-1, inside its 30-second activity."""
    holder = subprocess.Popen(
        [str(Path(sys.executable).parent / "durable"), "run", "slowcli.py:slow", "30", "--id", "s-1"],
        cwd=shop,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = durable.FileStore(shop / ".durable")
    deadline = time.monotonic() + 60
    while b"wait_a_while" not in (store.journal_bytes("s-1") or b""):
        assert time.monotonic() < deadline, "the run never started its activity"
        time.sleep(0.05)
    return holder


def test_no_lock_is_even_tried(shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FileStore tells who holds a run by trying its lock: --locals must not ask (a run
    whose process was killed is unfinished, and its lock is free)."""
    holder = start_slow_run(shop)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    journal = shop / ".durable"
    before = {path: path.read_bytes() for path in journal.rglob("*") if path.is_file()}
    tried: list[int] = []

    def lock(self: Any, fd: int, *args: Any, **kwargs: Any) -> bool:
        tried.append(fd)
        return True

    monkeypatch.setattr(durable.lowlevel.OsFileSystem, "lock", lock)
    code, out, err = cli("show", "s-1", "--locals")
    assert code == 0 and "started = 'yes'" in out, err
    assert tried == []
    assert {path: path.read_bytes() for path in journal.rglob("*") if path.is_file()} == before


def test_nothing_is_written_and_no_lock_is_taken(shop: Path) -> None:
    """Rebuilt while another process holds the run (in its activity): the journal's bytes
    do not change and the holder is not disturbed."""
    holder = start_slow_run(shop)
    try:
        store = durable.FileStore(shop / ".durable")
        before = store.journal_bytes("s-1")
        done = durable_cli("show", "s-1", "--locals", cwd=shop)
        assert done.returncode == 0, done.stderr
        assert "the run's state now" in done.stdout and "started = 'yes'" in done.stdout
        assert "journal  in flight" in done.stdout
        assert store.journal_bytes("s-1") == before
        assert holder.poll() is None  # still running, still holding the run
        listed = durable_cli("ls", "--json", cwd=shop)
        assert json.loads(listed.stdout)[0]["status"] == "running"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
