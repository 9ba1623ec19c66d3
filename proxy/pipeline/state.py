"""What outlives a policy reload: the wiring of stateful objects, kept by name.

`State` holds the breakers, retry budgets, connection pools and the rate-limit store, and
reconciles them with each policy loaded (`sync_*`): an object whose name (and, for a pool,
URL; for the store, backend and URL) survives keeps its state, so warm connections,
breaker history and counters survive a policy edit. Each `Runtime` borrows them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from policies.model import CircuitBreakerPolicy, Policy
from proxy.clock import SYSTEM_CLOCK
from proxy.console.feed import ConsoleFeed
from proxy.core.backoff import RetryPlanner
from proxy.core.breaker import CircuitBreaker
from proxy.core.budget import RetryBudget
from proxy.core.events import BreakerTransition
from proxy.hub.hub import Hub
from proxy.hub.operational import OperationalAlerts
from proxy.metrics import Metrics
from proxy.storage.base import LimitStore
from proxy.storage.fallback import FallbackStore
from proxy.storage.memory import MemoryStore
from proxy.storage.redis import RedisStore
from proxy.upstream.pool import UpstreamPool

log = logging.getLogger("proxy.breaker")


def log_transition(event: BreakerTransition, shared: bool = False) -> None:
    """One line per breaker transition: a warning when it opens, info otherwise; `shared`
    marks the supervisor's breakers of `server.workers > 1`."""
    level = logging.WARNING if event.to_state in ("open", "forced_open") else logging.INFO
    fields: dict[str, object] = {"breaker": event.breaker, "reason": event.reason}
    if shared:
        fields["shared"] = True
    log.log(
        level,
        "circuit breaker %s: %s -> %s",
        event.breaker,
        event.from_state,
        event.to_state,
        extra=fields,
    )


@dataclass(frozen=True, slots=True)
class Guard:
    """An upstream's resilience: its breaker and budget (stateful) and retry planner."""

    breaker: CircuitBreaker
    budget: RetryBudget
    planner: RetryPlanner


class Workers(Protocol):
    """The other workers, through the supervisor (`server.workers > 1`): totals and the
    shared breakers (see proxy.workers)."""

    async def metrics_text(self) -> bytes: ...

    async def breaker_stats(self) -> dict[str, dict[str, Any]]: ...

    async def breaker_action(self, name: str, action: str) -> dict[str, Any] | None: ...

    async def connections(self) -> dict[str, Any] | None: ...

    @property
    def degraded(self) -> frozenset[str]:
        """What any worker lists under `/readyz`'s `degraded`."""
        ...


@dataclass
class State:
    """Objects that outlive a reload, keyed by policy name."""

    metrics: Metrics
    pools: dict[str, UpstreamPool] = field(default_factory=dict)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    budgets: dict[str, RetryBudget] = field(default_factory=dict)
    hub: Hub | None = None
    store: LimitStore | None = None
    store_key: tuple[str, str] | None = None
    retired_stores: list[LimitStore] = field(default_factory=list)

    def sync_store(self, policy: Policy) -> LimitStore:
        """The rate-limit store; rebuilt only when the backend or where Redis is changes."""
        storage = policy.storage
        where = (
            storage.redis_url,
            storage.redis_cluster_nodes,
            storage.redis_sentinels,
            storage.redis_sentinel_master,
        )
        key = (storage.backend, repr(where) if storage.backend == "redis" else "")
        if self.store is not None and key == self.store_key:
            if storage.backend == "redis":
                self.breaker("redis", storage.circuit_breaker)
            return self.store
        if self.store is not None:
            self.retired_stores.append(self.store)
        if storage.backend == "redis":
            self.store = FallbackStore(
                RedisStore.from_policy(storage),
                self.breaker("redis", storage.circuit_breaker),
                storage,
                on_fallback_change=self._on_fallback,
            )
            self.metrics.storage_fallback(False)
        else:
            self.store = MemoryStore(SYSTEM_CLOCK)
            self.breakers.pop("redis", None)
            self.degraded.discard("redis")
        self.store_key = key
        return self.store

    def _on_fallback(self, active: bool) -> None:
        self.metrics.storage_fallback(active)
        if self.operational is not None:
            self.operational.storage_fallback(active)
        if active:
            self.degraded.add("redis")
            log.warning("rate-limit store unavailable: on_failure policy in effect")
        else:
            self.degraded.discard("redis")
            log.info("rate-limit store is back: decisions go to redis again")

    ready: bool = False
    draining: bool = False
    degraded: set[str] = field(default_factory=set)
    operational: OperationalAlerts | None = None
    """The sidecar's own alerts (told of transitions and fallbacks); None without a hub."""
    last_reload: dict[str, object] | None = None
    """`{"at", "result", "errors"}` of the last reload (the console's); None before one."""
    console: ConsoleFeed | None = None
    """The console's route history and overview (set by the app once it runs)."""
    workers: Workers | None = None
    """Set in a worker of `server.workers > 1`; None in a single process."""

    def sync_pools(self, policy: Policy) -> dict[str, UpstreamPool]:
        for name, upstream in policy.upstreams.items():
            pool = self.pools.get(name)
            if pool is not None and pool.keeps(upstream):
                pool.reconfigure(upstream)
            else:
                if pool is not None:
                    pool.close()
                self.pools[name] = UpstreamPool(upstream, self._body_timed_out)
        for name in list(self.pools):
            if name not in policy.upstreams:
                self.pools.pop(name).close()
        return dict(self.pools)

    def _body_timed_out(self, upstream: str) -> None:
        self.metrics.upstream_attempt(upstream, "timeout")

    def on_transition(self, event: BreakerTransition) -> None:
        self.metrics.breaker_transition(event)
        if self.operational is not None:
            self.operational.breaker_transition(event)
        log_transition(event)

    def breaker(self, name: str, policy: CircuitBreakerPolicy) -> CircuitBreaker:
        """The breaker called `name`, created or reconfigured (its state survives reloads)."""
        existing = self.breakers.get(name)
        if existing is not None:
            existing.reconfigure(policy)
            return existing
        created = CircuitBreaker(name, policy, SYSTEM_CLOCK, self.on_transition)
        self.breakers[name] = created
        self.metrics.set_breaker_state(name, created.state)
        return created

    def sync_guards(self, policy: Policy) -> dict[str, Guard]:
        guards = {}
        for name, upstream in policy.upstreams.items():
            budget = self.budgets.get(name)
            if budget is None:
                budget = self.budgets[name] = RetryBudget(upstream.retry.budget, SYSTEM_CLOCK)
            else:
                budget.reconfigure(upstream.retry.budget)
            guards[name] = Guard(
                self.breaker(name, upstream.circuit_breaker), budget, RetryPlanner(upstream.retry)
            )
        for name in list(self.breakers):
            if name not in policy.upstreams and name != "redis":
                del self.breakers[name]
                self.budgets.pop(name, None)
                self.metrics.forget_breaker(name)
        return guards
