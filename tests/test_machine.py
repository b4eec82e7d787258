"""The pure replay core: journal events in, commands out. No trio, no store, no clock.

Events are built by hand and fed to :class:`durable._core.machine.Replay`, exactly as
the executor feeds a journal read back after a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
import pytest

import durable
from durable._core import events as ev
from durable._core.machine import Replay, Step
from durable._core.outcomes import Raised, Returned
from durable._core.values import dumps, encode_call, loads

RUN = "order-1"
T0 = 1_700_000_000.0

calls: list[str] = []  # what the activities below did; replay must never call them


@durable.activity
def charge(amount: int, token: str) -> str:
    calls.append("charge")
    return "pay-1"


@durable.activity
def refund(payment: str) -> None:
    calls.append("refund")


@durable.activity
def send_email(user: str, message: str) -> None:
    calls.append("send_email")


@durable.activity
def reserve(item: str) -> str:
    calls.append("reserve")
    return "r-1"


@pytest.fixture(autouse=True)
def _no_calls_recorded() -> Any:
    calls.clear()
    yield
    assert calls == [], "the replay core called an activity function"


# --- journal events, by hand ---------------------------------------------------


def run_started(wf: durable.Workflow[..., Any], *args: Any, **kwargs: Any) -> ev.RunStarted:
    return ev.RunStarted(RUN, wf.name, encode_call(args, kwargs, what="test"), T0)


def scheduled(seq: int, act: durable.Activity[..., Any], *args: Any, **kwargs: Any) -> ev.ActivityScheduled:
    return ev.ActivityScheduled(seq, act.name, encode_call(args, kwargs, what="test"), T0 + seq)


def completed(seq: int, value: Any, attempts: int = 1) -> ev.ActivityCompleted:
    return ev.ActivityCompleted(seq, dumps(value), attempts, T0 + seq + 0.5)


def failed(seq: int, type_name: str, message: str, attempts: int) -> ev.ActivityFailed:
    return ev.ActivityFailed(seq, durable.ErrorInfo(type_name, message), attempts, T0 + seq + 0.5)


def attempt_failed(seq: int, attempt: int, retry_at: float) -> ev.AttemptFailed:
    return ev.AttemptFailed(seq, attempt, durable.ErrorInfo("OSError", "flaky"), retry_at, T0 + attempt)


def replay(wf: durable.Workflow[..., Any], args: tuple[Any, ...], *events: ev.Event) -> Replay:
    core = Replay(wf, run_started(wf, *args))
    for event in events:
        core.apply(event)
    return core


def line_of(marker: str) -> int:
    """The line number of the one line in this file that ends with ``marker``."""
    lines = Path(__file__).read_text().splitlines()
    found = [n for n, line in enumerate(lines, 1) if line.rstrip().endswith(marker)]
    assert len(found) == 1, marker
    return found[0]


def result_of(core: Replay) -> Any:
    assert isinstance(core.outcome, Returned), core.outcome
    return loads(core.outcome.result)


# --- workflows -----------------------------------------------------------------


@durable.workflow(name="test_machine.process_order")
def process_order(customer: str, amount: int, card_tok: str):
    payment_id = yield charge(amount, card_tok)
    yield send_email(customer, "Receipt for " + payment_id)
    return payment_id


@durable.workflow(name="test_machine.saga")
def saga(amount: int):
    try:
        payment = yield charge(amount, "tok")
    except durable.ActivityError as exc:
        return {"failed": exc.type_name, "message": exc.message, "attempts": exc.attempts}
    yield refund(payment)
    return "refunded"


# --- a new run -------------------------------------------------------------------


def test_a_new_run_is_suspended_at_its_first_command_as_step_0() -> None:
    core = replay(process_order, ("alice", 4200, "tok_visa"))
    assert core.outcome is None
    assert core.pending == {0: Step(0, charge(4200, "tok_visa"))}
    assert core.pending[0].scheduled_at is None


def test_workflow_arguments_come_from_the_run_started_event() -> None:
    @durable.workflow
    def echo(a: int, b: str = "", *, c: Any = None):
        return [a, b, c]
        yield  # pragma: no cover

    core = Replay(echo, ev.RunStarted(RUN, echo.name, encode_call((1,), {"c": [2], "b": "x"}, what="t"), T0))
    assert result_of(core) == [1, "x", [2]]


def test_arguments_that_do_not_fit_the_signature_make_the_run_raise() -> None:
    core = replay(process_order, ("alice",))
    assert isinstance(core.outcome, Raised)
    assert core.outcome.error.type == "TypeError"


# --- replay feeds recorded outcomes -------------------------------------------


def test_a_recorded_result_is_what_the_generator_receives() -> None:
    core = replay(
        process_order,
        ("alice", 4200, "tok_visa"),
        scheduled(0, charge, 4200, "tok_visa"),
        completed(0, "pay-from-journal"),
    )
    assert list(core.pending) == [1]
    assert core.pending[1].command == send_email("alice", "Receipt for pay-from-journal")


def test_a_completed_run_replays_to_its_recorded_result_without_calling_activities() -> None:
    core = replay(
        process_order,
        ("alice", 4200, "tok_visa"),
        scheduled(0, charge, 4200, "tok_visa"),
        completed(0, "pay-9"),
        scheduled(1, send_email, "alice", "Receipt for pay-9"),
        completed(1, None),
        ev.RunCompleted(dumps("pay-9"), T0 + 9),
    )
    assert result_of(core) == "pay-9"
    assert core.pending == {}
    assert isinstance(core.terminal, ev.RunCompleted)


def test_recorded_values_arrive_as_the_journal_decodes_them() -> None:
    @durable.workflow
    def keep():
        value = yield reserve("x")
        return value

    core = replay(keep, (), scheduled(0, reserve, "x"), completed(0, (1, [2, 3])))
    assert result_of(core) == (1, [2, 3])  # a tuple stays a tuple, a list a list
    old = replay(
        keep, (), scheduled(0, reserve, "x"), ev.ActivityCompleted(0, cbor2.dumps([1, [2, 3]]), 1, T0)
    )
    assert result_of(old) == [1, [2, 3]]  # what a journal from before typed values holds


def test_a_recorded_failure_is_raised_at_the_yield_as_activity_error() -> None:
    seen: list[durable.ActivityError] = []

    @durable.workflow
    def catches():
        try:
            yield charge(10, "tok")
        except durable.ActivityError as exc:
            seen.append(exc)
        return "caught"

    core = replay(catches, (), scheduled(0, charge, 10, "tok"), failed(0, "billing.Declined", "no funds", 4))
    assert result_of(core) == "caught"
    [error] = seen
    assert (error.type_name, error.message, error.attempts) == ("billing.Declined", "no funds", 4)
    assert (error.activity, error.seq) == (charge.name, 0)
    assert str(error) == f"activity {charge.name!r} failed after 4 attempts: billing.Declined: no funds"


def test_a_workflow_that_catches_activity_error_can_go_on_to_compensate() -> None:
    @durable.workflow
    def compensates():
        payment = yield charge(10, "tok")
        try:
            yield reserve("book")
        except durable.ActivityError:
            yield refund(payment)
            return "compensated"
        return "done"

    core = replay(
        compensates,
        (),
        scheduled(0, charge, 10, "tok"),
        completed(0, "pay-1"),
        scheduled(1, reserve, "book"),
        failed(1, "OutOfStock", "none left", 1),
    )
    assert core.pending == {2: Step(2, refund("pay-1"))}
    core.apply(scheduled(2, refund, "pay-1"))
    core.apply(completed(2, None))
    assert result_of(core) == "compensated"


def test_an_uncaught_activity_error_makes_the_run_raise_it() -> None:
    core = replay(
        process_order,
        ("alice", 1, "tok"),
        scheduled(0, charge, 1, "tok"),
        failed(0, "ValueError", "bad card", 1),
    )
    assert isinstance(core.outcome, Raised)
    assert core.outcome.error.type == "durable.ActivityError"
    assert "failed after 1 attempt: ValueError: bad card" in core.outcome.error.message


def test_the_saga_result_carries_the_error_facts() -> None:
    core = replay(saga, (5,), scheduled(0, charge, 5, "tok"), failed(0, "KeyError", "'k'", 3))
    assert result_of(core) == {"failed": "KeyError", "message": "'k'", "attempts": 3}


def test_run_resumed_events_change_nothing() -> None:
    core = replay(process_order, ("a", 1, "t"), scheduled(0, charge, 1, "t"), ev.RunResumed(T0 + 5, 1234))
    assert list(core.pending) == [0]
    assert core.outcome is None


# --- pending and scheduled state -----------------------------------------------


def test_scheduling_claims_the_pending_step() -> None:
    core = replay(process_order, ("a", 1, "t"), scheduled(0, charge, 1, "t"))
    step = core.pending[0]
    assert step.scheduled_at == T0
    assert (step.failed_attempts, step.retry_at) == (0, None)


def test_attempt_failures_keep_the_attempt_count_and_the_retry_time() -> None:
    core = replay(
        process_order,
        ("a", 1, "t"),
        scheduled(0, charge, 1, "t"),
        attempt_failed(0, 1, retry_at=T0 + 10),
        attempt_failed(0, 2, retry_at=T0 + 30),
    )
    step = core.pending[0]
    assert (step.failed_attempts, step.retry_at) == (2, T0 + 30)
    assert core.outcome is None


def test_the_pending_command_keeps_its_per_call_options() -> None:
    @durable.workflow
    def with_options():
        yield charge(1, "t").with_options(retries=7, timeout="5s")

    step = replay(with_options, ()).pending[0]
    assert (step.command.policy.retries, step.command.policy.timeout) == (7, 5.0)


def test_an_event_for_a_step_that_is_not_scheduled_is_that_runs_journal_corrupt_error() -> None:
    # A journal that contradicts itself is damage (a foreign or crafted journal); durable
    # never writes one, so the message also says it would be a bug in durable.
    core = replay(process_order, ("a", 1, "t"))
    with pytest.raises(durable.JournalCorruptError, match="this is a bug in durable") as caught:
        core.apply(completed(0, "x"))
    assert "never started" in str(caught.value)


@pytest.mark.parametrize(
    "event",
    [
        ev.StepCancelled(99, 1.0),
        ev.TimerFired(0, 1.0),
        ev.RunStarted("r", "wf", b"\x82\x80\xa0", 1.0),
    ],
    ids=["a cancelled step that lost no race", "a timer that never started", "a second RunStarted"],
)
def test_a_journal_that_contradicts_itself_is_journal_corrupt_error(event: Any) -> None:
    core = replay(process_order, ("a", 1, "t"))
    with pytest.raises(durable.JournalCorruptError, match="contradicts itself"):
        core.apply(event)


# --- outcomes -------------------------------------------------------------------


def test_a_workflow_that_raises_has_the_error_as_its_outcome() -> None:
    @durable.workflow
    def raises(amount: int):
        yield charge(amount, "t")
        raise ValueError(f"amount {amount} is too large")

    core = replay(raises, (99,), scheduled(0, charge, 99, "t"), completed(0, "p"))
    assert isinstance(core.outcome, Raised)
    assert (core.outcome.error.type, core.outcome.error.message) == ("ValueError", "amount 99 is too large")
    assert "raise ValueError" in core.outcome.error.traceback
    assert core.pending == {}


def test_a_workflow_that_raises_before_its_first_yield_has_the_error_as_its_outcome() -> None:
    @durable.workflow
    def raises_at_once():
        raise KeyError("missing")
        yield  # pragma: no cover

    core = replay(raises_at_once, ())
    assert isinstance(core.outcome, Raised)
    assert core.outcome.error.type == "KeyError"


def test_an_unencodable_result_makes_the_run_raise_serialization_error() -> None:
    @durable.workflow
    def returns_an_object():
        yield reserve("x")
        return {"handle": object()}

    core = replay(returns_an_object, (), scheduled(0, reserve, "x"), completed(0, "r"))
    assert isinstance(core.outcome, Raised)
    assert core.outcome.error.type == "durable.SerializationError"
    assert "object" in core.outcome.error.message
    assert returns_an_object.name in core.outcome.error.message


# --- yielding something that is not a command ------------------------------------


def test_yielding_a_plain_value_is_a_type_error_saying_what_to_yield() -> None:
    @durable.workflow
    def yields_int():
        yield 42  # yields an int

    with pytest.raises(TypeError, match="must yield commands") as info:
        replay(yields_int, ())
    message = str(info.value)
    assert "42 (int)" in message
    assert RUN in message
    assert f"{__file__}:{line_of('# yields an int')}" in message


def test_yielding_the_activity_itself_says_to_call_it() -> None:
    @durable.workflow
    def yields_activity():
        yield charge

    with pytest.raises(TypeError, match=r"call the activity to get a command: `yield .*charge\(\.\.\.\)`"):
        replay(yields_activity, ())


def test_yielding_a_generator_says_to_use_yield_from() -> None:
    def helper():
        yield charge(1, "t")

    @durable.workflow
    def yields_generator():
        yield helper()

    with pytest.raises(TypeError, match="use `yield from helper"):
        replay(yields_generator, ())


def test_a_non_command_after_a_replayed_step_is_a_type_error_too() -> None:
    @durable.workflow
    def later():
        yield reserve("x")
        yield "not a command"

    core = replay(later, ())
    core.apply(scheduled(0, reserve, "x"))
    with pytest.raises(TypeError, match="'not a command' \\(str\\)"):
        core.apply(completed(0, "r"))


# --- divergence ----------------------------------------------------------------


def diverge(
    wf: durable.Workflow[..., Any], args: tuple[Any, ...], *events: ev.Event
) -> durable.NonDeterminismError:
    with pytest.raises(durable.NonDeterminismError) as info:
        replay(wf, args, *events)
    return info.value


def assert_names(error: durable.NonDeterminismError, *, seq: int, recorded: str, yielded: str) -> None:
    assert (error.run_id, error.seq, error.recorded, error.yielded) == (RUN, seq, recorded, yielded)
    message = str(error)
    assert f"(run {RUN!r})" in message
    assert f"at step {seq}" in message
    assert f"journal: {recorded}" in message
    assert f"code:    {yielded}" in message


def test_another_activity_name_diverges_naming_both_sides_and_the_yield() -> None:
    @durable.workflow
    def renamed():
        yield reserve("x")  # yields reserve where the journal has charge

    error = diverge(renamed, (), scheduled(0, charge, 1, "t"))
    assert_names(
        error, seq=0, recorded=f"activity {charge.name}(1, 't')", yielded=f"activity {reserve.name}('x')"
    )
    assert error.workflow == renamed.name
    line = line_of("# yields reserve where the journal has charge")
    assert error.location is not None
    assert error.location.startswith(f"{__file__}:{line}: yield reserve(")
    assert f"at:      {error.location}" in str(error)


def test_other_arguments_diverge_showing_both_calls() -> None:
    @durable.workflow
    def other_amount():
        yield charge(200, "tok")  # yields another amount

    error = diverge(other_amount, (), scheduled(0, charge, 100, "tok"))
    assert_names(
        error,
        seq=0,
        recorded=f"activity {charge.name}(100, 'tok')",
        yielded=f"activity {charge.name}(200, 'tok')",
    )
    assert error.location is not None
    assert f":{line_of('# yields another amount')}:" in error.location


def test_keyword_arguments_are_compared_whatever_their_order() -> None:
    @durable.workflow
    def keywords():
        return (yield send_email(message="hi", user="bob"))

    core = replay(keywords, (), scheduled(0, send_email, user="bob", message="hi"), completed(0, "ok"))
    assert result_of(core) == "ok"


def test_a_skipped_step_diverges_at_its_sequence_number() -> None:
    @durable.workflow
    def skips():
        yield reserve("a")
        yield refund("p")  # yields refund where the journal has charge

    error = diverge(
        skips,
        (),
        scheduled(0, reserve, "a"),
        completed(0, "r"),
        scheduled(1, charge, 1, "t"),
    )
    assert_names(
        error, seq=1, recorded=f"activity {charge.name}(1, 't')", yielded=f"activity {refund.name}('p')"
    )
    assert error.location is not None
    assert f":{line_of('# yields refund where the journal has charge')}:" in error.location


def test_fewer_steps_diverge_when_the_code_returns_where_the_journal_goes_on() -> None:
    @durable.workflow
    def returns_early():
        yield reserve("a")
        return "early"

    error = diverge(
        returns_early,
        (),
        scheduled(0, reserve, "a"),
        completed(0, "r"),
        scheduled(1, charge, 1, "t"),
    )
    assert_names(error, seq=1, recorded=f"activity {charge.name}(1, 't')", yielded="returned 'early'")
    assert error.location is None


def test_a_workflow_that_now_raises_where_the_journal_goes_on_diverges() -> None:
    @durable.workflow
    def now_raises():
        yield reserve("a")
        raise RuntimeError("new check")

    error = diverge(
        now_raises, (), scheduled(0, reserve, "a"), completed(0, "r"), scheduled(1, charge, 1, "t")
    )
    assert error.seq == 1
    assert error.yielded == "raised RuntimeError: new check"


def test_more_steps_diverge_when_the_journal_says_the_run_completed() -> None:
    @durable.workflow
    def one_more():
        yield reserve("a")
        yield charge(1, "t")  # a step the completed run never took

    error = diverge(
        one_more,
        (),
        scheduled(0, reserve, "a"),
        completed(0, "r"),
        ev.RunCompleted(dumps(None), T0 + 3),
    )
    assert_names(error, seq=1, recorded="the run completed", yielded=f"activity {charge.name}(1, 't')")
    assert error.location is not None
    assert f":{line_of('# a step the completed run never took')}:" in error.location


def test_more_steps_diverge_when_the_journal_says_the_run_failed() -> None:
    @durable.workflow
    def no_longer_fails():
        yield reserve("a")

    error = diverge(no_longer_fails, (), ev.RunFailed(durable.ErrorInfo("ValueError", "old"), T0))
    assert error.seq == 0
    assert error.recorded == "the run failed with ValueError: old"


def test_a_divergence_inside_a_yield_from_helper_names_the_helpers_line() -> None:
    def book(item: str):
        reservation = yield reserve(item + "!")  # the helper's yield
        return reservation

    @durable.workflow
    def uses_helper():
        reservation = yield from book("seat")
        return reservation

    error = diverge(uses_helper, (), scheduled(0, reserve, "seat"))
    assert_names(
        error, seq=0, recorded=f"activity {reserve.name}('seat')", yielded=f"activity {reserve.name}('seat!')"
    )
    assert error.location is not None
    helper_line = line_of("# the helper's yield")
    assert error.location.startswith(f"{__file__}:{helper_line}:")


def test_a_second_schedule_of_the_same_step_diverges() -> None:
    error = diverge(process_order, ("a", 1, "t"), scheduled(0, charge, 1, "t"), scheduled(0, charge, 1, "t"))
    assert error.seq == 0


def test_the_message_says_how_to_change_a_workflow_safely() -> None:
    error = diverge(process_order, ("a", 1, "t"), scheduled(0, reserve, "x"))
    assert "durable.patched" in str(error)


# --- decorators -----------------------------------------------------------------


def test_a_plain_function_cannot_be_a_workflow() -> None:
    def not_a_generator(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="not a generator function; a workflow yields commands"):
        durable.workflow(not_a_generator)


def test_an_async_function_cannot_be_a_workflow() -> None:
    async def coroutine() -> None:
        pass

    with pytest.raises(TypeError, match=r"async function .*not async/await"):
        durable.workflow(coroutine)
    with pytest.raises(TypeError, match="async function"):
        durable.workflow(name="x")(coroutine)


def test_starting_a_call_of_a_workflow_says_how_to_start_it() -> None:
    # Calling a workflow makes a child-workflow command; it runs nothing by itself.
    call = process_order("alice", 1, "tok")
    expected = r"durable\.run\(process_order, \.\.\.\), not durable\.run\(process_order\(\.\.\.\)\)"
    with pytest.raises(TypeError, match=expected):
        durable.run(call, store=durable.MemoryStore())  # type: ignore[call-overload]


def test_the_undecorated_functions_stay_reachable() -> None:
    assert saga.fn.__name__ == "saga"
    assert reserve.fn.__name__ == "reserve"
    assert not isinstance(reserve.fn, durable.Activity)


def test_calling_an_activity_builds_a_command_and_runs_nothing() -> None:
    command = charge(1, "t")
    assert isinstance(command, durable.ActivityCall)
    assert command == charge(1, "t")
    assert command != charge(2, "t")
    assert command.describe() == f"activity {charge.name}(1, 't')"


def test_names_default_to_the_qualname_and_can_be_chosen() -> None:
    @durable.workflow
    def unnamed():
        yield charge(1, "t")

    @durable.workflow(name="orders.v1")
    def named():
        yield charge(1, "t")

    assert unnamed.name == unnamed.fn.__qualname__
    assert unnamed.name.endswith("<locals>.unnamed")
    assert named.name == "orders.v1"
    assert charge.name == "charge"


# --- the records of a live run, built by the core (durable._core.records) ------------


def test_the_core_builds_the_records_of_a_live_step_without_trio() -> None:
    from durable._core import records as rec  # noqa: PLC0415

    @durable.activity(retries=1, initial_backoff="2s", name="tests.machine.flaky")
    def flaky(x: int) -> int:
        return x

    @durable.workflow(name="tests.machine.calls_flaky")
    def calls_flaky():  # type: ignore[no-untyped-def]
        return (yield flaky(1))

    core = Replay(calls_flaky, ev.RunStarted("r", "tests.machine.calls_flaky", b"\x82\x80\xa0", 0.0))
    [step] = core.pending.values()
    scheduled = rec.started(core, step, 10.0)
    assert scheduled == ev.ActivityScheduled(0, "tests.machine.flaky", step.command.encoded_args, 10.0)
    core.apply(scheduled)
    command = step.command
    first = rec.attempt_failed(step, command, 1, ValueError("boom"), 11.0, 10.0)
    assert isinstance(first, ev.AttemptFailed) and first.retry_at == 13.0  # the policy decided
    core.apply(first)
    second = rec.attempt_failed(step, command, 2, ValueError("boom"), 14.0, 10.0)
    assert isinstance(second, ev.ActivityFailed) and second.attempts == 2  # retries spent
    unjournalable = rec.activity_returned(step, command, object(), 1, 12.0)
    assert isinstance(unjournalable, ev.ActivityFailed)
    assert unjournalable.error.type == "durable.SerializationError"  # a result it cannot hold fails the step
    returned = rec.activity_returned(step, command, 41, 2, 15.0)
    assert isinstance(returned, ev.ActivityCompleted)
    core.apply(returned)
    assert isinstance(core.outcome, Returned)


# --- what now? the core's actions (durable._core.actions), without trio ---------------


def test_the_core_answers_what_now_with_one_action_per_step_and_finish() -> None:
    from durable._core import actions as act  # noqa: PLC0415
    from durable._core import records as rec  # noqa: PLC0415

    @durable.activity(name="tests.machine.act_double")
    def double(x: int) -> int:
        return 2 * x

    @durable.workflow(name="tests.machine.act_flow")
    def flow():  # type: ignore[no-untyped-def]
        if (yield durable.patched("v2")):
            pass
        yield durable.sleep(5)
        both = yield durable.gather(double(1), double(2))
        return both

    core = Replay(flow, ev.RunStarted("r", "tests.machine.act_flow", b"\x82\x80\xa0", 0.0))
    assert isinstance(act.next_action(core), act.RecordPatch)
    core.apply(rec.patch_reached(core, 1.0))
    timer = act.next_action(core)
    assert isinstance(timer, act.WaitTimer)
    core.apply(rec.started(core, timer.step, 1.0))
    core.apply(rec.timer_fired(timer.step, 6.0))
    group = act.next_action(core)
    assert isinstance(group, act.RunGroup)
    assert [type(child) for child in group.actions] == [act.RunActivity, act.RunActivity]
    for child, value in zip(group.actions, (2, 4), strict=True):
        command = child.step.command
        core.apply(rec.started(core, child.step, 7.0))
        core.apply(rec.activity_returned(child.step, command, value, 1, 8.0))
    finish = act.next_action(core)
    assert isinstance(finish, act.Finish) and not finish.journaled
    assert isinstance(finish.outcome, Returned)


def test_a_lost_race_is_closed_before_the_run_goes_on() -> None:
    from durable._core import actions as act  # noqa: PLC0415
    from durable._core import records as rec  # noqa: PLC0415

    @durable.activity(name="tests.machine.act_slow")
    def slow() -> str:
        return "slow"

    @durable.workflow(name="tests.machine.act_race")
    def racing():  # type: ignore[no-untyped-def]
        return (yield durable.race(slow(), durable.sleep(1)))

    core = Replay(racing, ev.RunStarted("r", "tests.machine.act_race", b"\x82\x80\xa0", 0.0))
    group = act.next_action(core)
    assert isinstance(group, act.RunGroup)
    activity, timer = (child.step for child in group.actions)
    core.apply(rec.started(core, activity, 1.0))
    core.apply(rec.started(core, timer, 1.0))
    core.apply(rec.timer_fired(timer, 2.0))  # the timer wins
    close = act.next_action(core)
    assert isinstance(close, act.CloseCancelled)
    assert [step.seq for step in close.steps] == [activity.seq]
    core.apply(rec.step_cancelled(activity.seq, 2.0))
    assert isinstance(act.next_action(core), act.Finish)


# --- write-ahead, decided by the core (durable_start), tested without trio -------------


def test_write_ahead_rules_are_the_cores_answers() -> None:
    from durable._core import actions as act  # noqa: PLC0415
    from durable._core import records as rec  # noqa: PLC0415

    @durable.activity(name="tests.machine.wa_act")
    def act_(x: int) -> int:
        return x

    @durable.workflow(name="tests.machine.wa_child")
    def child():  # type: ignore[no-untyped-def]
        return (yield act_(0))

    @durable.workflow(name="tests.machine.wa_flow")
    def flow():  # type: ignore[no-untyped-def]
        yield act_(1)  # nothing recorded yet: its start need not be durable (a flush)
        token = yield durable.side_effect(lambda: 7)
        yield act_(token)  # carries a recorded value out of the process: durable first
        yield durable.sleep(60)  # a new deadline: durable before waiting
        return (yield child())  # a child's start: always durable

    core = Replay(flow, ev.RunStarted("r", "tests.machine.wa_flow", b"\x82\x80\xa0", 0.0))

    def finish_activity(action: Any, value: int) -> None:
        core.apply(rec.started(core, action.step, 1.0))
        core.values_durable()  # what the executor does after the start (sync or flush)
        core.apply(rec.activity_returned(action.step, action.step.command, value, 1, 2.0))

    first = act.next_action(core)
    assert isinstance(first, act.RunActivity) and not first.durable_start
    finish_activity(first, 1)
    value = act.next_action(core)
    assert isinstance(value, act.RecordValue) and not value.durable_start
    core.apply(rec.value_recorded(value.step, value.step.command.name, lambda: 7, 3.0))
    second = act.next_action(core)
    assert isinstance(second, act.RunActivity) and second.durable_start  # the side effect's value
    finish_activity(second, 7)
    timer = act.next_action(core)
    assert isinstance(timer, act.WaitTimer) and timer.durable_start
    core.apply(rec.started(core, timer.step, 4.0))
    core.apply(rec.timer_fired(timer.step, 64.0))
    started_child = act.next_action(core)
    assert isinstance(started_child, act.RunChild) and started_child.durable_start


def test_the_core_says_whether_a_steps_start_record_is_still_to_journal() -> None:
    """A step replay already saw started is picked up where it was: no second start record
    (an executor that wrote one would break the journal's one-start-per-step rule)."""
    from durable._core import actions as act  # noqa: PLC0415
    from durable._core import records as rec  # noqa: PLC0415

    @durable.activity(name="tests.machine.js_act")
    def js_act() -> int:
        return 1

    @durable.workflow(name="tests.machine.js_flow")
    def flow():  # type: ignore[no-untyped-def]
        yield js_act()
        yield durable.sleep(60)
        yield durable.gather(js_act(), durable.sleep(5))

    core = Replay(flow, ev.RunStarted("r", "tests.machine.js_flow", b"\x82\x80\xa0", 0.0))
    fresh = act.next_action(core)
    assert isinstance(fresh, act.RunActivity) and fresh.journal_start
    core.apply(rec.started(core, fresh.step, 1.0))  # scheduled, then the process died
    resumed = act.next_action(core)
    assert isinstance(resumed, act.RunActivity) and not resumed.journal_start
    core.apply(rec.activity_returned(resumed.step, resumed.step.command, 1, 1, 2.0))
    timer = act.next_action(core)
    assert isinstance(timer, act.WaitTimer) and timer.journal_start
    core.apply(rec.started(core, timer.step, 3.0))
    waiting = act.next_action(core)
    assert isinstance(waiting, act.WaitTimer) and not waiting.journal_start
    core.apply(rec.timer_fired(waiting.step, 63.0))
    group = act.next_action(core)
    assert isinstance(group, act.RunGroup)
    assert [child.journal_start for child in group.actions] == [True, True]
    core.apply(rec.started(core, group.actions[0].step, 64.0))  # only the first got its record
    again = act.next_action(core)
    assert isinstance(again, act.RunGroup)
    assert [child.journal_start for child in again.actions] == [False, True]


def test_a_signal_or_cancel_journaled_before_an_activity_makes_its_start_durable() -> None:
    from durable._core import actions as act  # noqa: PLC0415

    @durable.activity(name="tests.machine.wa_act2")
    def act2() -> int:
        return 1

    @durable.workflow(name="tests.machine.wa_flow2")
    def flow2():  # type: ignore[no-untyped-def]
        return (yield act2())

    core = Replay(flow2, ev.RunStarted("r", "tests.machine.wa_flow2", b"\x82\x80\xa0", 0.0))
    core.values_durable()
    assert not act.next_action(core).durable_start  # type: ignore[union-attr]
    core.apply(ev.SignalReceived("note", b"\xf6", 1.0, "m1"))  # delivered while waiting to start
    action = act.next_action(core)
    assert isinstance(action, act.RunActivity) and action.durable_start


def test_a_cancelled_step_is_closed_before_any_cleanup_runs() -> None:
    from durable._core import actions as act  # noqa: PLC0415
    from durable._core import records as rec  # noqa: PLC0415

    @durable.activity(name="tests.machine.wa_work")
    def work() -> None:
        return None

    @durable.activity(name="tests.machine.wa_cleanup")
    def cleanup() -> None:
        return None

    @durable.workflow(name="tests.machine.wa_cancellable")
    def cancellable():  # type: ignore[no-untyped-def]
        try:
            yield work()
        except durable.Cancelled:
            yield cleanup()
            raise

    core = Replay(cancellable, ev.RunStarted("r", "tests.machine.wa_cancellable", b"\x82\x80\xa0", 0.0))
    running = act.next_action(core)
    assert isinstance(running, act.RunActivity)
    core.apply(rec.started(core, running.step, 1.0))
    core.apply(ev.CancelRequested("stop", 2.0, "m1"))  # journaled while the step runs
    close = act.next_action(core)
    assert isinstance(close, act.CloseCancelled)  # the cancelled step is closed first...
    assert [step.seq for step in close.steps] == [running.step.seq]
    core.apply(rec.step_cancelled(running.step.seq, 2.0))
    cleaning = act.next_action(core)
    assert isinstance(cleaning, act.RunActivity)  # ...then the cleanup runs, and its start
    assert cleaning.step.command.name == "tests.machine.wa_cleanup"
    assert cleaning.durable_start  # is durable: the cancel request came from outside


# --- a retried run (RunRetried supersedes the failure before it) -------------------

from durable._core import machine as _machine  # noqa: E402
from durable._core.retried import reopened_steps, supersession  # noqa: E402

RETRY_T = T0 + 1000.0
workflow_bug: list[bool] = [True]  # the bug of retryable_flow below, fixed by setting it False


@durable.workflow(name="test_machine.retryable")
def retryable_flow(customer: str):
    payment = yield charge(10, "tok")
    if workflow_bug[0]:
        raise KeyError("customer")  # a bug in the workflow itself, fixed later
    yield send_email(customer, payment)
    return payment


def whole(wf: durable.Workflow[..., Any], args: tuple[Any, ...], *events: ev.Event) -> Replay:
    """The journal replayed whole, as a recovering process does (``durable.lowlevel.replay``)."""
    return _machine.replay(wf, [run_started(wf, *args), *events])


def run_failed(error: str = "ActivityError") -> ev.RunFailed:
    return ev.RunFailed(durable.ErrorInfo(error, "boom"), T0 + 50)


#: A run whose second step failed for good after two attempts, and failed the run.
FAILED_AT_STEP_1 = (
    scheduled(0, charge, 4200, "tok_visa"),
    completed(0, "pay-1"),
    scheduled(1, send_email, "alice", "Receipt for pay-1"),
    attempt_failed(1, 1, T0 + 2),
    ev.AttemptHeartbeat(1, 2, dumps("half"), T0 + 3),
    attempt_failed(1, 2, T0 + 4),
    failed(1, "OSError", "smtp down", 3),
    run_failed(),
)


def test_a_retry_reopens_the_failed_step_with_fresh_attempts() -> None:
    core = whole(process_order, ("alice", 4200, "tok_visa"), *FAILED_AT_STEP_1, ev.RunRetried(RETRY_T))
    assert core.outcome is None and core.terminal is None
    step = core.pending[1]
    assert step.command == send_email("alice", "Receipt for pay-1")
    assert (step.failed_attempts, step.retry_at) == (0, None)  # attempt 1 next, at once
    assert step.scheduled_at == RETRY_T  # its time budget counts from the retry
    assert core.reopened == {1}


def test_after_the_retry_the_step_counts_attempts_from_1_and_the_run_completes() -> None:
    core = whole(
        process_order,
        ("alice", 4200, "tok_visa"),
        *FAILED_AT_STEP_1,
        ev.RunRetried(RETRY_T, "smtp fixed"),
        ev.RunResumed(RETRY_T, 1),
        attempt_failed(1, 1, RETRY_T + 1),
        completed(1, None, attempts=2),
        ev.RunCompleted(dumps("pay-1"), RETRY_T + 2),
    )
    assert result_of(core) == "pay-1"
    assert isinstance(core.terminal, ev.RunCompleted)


def test_the_superseded_records_are_the_failure_its_attempts_and_the_run_failed() -> None:
    journal = [
        run_started(process_order, "alice", 4200, "tok_visa"),
        *FAILED_AT_STEP_1,
        ev.RunRetried(RETRY_T),
    ]
    plan = supersession(journal, RUN)
    assert sorted(type(journal[i]).__name__ for i in plan.skipped) == sorted(
        ["AttemptFailed", "AttemptHeartbeat", "AttemptFailed", "ActivityFailed", "RunFailed"]
    )
    assert plan.reopened == {len(journal) - 1: (1,)}
    assert reopened_steps(journal[:-1], RUN) == (1,)


def test_a_workflow_that_raised_by_itself_goes_on_with_the_fixed_code() -> None:
    journal = (scheduled(0, charge, 10, "tok"), completed(0, "pay-1"), run_failed("KeyError"))
    assert reopened_steps([run_started(retryable_flow, "bob"), *journal], RUN) == ()
    workflow_bug[0] = True
    try:
        again = whole(retryable_flow, ("bob",), *journal, ev.RunRetried(RETRY_T))
        assert isinstance(again.outcome, Raised)  # not fixed: it raises again (a new RunFailed)
        assert again.terminal is None and again.reopened == frozenset()
        workflow_bug[0] = False
        fixed = whole(retryable_flow, ("bob",), *journal, ev.RunRetried(RETRY_T))
    finally:
        workflow_bug[0] = True
    assert fixed.outcome is None
    assert fixed.pending[1].command == send_email("bob", "pay-1")  # live: a new step
    assert fixed.pending[1].scheduled_at is None
    assert calls == []


def test_a_run_retried_twice_replays_both_retries() -> None:
    core = whole(
        process_order,
        ("alice", 4200, "tok_visa"),
        *FAILED_AT_STEP_1,
        ev.RunRetried(RETRY_T),
        ev.RunResumed(RETRY_T, 1),
        attempt_failed(1, 1, RETRY_T + 1),
        failed(1, "OSError", "still down", 2),
        ev.RunFailed(durable.ErrorInfo("ActivityError", "boom"), RETRY_T + 2),
        ev.RunRetried(RETRY_T + 100),
    )
    assert core.pending[1].failed_attempts == 0
    assert core.pending[1].scheduled_at == RETRY_T + 100
    done = whole(
        process_order,
        ("alice", 4200, "tok_visa"),
        *FAILED_AT_STEP_1,
        ev.RunRetried(RETRY_T),
        attempt_failed(1, 1, RETRY_T + 1),
        failed(1, "OSError", "still down", 2),
        ev.RunFailed(durable.ErrorInfo("ActivityError", "boom"), RETRY_T + 2),
        ev.RunRetried(RETRY_T + 100),
        completed(1, None),
        ev.RunCompleted(dumps("pay-1"), RETRY_T + 101),
    )
    assert result_of(done) == "pay-1"


def test_a_failure_the_workflow_caught_is_replayed_as_it_was() -> None:
    """The saga compensated, then raised: the last step outcome is not a failure, so
    no step is reopened, and replay feeds the recorded failure again."""

    @durable.workflow(name="test_machine.compensating")
    def compensating():  # type: ignore[no-untyped-def]
        try:
            yield charge(1, "tok")
        except durable.ActivityError:
            yield refund("none")
            raise

    journal = (
        scheduled(0, charge, 1, "tok"),
        failed(0, "OSError", "declined", 1),
        scheduled(1, refund, "none"),
        completed(1, None),
        run_failed(),
    )
    assert reopened_steps([run_started(compensating), *journal], RUN) == ()
    core = whole(compensating, (), *journal, ev.RunRetried(RETRY_T))
    assert isinstance(core.outcome, Raised) and core.terminal is None  # it fails again


@durable.activity(name="test_machine.part")
def part(n: int) -> int:
    calls.append(f"part {n}")
    return n


@durable.workflow(name="test_machine.fan_out")
def fan_out():
    return (yield durable.gather(part(1), part(2), part(3)))


def test_a_failed_gather_reopens_the_failed_step_and_the_ones_it_cancelled() -> None:
    journal = (
        scheduled(0, part, 1),
        scheduled(1, part, 2),
        scheduled(2, part, 3),
        completed(0, 1),
        attempt_failed(2, 1, T0 + 9),
        failed(1, "OSError", "down", 1),  # decides the gather
        failed(2, "OSError", "down too", 2),  # arrived with it: step 2 is cancelled after it
        ev.StepCancelled(2, T0 + 10),
        run_failed(),
    )
    core = whole(fan_out, (), *journal, ev.RunRetried(RETRY_T))
    assert sorted(core.pending) == [1, 2]  # step 0 completed: never run again
    assert core.pending[2].failed_attempts == 0 and not core.cancelled
    assert core.reopened == {1, 2}
    done = whole(fan_out, (), *journal, ev.RunRetried(RETRY_T), completed(2, 3), completed(1, 2))
    assert result_of(done) == [1, 2, 3]


def test_a_reopened_timer_of_a_race_gets_a_fresh_deadline() -> None:
    @durable.workflow(name="test_machine.deadline")
    def deadline():  # type: ignore[no-untyped-def]
        return (yield durable.race(part(1), durable.sleep(60)))

    journal = (
        scheduled(0, part, 1),
        ev.TimerStarted(1, 60.0, T0 + 60, T0),
        failed(0, "OSError", "down", 1),
        ev.StepCancelled(1, T0 + 5),
        run_failed(),
    )
    core = whole(deadline, (), *journal, ev.RunRetried(RETRY_T))
    assert core.pending[1].fire_at == RETRY_T + 60
    assert core.pending[0].scheduled_at == RETRY_T


def test_a_race_a_kept_outcome_decides_after_the_superseded_failure() -> None:
    """Step 1 completed after step 0's failure decided the race: after the retry, that
    completion (kept, never run again) wins the race, and step 0 is closed as cancelled."""

    @durable.workflow(name="test_machine.first")
    def first():  # type: ignore[no-untyped-def]
        return (yield durable.race(part(1), part(2)))

    journal = (
        scheduled(0, part, 1),
        scheduled(1, part, 2),
        failed(0, "OSError", "down", 1),
        completed(1, 2),
        ev.StepCancelled(1, T0 + 5),
        run_failed(),
    )
    core = whole(first, (), *journal, ev.RunRetried(RETRY_T))
    assert result_of(core) == (1, 2)
    assert list(core.cancelled) == [0]


def test_a_divergence_after_a_retry_names_the_step_and_both_sides() -> None:
    journal = (*FAILED_AT_STEP_1, ev.RunRetried(RETRY_T), completed(1, None), scheduled(2, refund, "x"))
    with pytest.raises(durable.NonDeterminismError) as caught:
        whole(process_order, ("alice", 4200, "tok_visa"), *journal)
    assert caught.value.seq == 2
    assert "refund" in caught.value.recorded and "returned 'pay-1'" in caught.value.yielded


def test_a_run_retried_that_follows_no_run_failed_is_journal_corrupt_error() -> None:
    with pytest.raises(durable.JournalCorruptError, match="does not follow a RunFailed"):
        whole(
            process_order,
            ("alice", 4200, "tok_visa"),
            scheduled(0, charge, 4200, "tok_visa"),
            ev.RunRetried(1.0),
        )


def test_a_run_retried_applied_event_by_event_says_to_replay_the_whole_journal() -> None:
    core = replay(process_order, ("alice", 4200, "tok_visa"), *FAILED_AT_STEP_1)
    with pytest.raises(durable.DurableError, match=r"replay the whole journal with durable.lowlevel.replay"):
        core.apply(ev.RunRetried(RETRY_T))


def test_a_journal_without_run_retried_is_replayed_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("a journal without RunRetried went through the retried replay")

    monkeypatch.setattr(_machine, "_replay_retried", never)
    core = whole(process_order, ("alice", 4200, "tok_visa"), *FAILED_AT_STEP_1)
    assert isinstance(core.terminal, ev.RunFailed)


# --- what a signal wait journals (SignalAwaited) ---------------------------------------


@durable.workflow
def awaits_approval():  # type: ignore[no-untyped-def]
    return (yield durable.wait_signal("approved"))


@durable.workflow
def awaits_renamed():  # type: ignore[no-untyped-def]
    return (yield durable.wait_signal("approval-given"))


def test_a_journaled_signal_wait_marks_its_step_awaited_and_the_run_waits() -> None:
    from durable._core.actions import ON_MESSAGE, waits_until  # noqa: PLC0415

    core = replay(awaits_approval, ())
    assert not core.pending[0].awaited
    assert waits_until(core) is None  # its wait is not journaled yet: work to do
    core.apply(ev.SignalAwaited(0, "approved", T0 + 1))
    assert core.pending[0].awaited
    assert waits_until(core) == ON_MESSAGE
    core.apply(ev.SignalReceived("approved", dumps(True), T0 + 2, "m-1"))
    assert isinstance(core.outcome, Returned) and loads(core.outcome.result) is True


def test_code_that_waits_for_another_signal_than_the_journal_says_diverges() -> None:
    with pytest.raises(durable.NonDeterminismError) as diverged:
        replay(awaits_renamed, (), ev.SignalAwaited(0, "approved", T0 + 1))
    assert "wait_signal('approved')" in str(diverged.value)
    assert "approval-given" in str(diverged.value)
