"""Durations and rates as operators write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.model import Rate
from policies.units import format_duration, parse_duration, parse_rate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("5min", 300.0),
        ("1h", 3600.0),
        ("0s", 0.0),
        (" 30s ", 30.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5s", "cannot be negative"),
        ("50", "expected a duration"),
        ("5 s", "expected a duration"),
        ("5S", "expected a duration"),
        ("1d", "expected a duration"),
        ("s", "expected a duration"),
        ("", "expected a duration"),
        ("1" * 400 + "h", "too large"),
    ],
)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


def test_bare_seconds_only_when_asked() -> None:
    assert parse_duration("3600", bare_seconds=True) == 3600.0
    assert parse_duration("1h", bare_seconds=True) == 3600.0
    with pytest.raises(ValueError, match="negative"):
        parse_duration("-1", bare_seconds=True)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/min", Rate(100, 60.0, "100/min")),
        ("10/s", Rate(10, 1.0, "10/s")),
        ("3/5min", Rate(3, 300.0, "3/5min")),
        ("1000/h", Rate(1000, 3600.0, "1000/h")),
        ("5/m", Rate(5, 60.0, "5/m")),
        ("2/250ms", Rate(2, 0.25, "2/250ms")),
    ],
)
def test_rates(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/min", "at least 1 request"),
        ("5/0s", "longer than 0"),
        ("-1/min", "expected a rate"),
        ("min", "expected a rate"),
        ("5/", "expected a rate"),
        ("5/day", "expected a rate"),
        ("5 / min", "expected a rate"),
        ("9" * 20 + "/s", "too large"),
    ],
)
def test_bad_rates(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rate(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (2.0, "2s"), (120.0, "2m"), (3600.0, "1h"), (90.0, "90s"), (0.0, "0s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9))
def test_format_reads_back(milliseconds: int) -> None:
    seconds = milliseconds / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
