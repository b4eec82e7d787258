"""Durations as users write them: every duration option goes through one parser."""

from __future__ import annotations

import datetime
import math

import pytest

import durable
from durable._core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        (".25s", 0.25),
        (" 10 s ", 10.0),
        ("0s", 0.0),
    ],
)
def test_text_durations_are_read_with_their_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("number", "seconds"), [(0, 0.0), (3, 3.0), (2.5, 2.5)])
def test_numbers_are_seconds(number: float, seconds: float) -> None:
    assert parse_duration(number) == seconds


def test_timedeltas_are_converted_to_seconds() -> None:
    assert parse_duration(datetime.timedelta(minutes=1, milliseconds=500)) == 60.5


def test_the_result_is_always_a_float() -> None:
    assert type(parse_duration(3)) is float
    assert type(parse_duration("3s")) is float


def test_negative_text_durations_are_refused_as_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        parse_duration("-1s")


@pytest.mark.parametrize("text", ["3 parsecs", "10", "s", "1.2.3s", "1e3s", "ten seconds", ""])
def test_text_that_is_not_a_duration_is_a_value_error_that_shows_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="timeout") as info:
        parse_duration(text, what="timeout")
    assert repr(text) in str(info.value)
    assert "'500ms'" in str(info.value)


@pytest.mark.parametrize(("text", "fix"), [("10", "'10s'"), ("0", "'0s'"), (" 1.5 ", "'1.5s'")])
def test_a_number_without_its_unit_is_told_to_add_one(text: str, fix: str) -> None:
    """On a command line (`durable prune --older-than 0`) text is all there is."""
    with pytest.raises(ValueError, match="has no unit") as info:
        parse_duration(text, what="--older-than")
    assert fix in str(info.value)
    assert "a number of seconds" not in str(info.value)  # text: a bare number is what it refused


@pytest.mark.parametrize("value", [-1, -0.5, datetime.timedelta(seconds=-1), math.inf, math.nan, -math.inf])
def test_negative_and_infinite_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="initial_backoff must be a finite, non-negative duration"):
        parse_duration(value, what="initial_backoff")


@pytest.mark.parametrize("value", [True, False, None, [1], b"1s", object()])
def test_values_of_other_types_are_a_type_error_naming_the_option_and_the_value(value: object) -> None:
    with pytest.raises(TypeError, match="max_backoff must be a duration") as info:
        parse_duration(value, what="max_backoff")
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("timeout", "3 parsecs", ValueError),
        ("timeout", -1, ValueError),
        ("timeout", True, TypeError),
        ("initial_backoff", None, TypeError),
        ("initial_backoff", "soon", ValueError),
        ("max_backoff", "-5m", ValueError),
        ("total_timeout", [30], TypeError),
    ],
)
def test_a_bad_duration_fails_at_decoration_time_naming_the_option(
    option: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=option):

        @durable.activity(**{option: value})
        def step() -> None: ...


@pytest.mark.parametrize("option", ["timeout", "max_backoff", "total_timeout"])
def test_none_means_no_limit_where_a_limit_is_optional(option: str) -> None:
    @durable.activity(**{option: None})
    def step() -> None: ...

    assert getattr(step.policy, option) is None


def test_decorator_options_accept_every_duration_form() -> None:
    @durable.activity(timeout="30s", initial_backoff="500ms", max_backoff=datetime.timedelta(minutes=2))
    def step() -> None: ...

    assert (step.policy.timeout, step.policy.initial_backoff, step.policy.max_backoff) == (30.0, 0.5, 120.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (1.5, "1.5s"), (30, "30s"), (120, "2m"), (150, "2m30s"), (3600, "1h"), (5400, "1h30m")],
)
def test_durations_are_formatted_the_way_people_write_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("value", [10**400, -(10**400), "\u0661\u0662s"])  # twelve in Arabic-Indic digits
def test_an_int_too_large_for_a_float_and_non_ascii_digits_are_clear_errors(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(("seconds", "text"), [(math.inf, "inf s"), (math.nan, "nan s")])
def test_a_duration_that_is_no_number_of_seconds_reads_as_such(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0004, "0.4ms"), (0.512, "512ms"), (1.519, "1.52s"), (123.4, "2m03s"), (3720.0, "1h02m")],
)
def test_a_measured_time_reads_to_a_fixed_precision(seconds: float, text: str) -> None:
    assert format_duration(seconds, precise=True) == text


def test_one_formatter_of_calls_cuts_only_when_asked() -> None:
    from durable._core.commands import call_text, encoded_call_text  # noqa: PLC0415
    from durable._core.values import encode_call  # noqa: PLC0415

    assert call_text((1, "x"), {"retries": 3}) == "(1, 'x', retries=3)"
    long = ("y" * 300,)
    assert call_text(long, {}).endswith("...)") and len(call_text(long, {})) == 122
    assert call_text(long, {}, limit=None) == f"({'y' * 300!r})"
    assert encoded_call_text(encode_call((1,), {"k": 2}, what="x")) == "(1, k=2)"
    assert encoded_call_text(b"\xff") == "(<1 bytes that do not decode>)"
