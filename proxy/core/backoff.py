"""How long to wait before the next attempt, and whether there is a next attempt at all.

The decision is pure: the caller passes what happened (outcome, status, method, headers it
saw, time left) and gets a `RetryDecision`. The retry budget and the breaker are asked by
the caller afterwards; they are stateful and this module is not.

`Retry-After` handling, after Envoy's rate-limited back-off: a server's delay REPLACES the
computed exponential one and is a lower bound. It is jittered upwards only, by the policy's
`jitter` (so a crowd told "1 second" does not return in one instant), and never past
`max_delay`. A `Retry-After` longer than `max_delay` ends the retries (CONTRACT 9): the
upstream's answer goes back to the client, who can wait that long if it wants to. Where
Envoy would fall back to the exponential delay for an over-long header, we stop, because
retrying earlier than the server asked only adds load to a server that said it is busy.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from policies.model import RetryPolicy
from proxy.core.outcomes import CONNECT_FAILURE, OutcomeKind, OutcomeMatcher

_MAX_EXPONENT = 1000
"""2.0 ** 1000 is still a finite float: beyond it the cap has long applied."""

_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?", re.ASCII)


def backoff_delay(attempt: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """Wait before attempt `attempt` (>= 2): `min(base * 2^(k-2), max) * U[1-j, 1+j]`.

    The jitter is applied after the cap, as CONTRACT 5 writes it, so a capped delay may
    reach `max_delay * (1 + jitter)`.
    """
    if attempt < 2:
        raise ValueError("the first attempt has no delay")
    capped = min(policy.base_delay * 2.0 ** min(attempt - 2, _MAX_EXPONENT), policy.max_delay)
    jitter = policy.jitter
    return capped * (1.0 - jitter + 2.0 * jitter * rand())


def retry_after_delay(retry_after: float, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """The wait a server's `Retry-After` (<= max_delay) asks for: jittered up, capped."""
    return min(retry_after * (1.0 + policy.jitter * rand()), policy.max_delay)


def parse_retry_after(value: bytes | str, now_wall: float) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or HTTP-date), or None.

    Fractional seconds are accepted though RFC 9110 writes integers; a date in the past
    means 0. Anything else (negative, garbage) is ignored, as if the header were absent.
    """
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when.timestamp() - now_wall)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """`retry` with its `delay`; `reason` is the metric label when retrying, else why not.

    Retry reasons: `connect-failure`, `timeout`, `status`. Refusals: `not_retryable_outcome`,
    `max_attempts`, `method_not_idempotent`, `body_not_replayable`,
    `retry_after_too_long`, `deadline`.
    """

    retry: bool
    delay: float
    reason: str


NOT_RETRYABLE = RetryDecision(False, 0.0, "not_retryable_outcome")
MAX_ATTEMPTS = RetryDecision(False, 0.0, "max_attempts")
METHOD_NOT_IDEMPOTENT = RetryDecision(False, 0.0, "method_not_idempotent")
BODY_NOT_REPLAYABLE = RetryDecision(False, 0.0, "body_not_replayable")
RETRY_AFTER_TOO_LONG = RetryDecision(False, 0.0, "retry_after_too_long")
DEADLINE = RetryDecision(False, 0.0, "deadline")


class RetryPlanner:
    """One upstream's retry policy, compiled once per policy load."""

    __slots__ = ("_methods", "_rand", "_retry_on", "policy", "retry_statuses")

    def __init__(self, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._retry_on = OutcomeMatcher.compile(policy.retry_on)
        self.retry_statuses = self._retry_on.statuses
        """Statuses that may be retried: any other answer is final without asking `decide`."""
        self._methods = frozenset(method.upper() for method in policy.methods)
        self._rand = rand

    def decide(
        self,
        attempt: int,
        kind: OutcomeKind,
        status: int,
        method: str,
        *,
        has_idempotency_key: bool,
        body_replayable: bool,
        retry_after: float | None,
        time_left: float | None,
    ) -> RetryDecision:
        """Whether attempt `attempt` (1-based, just made) is followed by another.

        A connect-failure sent nothing, so it may be retried whatever the method or body.
        Otherwise a method outside `retry.methods` needs an `Idempotency-Key`, and a
        streamed body that was not kept cannot be sent again. `time_left` is the route
        deadline's remainder (None: no deadline); a wait that reaches it is pointless.
        """
        if not self._retry_on.matches(kind, status):
            return NOT_RETRYABLE
        if attempt >= self.policy.max_attempts:
            return MAX_ATTEMPTS
        if kind is not CONNECT_FAILURE:
            if method not in self._methods and not has_idempotency_key:
                return METHOD_NOT_IDEMPOTENT
            if not body_replayable:
                return BODY_NOT_REPLAYABLE
        if retry_after is None:
            delay = backoff_delay(attempt + 1, self.policy, self._rand)
        elif retry_after > self.policy.max_delay:
            return RETRY_AFTER_TOO_LONG
        else:
            delay = retry_after_delay(retry_after, self.policy, self._rand)
        if time_left is not None and delay >= time_left:
            return DEADLINE
        return RetryDecision(True, delay, kind.value)
