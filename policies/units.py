"""Durations and rates as operators write them (`250ms`, `5min`, `3/5min`).

Durations need a unit: a bare `50` is refused because Kong users read it as milliseconds
and Traefik users as seconds. The parsers raise `ValueError` with a message fit to show the
user; the loader places it at the value's line and column.
"""

from __future__ import annotations

import math
import re

from policies.model import Rate

UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
"""Unit -> seconds. `m` and `min` are both minutes (milliseconds are `ms`)."""

DURATION_PATTERN = r"^\d+(\.\d+)?(ms|s|m|min|h)$"
"""A duration as JSON Schema and the reference document describe it."""

RATE_PATTERN = r"^\d+/(\d+(\.\d+)?)?(ms|s|m|min|h)$"
"""A rate `N/DURATION` (the duration's count may be left out: `100/min`)."""

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|min|m|h)")
_RATE = re.compile(r"(?P<limit>\d+)/(?P<window>.*)")


def parse_duration(text: str, *, bare_seconds: bool = False) -> float:
    """`250ms` -> 0.25. `bare_seconds` lets a plain number mean seconds (CLI flags only)."""
    value = text.strip()
    if value.startswith("-"):
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    if bare_seconds and re.fullmatch(r"\d+(\.\d+)?", value):
        return _finite(float(value), value)
    match = _DURATION.fullmatch(value)
    if match is None:
        raise ValueError(
            f"expected a duration like '250ms', '2s', '5m', '5min' or '1h', got {value!r}"
        )
    return _finite(float(match["number"]) * UNITS[match["unit"]], value)


def _finite(seconds: float, text: str) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"duration {text!r} is too large")
    return seconds


def parse_rate(text: str) -> Rate:
    """`3/5min` -> Rate(3, 300.0, "3/5min"); a window without a count means one unit."""
    value = text.strip()
    match = _RATE.fullmatch(value)
    if match is None:
        raise ValueError(f"expected a rate N/DURATION like '100/min' or '3/5min', got {value!r}")
    window_text = match["window"]
    if window_text in UNITS:
        window_text = "1" + window_text
    try:
        window = parse_duration(window_text)
    except ValueError:
        raise ValueError(
            f"expected a rate N/DURATION like '100/min' or '3/5min', got {value!r}"
        ) from None
    if len(match["limit"]) > 12:
        raise ValueError(f"rate {value!r} is too large")
    limit = int(match["limit"])
    if limit < 1:
        raise ValueError(f"a rate allows at least 1 request, got {value!r}")
    if window <= 0:
        raise ValueError(f"a rate's window must be longer than 0, got {value!r}")
    return Rate(limit=limit, window_s=window, text=value)


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 0.25 -> `250ms`, 120 -> `2m`; parse_duration reads it back."""
    for unit in ("h", "m", "s", "ms"):
        count = seconds / UNITS[unit]
        if count >= 1 and math.isclose(count, round(count), abs_tol=1e-9):
            return f"{round(count)}{unit}"
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
