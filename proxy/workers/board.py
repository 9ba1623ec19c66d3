"""The supervisor's authoritative circuit breakers, fed by the workers' outcome batches.

A worker reports, per breaker and per batch, how its local totals moved
(`OutcomeDelta`); the board replays them through its own `CircuitBreaker` (so three
failures spread over two workers open a breaker whose threshold is 3), keeps the
sidecar-wide totals (which survive a worker's restart) and numbers every change with a
generation, which tells workers when to adopt the shared state. The store's breaker
`redis` is not on the board: it guards each worker's own connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.model import Policy
from proxy.clock import SYSTEM_CLOCK, Clock
from proxy.core.breaker import CircuitBreaker
from proxy.core.events import BreakerTransition
from proxy.pipeline.state import log_transition

TOTALS = (
    "total_successes",
    "total_failures",
    "total_rejections",
    "total_shadow_rejections",
    "total_slow_calls",
)
"""The STATS counters a worker reports as deltas, in the order of an `OutcomeDelta`."""
LOCAL_ONLY = frozenset({"redis"})

SharedState = list[Any]
"""`[state, opened_at_wall, retry_after_s, consecutive_failures, generation]`."""


def outcome_sequence(successes: int, failures: int, tail: int) -> list[bool]:
    """A batch's calls in an order consistent with the worker's own count: its failures
    before its last success, the successes, then the `tail` consecutive failures it ended
    with (True is a failure)."""
    tail = min(tail, failures) if successes else failures
    return [True] * (failures - tail) + [False] * successes + [True] * tail


class BreakerBoard:
    def __init__(self, policy: Policy, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        self.totals: dict[str, list[int]] = {}
        self.generations: dict[str, int] = {}
        self.transitions: dict[tuple[str, str, str], int] = {}
        self.changed = False
        """Set by any transition or action; the supervisor broadcasts and clears it."""
        self.sync(policy)

    def sync(self, policy: Policy) -> None:
        """Breakers for the policy's upstreams; state and totals survive a reload."""
        for name, upstream in policy.upstreams.items():
            breaker = self.breakers.get(name)
            if breaker is None:
                self.breakers[name] = CircuitBreaker(
                    name, upstream.circuit_breaker, self._clock, self._on_transition
                )
                self.totals[name] = [0] * len(TOTALS)
                self.generations[name] = 0
            else:
                breaker.reconfigure(upstream.circuit_breaker)
        for name in list(self.breakers):
            if name not in policy.upstreams:
                del self.breakers[name], self.totals[name], self.generations[name]

    def _on_transition(self, event: BreakerTransition) -> None:
        key = (event.breaker, event.from_state, event.to_state)
        self.transitions[key] = self.transitions.get(key, 0) + 1
        self._bump(event.breaker)
        log_transition(event, shared=True)

    def _bump(self, name: str) -> None:
        self.generations[name] = self.generations.get(name, 0) + 1
        self.changed = True

    def apply(self, deltas: dict[str, Sequence[int]]) -> None:
        """One worker's batch: `{name: [*TOTALS deltas, tail_consecutive_failures]}`."""
        for name, delta in deltas.items():
            breaker = self.breakers.get(name)
            if breaker is None or len(delta) != len(TOTALS) + 1:
                continue
            totals = self.totals[name]
            for i in range(len(TOTALS)):
                totals[i] += max(0, int(delta[i]))
            successes, failures, tail = (max(0, int(delta[i])) for i in (0, 1, -1))
            policy = breaker.policy
            if policy.failure_rate_threshold is None:
                # Without a rate window only runs up to the thresholds can change the state:
                # a busy batch costs a few calls here, not one per request.
                successes = min(successes, policy.success_threshold)
                tail = min(tail, failures, policy.failure_threshold)
                failures = min(failures - min(tail, failures), policy.failure_threshold) + tail
            for failed in outcome_sequence(successes, failures, tail):
                permit = breaker.allow()
                if not permit.allowed:
                    continue  # a late call of an open breaker: it counts in totals only
                if failed:
                    breaker.record_failure(permit)
                else:
                    breaker.record_success(permit)

    def tick(self) -> None:
        """Let time move the states (open -> half_open once `recovery_timeout` ran out)."""
        for breaker in self.breakers.values():
            breaker.shared_state()

    def next_tick(self, finest: float, idle: float) -> float:
        """How long time can run before a breaker's state is due to move by itself."""
        wait = idle
        for breaker in self.breakers.values():
            left = breaker.retry_after_s if breaker.state.value == "open" else None
            if left is not None:
                wait = min(wait, max(finest, left))
        return wait

    def states(self) -> dict[str, SharedState]:
        return {
            name: [*breaker.shared_state(), self.generations[name]]
            for name, breaker in self.breakers.items()
        }

    def stats(self, name: str) -> dict[str, Any]:
        """STATS with the totals of every worker, past and present."""
        stats = self.breakers[name].stats()
        for field, value in zip(TOTALS, self.totals[name], strict=True):
            stats[field] = value
        calls = stats["total_successes"] + stats["total_failures"]
        stats["total_calls"] = calls
        stats["failure_rate"] = stats["total_failures"] / calls if calls else 0.0
        return stats

    def act(self, name: str, action: str) -> None:
        """An admin action (`force-open`, `force-close`, `reset`) for every worker."""
        breaker = self.breakers[name]
        if action == "force-open":
            breaker.force_open()
        elif action == "force-close":
            breaker.force_close()
        elif action == "reset":
            breaker.reset()
        else:
            raise ValueError(action)
        self._bump(name)
