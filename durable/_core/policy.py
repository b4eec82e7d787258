"""Retry policies: how often, how long, and how far apart an activity is attempted.

Pure arithmetic on numbers of seconds; the executor asks this module what to do
after each failed attempt, so the rules live in one place and are tested
without any clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from .durations import MAX_DURATION, parse_duration


def _timeout(value: object) -> float | None:
    return None if value is None else parse_duration(value, what="timeout")


def _initial_backoff(value: object) -> float:
    return parse_duration(value, what="initial_backoff")


def _max_backoff(value: object) -> float | None:
    return None if value is None else parse_duration(value, what="max_backoff")


def _total_timeout(value: object) -> float | None:
    return None if value is None else parse_duration(value, what="total_timeout")


def _heartbeat_timeout(value: object) -> float | None:
    return None if value is None else parse_duration(value, what="heartbeat_timeout")


#: More retries than anyone waits for: a larger number is a mistake, not a policy.
MAX_RETRIES = 1_000_000_000


def _retries(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        raise ValueError(f"retries must be a non-negative int, at most {MAX_RETRIES:,} (got {value!r:.40})")
    return value


def _multiplier(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(  # noqa: TRY004 - a ValueError for every bad backoff, as before
            f"backoff must be a number >= 1.0, the factor between waits (got {value!r:.40})"
        )
    try:
        factor = float(value)
    except OverflowError:
        factor = math.inf
    if not (factor >= 1 and math.isfinite(factor)):
        raise ValueError(
            f"backoff must be a number >= 1.0 and finite, the factor between waits (got {value!r:.40})"
        )
    return factor


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple | list | set | frozenset) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"non_retryable must hold exception types (got {item!r})")
    return tuple(items)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When to try an activity again.

    Attributes:
        retries: re-tries after the first attempt (3 means up to 4 attempts).
        timeout: limit for one attempt, in seconds (None: no limit).
        initial_backoff: wait before the first retry, in seconds.
        backoff: factor applied to the wait after each retry.
        max_backoff: cap on one wait, in seconds (None: no cap).
        non_retryable: exception types that fail the activity at once.
        total_timeout: budget for all attempts and waits together, in seconds (None: none).
        heartbeat_timeout: longest time an attempt may go without calling
            ``durable.heartbeat()``, in seconds, counted from its start for the first
            heartbeat (None: no limit). An attempt past it fails with
            :class:`~durable.AttemptTimeout` and is retried like any failed attempt.

    Durations accept ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``, numbers of
    seconds and ``datetime.timedelta``.
    """

    retries: int = attrs.field(default=3, converter=_retries)
    timeout: float | None = attrs.field(default=None, converter=_timeout)
    initial_backoff: float = attrs.field(default=1.0, converter=_initial_backoff)
    backoff: float = attrs.field(default=2.0, converter=_multiplier)
    max_backoff: float | None = attrs.field(default=60.0, converter=_max_backoff)
    non_retryable: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_exception_types)
    total_timeout: float | None = attrs.field(default=None, converter=_total_timeout)
    heartbeat_timeout: float | None = attrs.field(default=None, converter=_heartbeat_timeout)

    def __attrs_post_init__(self) -> None:
        for name in ("timeout", "total_timeout", "heartbeat_timeout"):
            if getattr(self, name) == 0:
                raise ValueError(f"{name} must be longer than zero (use None for no limit)")

    def with_options(self, options: Mapping[str, Any]) -> RetryPolicy:
        """This policy with some fields replaced (validated like the constructor)."""
        unknown = set(options) - set(attrs.fields_dict(RetryPolicy))
        if unknown:
            known = ", ".join(attrs.fields_dict(RetryPolicy))
            raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; options are: {known}")
        return attrs.evolve(self, **options)

    def wait_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            wait = self.initial_backoff * self.backoff ** (attempt - 1)
        except OverflowError:  # after about a thousand attempts
            wait = math.inf
        if self.max_backoff is not None:
            wait = min(wait, self.max_backoff)
        # However far the factor takes it, one wait is at most the longest duration
        # durable accepts: its deadline must stay a time the journal can hold.
        return min(wait, MAX_DURATION)

    def is_retryable(self, error: BaseException) -> bool:
        """False for the policy's ``non_retryable`` types."""
        return not isinstance(error, self.non_retryable)

    def next_retry(
        self, *, attempt: int, error: BaseException, failed_at: float, started_at: float
    ) -> float | None:
        """When to start the next attempt (a time on the caller's clock), or None to give up.

        ``attempt`` is the number of the attempt that just failed, ``failed_at``
        when it failed, ``started_at`` when the first attempt started (the
        origin of ``total_timeout``).
        """
        if attempt > self.retries or not self.is_retryable(error):
            return None
        retry_at = failed_at + self.wait_after(attempt)
        if self.total_timeout is not None and retry_at >= started_at + self.total_timeout:
            return None
        return retry_at

    def attempt_limit(self, *, now: float, started_at: float) -> float | None:
        """Seconds the next attempt may run: its own timeout, cut by what is left of the budget."""
        limit = self.timeout
        if self.total_timeout is not None:
            left = max(0.0, started_at + self.total_timeout - now)
            limit = left if limit is None else min(limit, left)
        return limit


DEFAULT_POLICY = RetryPolicy()
