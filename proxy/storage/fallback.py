"""The store the pipeline uses with `backend: redis`: Redis behind the `redis` breaker.

The sidecar never answers 5xx because Redis is down. Every decision asks the breaker first;
while it rejects, or when Redis fails or is slower than `storage.timeout` (the primary store
bounds its own wait and raises `StoreUnavailable`), `on_failure` decides:

- `memory`: this replica's own windows, each limit divided by `expected_replicas`, so the
  replicas together stay near the shared limit;
- `allow`: admit everything (results report the full limit as remaining);
- `deny`: refuse everything but shadow rules, retry after 1 s, blamed on the first
  enforcing rule (the answer is still 429 `rate_limited`).

When the breaker lets a probe through and Redis answers, that decision is Redis's; once the
probes have closed the breaker, every decision is, and the memory windows are left to
expire. `fallback_active` and the `on_fallback_change` hook (the `storage_fallback_active`
gauge, logs) turn on with the first decision that Redis could not take and off when the
breaker has closed again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from policies.model import StoragePolicy
from proxy.clock import SYSTEM_CLOCK, Clock
from proxy.core.window import ADMIT_ALL
from proxy.storage.base import (
    Decision,
    DecisionDone,
    LimitCheck,
    LimitStore,
    RuleResult,
    StoreUnavailable,
    Usage,
)
from proxy.storage.memory import MemoryStore

DENY_RETRY_AFTER_S = 1.0

SERVING_STATES = frozenset({"closed", "forced_closed"})
"""Breaker states in which every decision goes to Redis again: the fallback is over. In
half_open most decisions still go to the fallback, so it stays active until the probes
close the breaker (the gauge and logs do not flap with each probe)."""

log = logging.getLogger(__name__)


class Permit(Protocol):
    @property
    def allowed(self) -> bool: ...


class StoreBreaker(Protocol):
    """The part of `proxy.core.breaker.CircuitBreaker` this module relies on."""

    @property
    def state(self) -> str: ...

    def allow(self) -> Permit: ...

    def record_success(self, permit: Any, duration_s: float) -> None: ...

    def record_failure(self, permit: Any) -> None: ...

    def release(self, permit: Any) -> None: ...


def admit_all(checks: Sequence[LimitCheck]) -> Decision:
    """`on_failure: allow`: every rule admits and reports its whole limit as remaining."""
    results = tuple(
        RuleResult(c.rule, True, c.shadow, c.limit, c.window_s, c.limit, 0.0) for c in checks
    )
    return Decision(True, results, None, 0.0)


def refuse_all(checks: Sequence[LimitCheck]) -> Decision:
    """`on_failure: deny`: every rule refuses; shadow rules still never block."""
    results = tuple(
        RuleResult(c.rule, False, c.shadow, c.limit, c.window_s, 0, DENY_RETRY_AFTER_S)
        for c in checks
    )
    blocking = next((c.rule for c in checks if not c.shadow), None)
    if blocking is None:
        return Decision(True, results, None, 0.0)
    return Decision(False, results, blocking, DENY_RETRY_AFTER_S)


class FallbackStore:
    """A `LimitStore` that never raises and never waits longer than the primary's timeout."""

    __slots__ = (
        "_breaker",
        "_clock",
        "_last_cause",
        "_memory",
        "_on_change",
        "_on_failure",
        "_primary",
        "fallback_active",
    )

    def __init__(
        self,
        primary: LimitStore,
        breaker: StoreBreaker,
        policy: StoragePolicy,
        *,
        clock: Clock = SYSTEM_CLOCK,
        on_fallback_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._primary = primary
        self._breaker = breaker
        self._clock = clock
        self._on_failure = policy.on_failure
        self._memory = MemoryStore(clock, scale=policy.expected_replicas)
        self._on_change = on_fallback_change
        self.fallback_active = False
        self._last_cause: BaseException | None = None

    def decide(
        self, checks: Sequence[LimitCheck], later: DecisionDone, context: Any
    ) -> Decision | None:
        """Known now while the breaker rejects (`on_failure` answers); else the primary's
        answer, which `later` hears as a decision, never as an exception: a failure of the
        primary means `on_failure`.

        The primary's answer settles the breaker's permit whenever it comes, even if the
        request that asked has gone: the primary bounds its own wait, so every permit is
        settled by an outcome."""
        if not checks:
            return ADMIT_ALL
        permit = self._breaker.allow()
        if not permit.allowed:
            return self._degraded(checks)
        start = self._clock.monotonic()
        asked = _Asked(self, checks, permit, start, later, context)
        now = self._primary.decide(checks, _primary_answered, asked)
        return None if now is None else self._answered(checks, permit, start, now)

    def _answered(
        self,
        checks: Sequence[LimitCheck],
        permit: Permit,
        start: float,
        result: Decision | Exception,
    ) -> Decision:
        breaker = self._breaker
        if isinstance(result, Exception):
            cause = result.__cause__
            if cause is not None and cause is self._last_cause:
                # One failed batch answers every decision in it: that is ONE failure of
                # Redis, not one per request (or a single slow reply would trip the breaker).
                breaker.release(permit)
            else:
                self._last_cause = cause
                breaker.record_failure(permit)
            if not isinstance(result, StoreUnavailable):
                log.error("rate-limit store failed unexpectedly; using on_failure", exc_info=result)
            return self._degraded(checks)
        breaker.record_success(permit, self._clock.monotonic() - start)
        if self.fallback_active and breaker.state in SERVING_STATES:
            self._set_active(False)
        return result

    def record_usage(self, user_id: str, path: str, window_s: float) -> None:
        store = self._memory if self.fallback_active else self._primary
        store.record_usage(user_id, path, window_s)

    async def usage(self, user_id: str) -> Usage:
        if not self.fallback_active:
            try:
                return await self._primary.usage(user_id)
            except Exception:
                log.debug("usage read from the primary store failed", exc_info=True)
        return await self._memory.usage(user_id)

    async def ping(self) -> bool:
        return await self._primary.ping()

    async def close(self) -> None:
        await self._primary.close()

    def _degraded(self, checks: Sequence[LimitCheck]) -> Decision:
        if not self.fallback_active:
            self._set_active(True)
        mode = self._on_failure
        if mode == "memory":
            return self._memory.decide(checks, _never_later, None)
        if mode == "allow":
            return admit_all(checks)
        return refuse_all(checks)

    def _set_active(self, active: bool) -> None:
        self.fallback_active = active
        if self._on_change is not None:
            self._on_change(active)


class _Asked:
    """A decision the primary answers later, and who waits for it."""

    __slots__ = ("checks", "context", "later", "permit", "start", "store")

    def __init__(
        self,
        store: FallbackStore,
        checks: Sequence[LimitCheck],
        permit: Permit,
        start: float,
        later: DecisionDone,
        context: Any,
    ) -> None:
        self.store = store
        self.checks = checks
        self.permit = permit
        self.start = start
        self.later = later
        self.context = context


def _primary_answered(asked: _Asked, result: Decision | Exception) -> None:
    decision = asked.store._answered(asked.checks, asked.permit, asked.start, result)
    asked.later(asked.context, decision)


def _never_later(context: Any, result: Decision | Exception) -> None:
    """The memory store decides at once and never calls its continuation."""
