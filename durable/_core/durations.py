"""Durations as users write them: ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``, numbers, timedeltas.

Every duration in the public API goes through :func:`parse_duration`, so one
place decides what is accepted and one message explains what is not.
"""

from __future__ import annotations

import datetime
import math
import re

Duration = str | int | float | datetime.timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# [0-9], not \d: twelve in Arabic-Indic digits followed by "s" is not a duration anyone means.
_PATTERN = re.compile(r"^\s*(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*(ms|s|m|h|d)\s*$")
#: A number without its unit: what a command line gets when a unit was left out.
_NUMBER = re.compile(r"^\s*(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*$")
_TEXT_EXAMPLES = "'500ms', '30s', '2m', '1h', '1d'"
_EXAMPLES = f"{_TEXT_EXAMPLES}, a number of seconds or a datetime.timedelta"
#: The longest duration durable accepts: 100 years. A longer one is a mistake (a
#: timestamp passed as a duration, milliseconds as seconds), and its deadline
#: could not be shown as a date.
MAX_DURATION = 100 * 365.25 * 86400


def parse_duration(value: object, *, what: str = "duration") -> float:
    """Return ``value`` as a non-negative number of seconds.

    Raises:
        ValueError: the text is not a duration, or the duration is negative, not finite,
            or longer than :data:`MAX_DURATION` (100 years).
        TypeError: the value has a type that cannot be a duration.
    """
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a duration such as {_EXAMPLES} (got {value!r})")
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float: far over the limit anyway
            seconds = math.inf if value > 0 else -math.inf
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            if _NUMBER.match(value):  # "30" from a command line: text needs its unit
                raise ValueError(
                    f"{what} {value!r} has no unit; write {value.strip() + 's'!r} for seconds, "
                    f"or like {_TEXT_EXAMPLES}"
                )
            raise ValueError(f"{what} {value!r} is not a duration; write it like {_EXAMPLES}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise TypeError(
            f"{what} must be a duration such as {_EXAMPLES} (got {value!r} of type {type(value).__name__})"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite, non-negative duration (got {value!r:.40})")
    if seconds > MAX_DURATION:
        raise ValueError(
            f"{what} {value!r} is {seconds:.3g} seconds, longer than the 100 years durable accepts; "
            "was a timestamp or a number of milliseconds passed where seconds belong?"
        )
    return seconds


def format_duration(seconds: float, *, precise: bool = False) -> str:
    """Render seconds the way a person writes them: a duration someone gave
    (``1.5s``, ``250ms``, ``2m30s``, ``1h``), or with ``precise`` a time that was
    measured, to a fixed precision (``0.4ms``, ``512ms``, ``1.52s``, ``2m03s``,
    ``1h02m``). The one formatter of durations."""
    if not math.isfinite(seconds):
        return f"{seconds} s"  # "inf s", "nan s": never "nanhnanm"
    if precise:
        return _measured(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes:.0f}m{rest:.0f}s" if rest >= 1 else f"{minutes:.0f}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:.0f}h{minutes:.0f}m" if minutes else f"{hours:.0f}h"


def _measured(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole // 60 % 60:02d}m"
