"""Frozen runtime settings and the duration syntax shared with the policy file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)\s*$")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse `250ms`, `2s`, `5m`/`5min` or `1h` into seconds.

    The unit is mandatory: a bare number is ambiguous and the policy file rejects it too.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 250ms, 2s, 5m, 5min or 1h")
    amount, unit = match.groups()
    return float(amount) * _SECONDS_PER_UNIT[unit]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the app needs to run, resolved once by the CLI.

    Secrets are excluded from `repr` so that a logged settings object never leaks them.
    """

    db_path: Path
    jwt_secret: str = field(repr=False)
    host: str = "0.0.0.0"
    port: int = 8081
    events_url: str | None = None
    events_token: str | None = field(default=None, repr=False)
    check_interval: float = 300.0
    realert_interval: float = 3600.0
    expiry_days: int = 7
    token_ttl: float = 3600.0
    outbox_max: int = 10_000
