"""Domain events the pure cores emit; metrics and logs subscribe instead of being called.

Keeping them plain frozen values means a core never imports an exporter, and a test can
assert on exactly what was emitted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """A breaker changed state; emitted once per change.

    `from_state`/`to_state` are `BreakerState` values (`closed`, `open`, `half_open`,
    `forced_open`, `forced_closed`); `at_wall` is unix seconds of when the change took
    effect (for `open -> half_open`, the moment `recovery_timeout` ran out, even when it
    is noticed later). `reason` is one of `failure_threshold`, `failure_rate`,
    `recovery_timeout`, `success_threshold`, `probe_failure`, `force_open`,
    `force_close`, `reset`.
    """

    breaker: str
    from_state: str
    to_state: str
    at_wall: float
    reason: str
