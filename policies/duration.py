"""Durations as operators write them: ``500ms``, ``10s``, ``5m``, ``1h``, ``1h30m``,
or a plain number of seconds (``10``, ``0.5``).

Durations are whole milliseconds, at most :data:`MAX_DURATION`. Decimal
arithmetic keeps ``0.7s`` exactly 700 ms (a float would not), so formatting a
parsed duration and parsing it again gives the same value.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

MAX_DURATION = timedelta(days=365)
EXAMPLES = "like 500ms, 10s, 5m or 1h"

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|h|m|s))+$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


class DurationError(ValueError):
    pass


def parse_duration(value: object) -> timedelta:
    """``"1h30m"`` -> 90 minutes, ``10`` -> 10 seconds, ``"250ms"`` -> 0.25 seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DurationError(f"expected a duration {EXAMPLES}")
    if isinstance(value, str):
        text = value.strip()
        if not _WHOLE.match(text):
            raise DurationError(f"{value!r} is not a duration (expected {EXAMPLES})")
        millis = sum((Decimal(number) * _UNIT_MS[unit] for number, unit in _PART.findall(text)),
                     Decimal(0))
    else:
        try:
            millis = Decimal(repr(value)) * 1000
        except InvalidOperation:  # repr of a float is always a valid Decimal; kept total
            raise DurationError(f"{value!r} is not a duration (expected {EXAMPLES})") from None
        if not millis.is_finite() or millis < 0:
            raise DurationError(f"{value!r} is not a duration (expected {EXAMPLES})")
    if millis > _millis(MAX_DURATION):
        raise DurationError(f"{_short(value)} is too long (expected at most "
                            f"{MAX_DURATION.days} days)")
    if millis != millis.to_integral_value():
        raise DurationError(f"{value!r} is finer than a millisecond (expected whole milliseconds)")
    return timedelta(milliseconds=int(millis))


def format_duration(duration: timedelta) -> str:
    """The shortest exact form in one unit: 90 minutes -> ``90m``, 1.5 s -> ``1500ms``."""
    millis = _millis(duration)
    for unit in ("h", "m", "s"):
        if millis and millis % _UNIT_MS[unit] == 0:
            return f"{millis // _UNIT_MS[unit]}{unit}"
    return "0s" if millis == 0 else f"{millis}ms"


def _millis(duration: timedelta) -> int:
    return (duration.days * 86_400 + duration.seconds) * 1000 + duration.microseconds // 1000


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
