"""The retry budget: retries stay a bounded share of the client requests.

Without it, retries multiply load exactly when an upstream is struggling (a 3-attempt
policy can triple traffic). Like Linkerd's budget, a retry is allowed while the retries in
the last `window` would stay within `ratio * requests + min_per_second * window`; the floor
keeps low-traffic upstreams retryable.
"""

from __future__ import annotations

from policies.model import RetryBudgetPolicy
from proxy.clock import Clock

BUCKETS = 10
"""Slots per window: memory and the worst-case roll cost are O(BUCKETS)."""

_EPSILON = 1e-9
"""`0.57 * 100` is 56.99999999999999: without slack the 57th retry would be refused."""


class RollingCounter:
    """Events in roughly the last `window_s` seconds, in `buckets` fixed slots.

    Approximation: the sum covers the current slot plus the `buckets - 1` before it, so an
    event is remembered for between `window_s * (1 - 1/buckets)` and `window_s` seconds
    (a 10 s window with 10 slots forgets an event after 9 to 10 s). Counts are never lost
    early by more than one slot and never kept past the window. Also the breaker's
    failure-rate window.
    """

    __slots__ = ("_index", "_size", "_slots", "_total", "_width")

    def __init__(self, window_s: float, now: float, buckets: int = BUCKETS) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("a window needs a positive length and at least one slot")
        self._width = window_s / buckets
        self._size = buckets
        self._slots = [0] * buckets
        self._index = int(now // self._width)
        self._total = 0

    def add(self, now: float, count: int = 1) -> int:
        """Count `count` events at `now`; the new total (saves a second roll check)."""
        index = int(now // self._width)
        if index > self._index:
            self._roll(index)
        self._slots[index % self._size] += count
        self._total += count
        return self._total

    def total(self, now: float) -> int:
        index = int(now // self._width)
        if index > self._index:
            self._roll(index)
        return self._total

    def clear(self) -> None:
        self._slots = [0] * self._size
        self._total = 0

    def _roll(self, index: int) -> None:
        """Empty the slots that fell out of the window on the way to slot `index`."""
        slots = self._slots
        size = self._size
        if index - self._index >= size:
            self.clear()
        else:
            for step in range(self._index + 1, index + 1):
                position = step % size
                self._total -= slots[position]
                slots[position] = 0
        self._index = index


class RetryBudget:
    """One upstream's budget. `record_request` per client request; `try_spend` per retry.

    Allowed iff `retries + 1 <= ratio * requests + min_per_second * window` over the
    rolling window (see `RollingCounter` for its one-slot granularity). With ratio 0.2 and
    no floor, 100 requests in a window admit exactly 20 retries. A refused retry uses no
    budget. Retries are never counted as requests.
    """

    __slots__ = ("_clock", "_floor", "_ratio", "_requests", "_retries", "policy")

    def __init__(self, policy: RetryBudgetPolicy, clock: Clock) -> None:
        self._clock = clock
        now = clock.monotonic()
        self._requests = RollingCounter(policy.window, now)
        self._retries = RollingCounter(policy.window, now)
        self._apply(policy)

    def _apply(self, policy: RetryBudgetPolicy) -> None:
        self.policy = policy
        self._ratio = policy.ratio
        self._floor = policy.min_per_second * policy.window + _EPSILON

    def reconfigure(self, policy: RetryBudgetPolicy) -> None:
        """Take a reloaded policy; counts survive unless the window length changed."""
        if policy.window != self.policy.window:
            now = self._clock.monotonic()
            self._requests = RollingCounter(policy.window, now)
            self._retries = RollingCounter(policy.window, now)
        self._apply(policy)

    def record_request(self, now: float | None = None) -> None:
        """Count a request; `now` saves a clock read when the caller has one."""
        self._requests.add(self._clock.monotonic() if now is None else now)

    def try_spend(self) -> bool:
        """Take one retry from the budget if it has room; False means do not retry."""
        now = self._clock.monotonic()
        allowance = self._ratio * self._requests.total(now) + self._floor
        if self._retries.total(now) + 1 > allowance:
            return False
        self._retries.add(now)
        return True

    def requests_in_window(self) -> int:
        return self._requests.total(self._clock.monotonic())

    def retries_in_window(self) -> int:
        return self._retries.total(self._clock.monotonic())
