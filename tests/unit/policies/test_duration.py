"""Durations as operators write them, and back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.duration import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(("text", "expected"), [
    ("500ms", timedelta(milliseconds=500)),
    ("10s", timedelta(seconds=10)),
    ("5m", timedelta(minutes=5)),
    ("1h", timedelta(hours=1)),
    ("1h30m", timedelta(minutes=90)),
    ("1m0.5s", timedelta(seconds=60.5)),
    (" 0.7s ", timedelta(milliseconds=700)),
    ("0s", timedelta(0)),
    (10, timedelta(seconds=10)),
    (0.25, timedelta(milliseconds=250)),
    (0.7, timedelta(milliseconds=700)),
    ("8760h", timedelta(days=365)),
])
def test_parse(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("10", "'10' is not a duration (expected like 500ms, 10s, 5m or 1h)"),
    ("-1s", "'-1s' is not a duration (expected like 500ms, 10s, 5m or 1h)"),
    ("1d", "'1d' is not a duration (expected like 500ms, 10s, 5m or 1h)"),
    ("", "'' is not a duration (expected like 500ms, 10s, 5m or 1h)"),
    (-1, "-1 is not a duration (expected like 500ms, 10s, 5m or 1h)"),
    (float("inf"), "inf is not a duration (expected like 500ms, 10s, 5m or 1h)"),
    (float("nan"), "nan is not a duration (expected like 500ms, 10s, 5m or 1h)"),
    (True, "expected a duration like 500ms, 10s, 5m or 1h"),
    ([1], "expected a duration like 500ms, 10s, 5m or 1h"),
    ("8761h", "'8761h' is too long (expected at most 365 days)"),
    ("9" * 400 + "h", "'" + "9" * 36 + "... is too long (expected at most 365 days)"),
    ("0.5ms", "'0.5ms' is finer than a millisecond (expected whole milliseconds)"),
    (1e-4, "0.0001 is finer than a millisecond (expected whole milliseconds)"),
])
def test_refused(value: object, message: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(value)
    assert str(caught.value) == message


@pytest.mark.parametrize(("duration", "text"), [
    (timedelta(0), "0s"), (timedelta(milliseconds=1500), "1500ms"), (timedelta(seconds=90), "90s"),
    (timedelta(minutes=90), "90m"), (timedelta(hours=2), "2h"), (timedelta(days=365), "8760h"),
])
def test_format(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@given(st.integers(0, 365 * 86_400_000))
def test_format_then_parse_is_lossless(millis: int) -> None:
    duration = timedelta(milliseconds=millis)
    assert parse_duration(format_duration(duration)) == duration
