"""Exact sliding-window (sliding log) arithmetic, shared by every rate-limit store.

A key is admitted at time `now` when fewer than `limit` of its admitted timestamps lie in
`(now - window, now]`. That is the only rule that guarantees the contract's promise: in ANY
interval of the window's length, no key is admitted more than `limit` times (fixed or
approximated windows let up to twice the limit through around a boundary).

A request is checked against several rules at once (role limit by user, endpoint limit by
IP ...). It is recorded in every rule only when every enforcing rule admits it, so a refused
request uses no quota anywhere. Shadow rules are evaluated but never block; an admitted
request is recorded in them too (as Envoy's shadow mode counts a normal hit), so their
counts reflect real traffic. A log keeps at most `limit` timestamps, the newest: that is
enough to answer "are `limit` in the window?" exactly, even for a shadow rule that real
traffic overruns, and bounds memory per key.

`conclude` turns per-rule counts into a `Decision`; the memory store feeds it from
`SlidingLog`s, the Redis store from what its Lua script returns.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


# The three values below are made per request on the hot path, so their `__init__`s are
# written out: mypyc compiles those, while a dataclass-generated one stays interpreted (and
# a frozen one goes through object.__setattr__ per field). They are treated as immutable.
@dataclass(slots=True, init=False)
class LimitCheck:
    """One rule applied to one request: at most `limit` per `window_s` for `key`."""

    rule: str
    key: str
    limit: int
    window_s: float
    shadow: bool
    tag: str
    """Whose request it is (user id, or client IP when anonymous), whatever the rule is keyed
    by: in a Redis Cluster every key of one decision carries it as hash tag (one slot, one
    script call). Empty: `key`."""

    def __init__(
        self,
        rule: str,
        key: str,
        limit: int,
        window_s: float,
        shadow: bool = False,
        tag: str = "",
    ) -> None:
        self.rule = rule
        self.key = key
        self.limit = limit
        self.window_s = window_s
        self.shadow = shadow
        self.tag = tag


@dataclass(slots=True, init=False)
class RuleResult:
    """What one rule says about one request, after the decision was recorded."""

    rule: str
    allowed: bool
    """This rule alone would admit the request (False on a shadow rule: `shadow_limited`)."""
    shadow: bool
    limit: int
    window_s: float
    remaining: int
    """Requests this key may still make now: `limit` minus those admitted in the window."""
    reset_after_s: float
    """Seconds until the oldest admitted request leaves the window (0: nothing to free)."""

    def __init__(
        self,
        rule: str,
        allowed: bool,
        shadow: bool,
        limit: int,
        window_s: float,
        remaining: int,
        reset_after_s: float,
    ) -> None:
        self.rule = rule
        self.allowed = allowed
        self.shadow = shadow
        self.limit = limit
        self.window_s = window_s
        self.remaining = remaining
        self.reset_after_s = reset_after_s

    @property
    def outcome(self) -> str:
        """The `decision` label of `rate_limit_decisions_total`."""
        if self.allowed:
            return "allowed"
        return "shadow_limited" if self.shadow else "limited"


@dataclass(slots=True, init=False)
class Decision:
    allowed: bool
    results: tuple[RuleResult, ...]
    blocking_rule: str | None
    """The enforcing rule that refused with the longest wait (None when admitted)."""
    retry_after_s: float
    """Seconds until every refusing rule has a free slot again (0 when admitted)."""

    def __init__(
        self,
        allowed: bool,
        results: tuple[RuleResult, ...],
        blocking_rule: str | None,
        retry_after_s: float,
    ) -> None:
        self.allowed = allowed
        self.results = results
        self.blocking_rule = blocking_rule
        self.retry_after_s = retry_after_s


ADMIT_ALL = Decision(True, (), None, 0.0)
"""The decision for a request no rule applies to."""


class SlidingLog:
    """Admitted timestamps of one key for one rule, oldest first, at most `limit` kept."""

    __slots__ = ("limit", "times", "window_s")

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.times: deque[float] = deque(maxlen=limit)

    def check(self, now: float) -> int:
        """Drop what left the window; return how many were admitted in it."""
        times = self.times
        horizon = now - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        return len(times)

    def oldest(self) -> float | None:
        """The oldest admission kept (None: none)."""
        times = self.times
        return times[0] if times else None

    def admit(self, now: float) -> None:
        """Record an admission; past `limit` (a shadow rule overrun) the oldest falls off."""
        self.times.append(now)

    def idle(self, now: float) -> bool:
        """Nothing left in the window: the log can be dropped without changing any answer."""
        times = self.times
        return not times or times[-1] <= now - self.window_s

    def reconfigure(self, limit: int, window_s: float) -> None:
        """A reloaded policy changed the rule: keep the newest timestamps that still fit."""
        if limit != self.limit:
            self.times = deque(self.times, maxlen=limit)
            self.limit = limit
        self.window_s = window_s


def decide(checks: list[LimitCheck], logs: list[SlidingLog], now: float) -> Decision:
    """Check every rule (`logs[i]` is `checks[i]`'s), then record in all of them only if
    every enforcing rule admits."""
    counts: list[int] = []
    admitted = True
    for i in range(len(checks)):
        check = checks[i]
        count = logs[i].check(now)
        counts.append(count)
        if count >= check.limit and not check.shadow:
            admitted = False
    if admitted:
        for log in logs:
            log.admit(now)
    oldest: list[float | None] = []
    for log in logs:
        oldest.append(log.oldest())
    return conclude(checks, counts, oldest, admitted, now)


def conclude(
    checks: list[LimitCheck],
    counts: list[int],
    oldest: list[float | None],
    admitted: bool,
    now: float,
) -> Decision:
    """Per-rule results from the counts BEFORE the decision and the oldest timestamp AFTER it.

    `now` and `oldest` share one time base (the store's clock or Redis `TIME`); only their
    difference is used. (Index loops over lists: what mypyc compiles tightest.)
    """
    if not (len(checks) == len(counts) == len(oldest)):
        raise ValueError("one count and one oldest timestamp per check")
    results: list[RuleResult] = []
    blocking: str | None = None
    retry_after = 0.0
    for i in range(len(checks)):
        check = checks[i]
        count = counts[i]
        first = oldest[i]
        limit = check.limit
        fits = count < limit
        after = count + 1 if admitted and fits else count
        reset = first + check.window_s - now if first is not None else 0.0
        if reset < 0.0:
            reset = 0.0
        results.append(
            RuleResult(
                check.rule,
                fits,
                check.shadow,
                limit,
                check.window_s,
                limit - after if after < limit else 0,
                reset,
            )
        )
        if (
            not admitted
            and not fits
            and not check.shadow
            and (blocking is None or reset > retry_after)
        ):
            blocking = check.rule
            retry_after = reset
    return Decision(admitted, tuple(results), blocking, retry_after)


def most_restrictive(results: tuple[RuleResult, ...]) -> RuleResult | None:
    """The rule whose headers a response carries: fewest remaining, ties to the lower limit."""
    best: RuleResult | None = None
    for result in results:
        if (
            best is None
            or result.remaining < best.remaining
            or (result.remaining == best.remaining and result.limit < best.limit)
        ):
            best = result
    return best
