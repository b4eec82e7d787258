"""RetryPolicy: validated at construction, and the arithmetic the executor asks of it."""

from __future__ import annotations

import math

import attrs
import pytest

import durable
from durable import RetryPolicy
from durable._core.durations import MAX_DURATION


class Declined(Exception):
    pass


class CardDeclined(Declined):
    pass


# --- construction ------------------------------------------------------------


def test_defaults() -> None:
    policy = RetryPolicy()
    assert policy.retries == 3
    assert policy.timeout is None
    assert policy.initial_backoff == 1.0
    assert policy.backoff == 2.0
    assert policy.max_backoff == 60.0
    assert policy.non_retryable == ()
    assert policy.total_timeout is None


def test_durations_are_parsed_into_seconds() -> None:
    policy = RetryPolicy(timeout="30s", initial_backoff="500ms", max_backoff="2m", total_timeout="1h")
    assert (policy.timeout, policy.initial_backoff, policy.max_backoff, policy.total_timeout) == (
        30.0,
        0.5,
        120.0,
        3600.0,
    )


def test_policies_are_frozen_values() -> None:
    policy = RetryPolicy(retries=2)
    assert policy == RetryPolicy(retries=2)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.retries = 5  # type: ignore[misc]


@pytest.mark.parametrize("retries", [-1, 1.5, "3", True, None])
def test_retries_must_be_a_non_negative_int(retries: object) -> None:
    with pytest.raises(ValueError, match="retries must be a non-negative int") as info:
        RetryPolicy(retries=retries)
    assert repr(retries) in str(info.value)


def test_zero_retries_means_one_attempt() -> None:
    assert RetryPolicy(retries=0).retries == 0


@pytest.mark.parametrize("backoff", [0.5, 0, -2, "2", True])
def test_backoff_must_be_a_factor_of_at_least_one(backoff: object) -> None:
    with pytest.raises(ValueError, match=r"backoff must be a number >= 1\.0"):
        RetryPolicy(backoff=backoff)


def test_a_constant_backoff_is_allowed() -> None:
    assert RetryPolicy(backoff=1).backoff == 1.0


def test_a_zero_timeout_is_refused_with_the_way_to_say_no_limit() -> None:
    with pytest.raises(ValueError, match="use None for no limit"):
        RetryPolicy(timeout=0)


def test_non_retryable_accepts_one_type_or_a_collection() -> None:
    assert RetryPolicy(non_retryable=KeyError).non_retryable == (KeyError,)
    assert RetryPolicy(non_retryable=[KeyError, Declined]).non_retryable == (KeyError, Declined)


@pytest.mark.parametrize("value", ["ValueError", ValueError("x"), [KeyError, 3], int])
def test_non_retryable_must_hold_exception_types(value: object) -> None:
    with pytest.raises(TypeError, match="non_retryable must hold exception types"):
        RetryPolicy(non_retryable=value)


def test_with_options_replaces_fields_and_validates_them() -> None:
    policy = RetryPolicy(retries=3, timeout="10s")
    changed = policy.with_options({"retries": 5, "initial_backoff": "2s"})
    assert (changed.retries, changed.timeout, changed.initial_backoff) == (5, 10.0, 2.0)
    assert policy.retries == 3
    with pytest.raises(ValueError, match="initial_backoff"):
        policy.with_options({"initial_backoff": "3 parsecs"})


def test_with_options_names_unknown_options_and_lists_the_known_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown option.* timout; options are: retries, timeout"):
        RetryPolicy().with_options({"timout": "1s"})


def test_activity_decorator_options_are_the_policy_fields() -> None:
    @durable.activity(retries=5, timeout="30s", non_retryable=Declined)
    def charge() -> None: ...

    assert charge.policy == RetryPolicy(retries=5, timeout=30, non_retryable=(Declined,))
    with pytest.raises(TypeError, match="unknown option"):
        durable.activity(retrys=5)


# --- waits -------------------------------------------------------------------


def test_the_first_wait_is_the_initial_backoff() -> None:
    assert RetryPolicy(initial_backoff="500ms").wait_after(1) == 0.5


def test_each_wait_grows_by_the_backoff_factor() -> None:
    policy = RetryPolicy(initial_backoff=1, backoff=3, max_backoff=None)
    assert [policy.wait_after(n) for n in (1, 2, 3, 4)] == [1, 3, 9, 27]


