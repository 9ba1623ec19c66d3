"""Wall-clock helpers; all stored times and expiry dates are UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime


def utc_now_iso() -> str:
    """The current instant as ISO 8601 with seconds precision, e.g. `2025-01-31T12:00:00Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_today() -> date:
    """Today's date in UTC, the calendar expiry dates are counted in."""
    return datetime.now(UTC).date()