def test_waits_are_capped_by_max_backoff() -> None:
    policy = RetryPolicy(initial_backoff=1, backoff=2, max_backoff=5)
    assert [policy.wait_after(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]


def test_a_constant_backoff_waits_the_same_every_time() -> None:
    policy = RetryPolicy(initial_backoff=2, backoff=1)
    assert {policy.wait_after(n) for n in range(1, 10)} == {2}


def test_waits_stay_at_max_backoff_after_very_many_attempts() -> None:
    # "Retry (almost) forever, at most once a second": far attempts must not overflow.
    policy = RetryPolicy(retries=100_000, initial_backoff=1, backoff=2, max_backoff=1)
    assert policy.wait_after(2_000) == 1
    assert policy.next_retry(attempt=2_000, error=Declined(), failed_at=0.0, started_at=0.0) == 1.0


# --- next_retry ----------------------------------------------------------------


def test_retries_count_the_attempts_after_the_first() -> None:
    policy = RetryPolicy(retries=3, initial_backoff=1, backoff=1)
    times = [
        policy.next_retry(attempt=n, error=Declined(), failed_at=100.0, started_at=0.0) for n in (1, 2, 3)
    ]
    assert times == [101.0, 101.0, 101.0]
    assert policy.next_retry(attempt=4, error=Declined(), failed_at=100.0, started_at=0.0) is None


def test_zero_retries_gives_up_after_the_first_attempt() -> None:
    policy = RetryPolicy(retries=0)
    assert policy.next_retry(attempt=1, error=Declined(), failed_at=0.0, started_at=0.0) is None


def test_the_next_attempt_starts_a_backoff_after_the_failure() -> None:
    policy = RetryPolicy(initial_backoff=2, backoff=3, max_backoff=None)
    assert policy.next_retry(attempt=2, error=Declined(), failed_at=50.0, started_at=0.0) == 56.0


def test_non_retryable_errors_and_their_subclasses_are_never_retried() -> None:
    policy = RetryPolicy(retries=5, non_retryable=(Declined,))
    assert not policy.is_retryable(CardDeclined())
    assert policy.is_retryable(ValueError())
    assert policy.next_retry(attempt=1, error=CardDeclined(), failed_at=0.0, started_at=0.0) is None
    assert policy.next_retry(attempt=1, error=ValueError(), failed_at=0.0, started_at=0.0) == 1.0


def test_no_retry_is_scheduled_at_or_past_the_end_of_the_total_budget() -> None:
    policy = RetryPolicy(retries=10, initial_backoff=10, backoff=1, total_timeout=30)
    assert policy.next_retry(attempt=1, error=Declined(), failed_at=1005.0, started_at=1000.0) == 1015.0
    assert policy.next_retry(attempt=2, error=Declined(), failed_at=1019.0, started_at=1000.0) == 1029.0
    assert policy.next_retry(attempt=2, error=Declined(), failed_at=1020.0, started_at=1000.0) is None
    assert policy.next_retry(attempt=2, error=Declined(), failed_at=1050.0, started_at=1000.0) is None


# --- attempt_limit -----------------------------------------------------------


def test_without_limits_an_attempt_may_run_forever() -> None:
    assert RetryPolicy().attempt_limit(now=5.0, started_at=0.0) is None


def test_an_attempt_may_run_its_timeout() -> None:
    assert RetryPolicy(timeout="30s").attempt_limit(now=5.0, started_at=0.0) == 30.0


def test_an_attempt_may_run_what_is_left_of_the_budget() -> None:
    assert RetryPolicy(total_timeout="1m").attempt_limit(now=45.0, started_at=0.0) == 15.0


def test_the_shorter_of_timeout_and_budget_wins() -> None:
    policy = RetryPolicy(timeout=30, total_timeout=60)
    assert policy.attempt_limit(now=10.0, started_at=0.0) == 30.0
    assert policy.attempt_limit(now=50.0, started_at=0.0) == 10.0


def test_a_spent_budget_leaves_no_time_rather_than_negative_time() -> None:
    assert RetryPolicy(total_timeout=60).attempt_limit(now=100.0, started_at=0.0) == 0.0


@pytest.mark.parametrize("backoff", [math.inf, math.nan, 10**400])
def test_backoff_must_be_finite(backoff: object) -> None:
    with pytest.raises(ValueError, match=r"backoff must be a number >= 1\.0 and finite"):
        RetryPolicy(backoff=backoff)


def test_retries_beyond_any_wait_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 1,000,000,000"):
        RetryPolicy(retries=10**400)


def test_a_zero_total_timeout_is_refused_like_a_zero_timeout() -> None:
    with pytest.raises(ValueError, match="total_timeout must be longer than zero"):
        RetryPolicy(total_timeout=0)


@pytest.mark.parametrize("backoff", [1e20, 1e300, 2.0])
def test_a_wait_never_passes_the_longest_duration_so_its_deadline_stays_journalable(backoff: float) -> None:
    # A huge factor without max_backoff once gave retry_at = 1.8e308: journaled, then
    # refused by every reader as an impossible time.
    policy = RetryPolicy(retries=2000, initial_backoff="1ms", backoff=backoff, max_backoff=None)
    for attempt in (2, 3, 1100):
        assert policy.wait_after(attempt) <= MAX_DURATION
    retry_at = policy.next_retry(attempt=3, error=ValueError(), failed_at=1.7e9, started_at=1.7e9)
    assert retry_at is not None and retry_at < 1e11
