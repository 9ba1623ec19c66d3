"""The circuit breaker state machine, pure: a clock in, permits and transition events out.

    closed --failure_threshold consecutive failures, or failure rate--> open
    open --recovery_timeout passed (read lazily, probe or not)--> half_open
    open --a health probe succeeded (`probe_succeeded`, CONTRACT 14)--> half_open
    half_open --success_threshold probe successes--> closed
    half_open --any probe failure--> open (the timer starts again)
    any --force_open()/force_close()--> forced_open/forced_closed (stay until changed)
    any --reset()--> closed

Epochs. Every transition (and every `reset`) starts a new epoch, and each permit carries
the epoch it was issued in. Only a permit of the current epoch moves the state machine; a
call that started earlier (closed before the trip, a probe of an earlier half_open, before
a force or reset) still counts in the totals, since it reached the upstream, but cannot
restart the open timer, fill a probe slot that no longer exists or close a breaker it
never probed. resilience4j records such late calls in whatever state it is in now; the
epoch check is the stricter version of its "a late error while open changes nothing".

Shadow mode computes everything the same way, but where enforce would reject it admits
with `shadow_rejected=True`. Those calls count in the totals and never move the state,
exactly as the rejected ones would not have, so the states match what enforce would do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from policies.model import CircuitBreakerPolicy
from proxy.clock import Clock
from proxy.core.budget import RollingCounter
from proxy.core.events import BreakerTransition
from proxy.core.outcomes import STATUS, OutcomeKind, OutcomeMatcher


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"


CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN
FORCED_OPEN = BreakerState.FORCED_OPEN
FORCED_CLOSED = BreakerState.FORCED_CLOSED

HALF_OPEN_RETRY_AFTER_S = 1.0
"""Told to a call refused because every probe slot is taken: a probe ends within one
upstream timeout, so a client coming back in a second finds a verdict or a free slot."""


class Permit:
    """The answer of `allow()`; hand it back to exactly one `record_*` or `release`.

    `retry_after_s` is set when rejected (and on a shadow rejection: what enforce would
    have said). Permits of the closed state are shared, so a closed call allocates nothing.
    """

    __slots__ = ("_epoch", "_live", "allowed", "probe", "retry_after_s", "shadow_rejected")

    def __init__(
        self,
        allowed: bool,
        probe: bool,
        retry_after_s: float | None,
        shadow_rejected: bool,
        epoch: int,
    ) -> None:
        self.allowed = allowed
        self.probe = probe
        self.retry_after_s = retry_after_s
        self.shadow_rejected = shadow_rejected
        self._epoch = epoch
        self._live = probe  # a probe holds a half_open slot until it is settled


def iso_utc(wall: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds, e.g. `2023-11-14T22:13:20.000Z`."""
    text = datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


class CircuitBreaker:
    """One named breaker (an upstream's, or `redis`). Not thread-safe: one event loop.

    Subscribers of `on_transition` are called after the state changed and must not call
    back into the breaker.
    """

    __slots__ = (
        "_clock",
        "_consecutive",
        "_epoch",
        "_failure_on",
        "_in_flight",
        "_on_transition",
        "_opened_at",
        "_opened_at_wall",
        "_pass",
        "_plain_success_below",
        "_probe_successes",
        "_rate_threshold",
        "_shadow",
        "_slow",
        "_state",
        "_total_failures",
        "_total_rejections",
        "_total_shadow_rejections",
        "_total_slow_calls",
        "_total_successes",
        "_window_calls",
        "_window_failures",
        "name",
        "policy",
    )

    def __init__(
        self,
        name: str,
        policy: CircuitBreakerPolicy,
        clock: Clock,
        on_transition: Callable[[BreakerTransition], None] | None = None,
    ) -> None:
        self.name = name
        self._clock = clock
        self._on_transition = on_transition
        self._state = CLOSED
        self._epoch = 0
        self._pass = Permit(True, False, None, False, 0)
        self._opened_at = 0.0
        self._opened_at_wall: float | None = None
        self._consecutive = 0
        self._in_flight = 0
        self._probe_successes = 0
        self._total_successes = 0
        self._total_failures = 0
        self._total_slow_calls = 0
        self._total_rejections = 0
        self._total_shadow_rejections = 0
        now = clock.monotonic()
        self._window_calls = RollingCounter(policy.window, now)
        self._window_failures = RollingCounter(policy.window, now)
        self._apply(policy)

    def _apply(self, policy: CircuitBreakerPolicy) -> None:
        self.policy = policy
        self._failure_on = OutcomeMatcher.compile(policy.failure_on)
        self._slow = policy.slow_call_duration
        self._shadow = policy.mode == "shadow"
        self._rate_threshold = policy.failure_rate_threshold
        self._plain_success_below = 0
        if self._slow is None and self._rate_threshold is None:
            failing = self._failure_on.statuses
            self._plain_success_below = min(failing) if failing else 600
        """A closed-state answer with a status below this is a success that changes nothing
        but two counters (no slow-call or rate rule to consult): the common case, kept short."""

    def reconfigure(self, policy: CircuitBreakerPolicy) -> None:
        """Take a reloaded policy, keeping state, epoch and totals.

        New thresholds apply from the next recorded call (nothing trips on reload); an
        open breaker's timer keeps its start and runs to the new `recovery_timeout`. The
        failure-rate window restarts empty only if its length changed.
        """
        if policy.window != self.policy.window:
            now = self._clock.monotonic()
            self._window_calls = RollingCounter(policy.window, now)
            self._window_failures = RollingCounter(policy.window, now)
        self._apply(policy)

    def allow(self) -> Permit:
        """Ask before each attempt. Rejected: `allowed` False with `retry_after_s`."""
        state = self._state
        if state is CLOSED or state is FORCED_CLOSED:
            return self._pass
        if state is OPEN:
            wait = self._opened_at + self.policy.recovery_timeout - self._clock.monotonic()
            if wait > 0:
                return self._reject(wait)
            self._enter_half_open()
            state = self._state
        if state is HALF_OPEN:
            if self._in_flight < self.policy.half_open_max_calls:
                self._in_flight += 1
                return Permit(True, True, None, False, self._epoch)
            return self._reject(HALF_OPEN_RETRY_AFTER_S)
        return self._reject(self.policy.recovery_timeout)

    def record_outcome(
        self, permit: Permit, kind: OutcomeKind, status: int, duration_s: float
    ) -> None:
        """Record an HTTP attempt, judged by the policy's `failure_on`."""
        if permit is self._pass and status < self._plain_success_below and kind is STATUS:
            self._total_successes += 1
            self._consecutive = 0
            return
        if self._failure_on.matches(kind, status):
            self.record_failure(permit)
        else:
            self.record_success(permit, duration_s)

    def record_success(self, permit: Permit, duration_s: float = 0.0) -> None:
        """The call reached the upstream and worked (a slow one counts as a failure)."""
        slow = self._slow
        if slow is not None and duration_s > slow:
            self._total_slow_calls += 1
            self.record_failure(permit)
            return
        current = self._settle(permit)
        self._total_successes += 1
        if not current:
            return
        self._consecutive = 0
        state = self._state
        if state is CLOSED:
            threshold = self._rate_threshold
            if threshold is not None and self._count_in_window(False, threshold):
                self._transition(OPEN, "failure_rate")
        elif state is HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self.policy.success_threshold:
                self._transition(CLOSED, "success_threshold")

    def record_failure(self, permit: Permit) -> None:
        """The call reached the upstream, or tried to, and failed."""
        current = self._settle(permit)
        self._total_failures += 1
        if not current:
            return
        self._consecutive += 1
        state = self._state
        if state is CLOSED:
            threshold = self._rate_threshold
            rate_tripped = threshold is not None and self._count_in_window(True, threshold)
            if self._consecutive >= self.policy.failure_threshold:
                self._transition(OPEN, "failure_threshold")
            elif rate_tripped:
                self._transition(OPEN, "failure_rate")
        elif state is HALF_OPEN:
            self._transition(OPEN, "probe_failure")

    def release(self, permit: Permit) -> None:
        """The call never reached the upstream (cancelled, shed): free its slot, count nothing.

        Safe after a `record_*` or on a rejected permit (it does nothing then), so it can
        sit in a `finally`.
        """
        if permit._live:
            permit._live = False
            if permit._epoch == self._epoch:
                self._in_flight -= 1

    def _settle(self, permit: Permit) -> bool:
        """Close the permit's books; True if it belongs to the current epoch's state."""
        if permit is self._pass:
            return True  # the closed state's shared permit: current by construction
        if not permit.allowed:
            raise ValueError("a rejected call has no outcome to record")
        if permit.probe:
            if not permit._live:
                raise ValueError("this permit was already settled")
            permit._live = False
            if permit._epoch != self._epoch:
                return False
            self._in_flight -= 1
            return True
        return permit._epoch == self._epoch and not permit.shadow_rejected

    def _reject(self, retry_after_s: float) -> Permit:
        if self._shadow:
            self._total_shadow_rejections += 1
            return Permit(True, False, retry_after_s, True, self._epoch)
        self._total_rejections += 1
        return Permit(False, False, retry_after_s, False, self._epoch)

    def _count_in_window(self, failed: bool, threshold: float) -> bool:
        """Add a call to the failure-rate window; True if `failures / calls >= threshold`
        with `minimum_calls` calls in it.

        At least one failure is needed, so a threshold of 0 does not open on successes.
        """
        now = self._clock.monotonic()
        calls = self._window_calls.add(now)
        window_failures = self._window_failures
        failures = window_failures.add(now) if failed else window_failures.total(now)
        if calls < self.policy.minimum_calls:
            return False
        return failures > 0 and failures / calls >= threshold

    def _observe(self) -> BreakerState:
        """The state now, moving open -> half_open if `recovery_timeout` has run out."""
        if (
            self._state is OPEN
            and self._clock.monotonic() >= self._opened_at + self.policy.recovery_timeout
        ):
            self._enter_half_open()
        return self._state

    def _enter_half_open(self) -> None:
        due = self._opened_at + self.policy.recovery_timeout
        late = self._clock.monotonic() - due
        self._transition(HALF_OPEN, "recovery_timeout", self._clock.wall() - late)

    def _transition(self, to: BreakerState, reason: str, at_wall: float | None = None) -> None:
        previous = self._state
        self._start_epoch(to)
        if at_wall is None:
            at_wall = self._clock.wall()
        if to is OPEN or to is FORCED_OPEN:
            self._opened_at = self._clock.monotonic()
            self._opened_at_wall = at_wall
        elif to is CLOSED or to is FORCED_CLOSED:
            self._opened_at_wall = None
        if self._on_transition is not None:
            self._on_transition(
                BreakerTransition(self.name, previous.value, to.value, at_wall, reason)
            )

    def _start_epoch(self, state: BreakerState) -> None:
        self._state = state
        self._epoch += 1
        self._pass = Permit(True, False, None, False, self._epoch)
        self._in_flight = 0
        self._probe_successes = 0
        if state is CLOSED:
            self._consecutive = 0
            self._window_calls.clear()
            self._window_failures.clear()

    def probe_ticket(self) -> int | None:
        """Open (and not yet due for half_open): the epoch a health probe started in, to
        hand to `probe_succeeded`; otherwise None (nothing to probe)."""
        if self._observe() is OPEN:
            return self._epoch
        return None

    def probe_succeeded(self, ticket: int) -> None:
        """A health probe started at `ticket` found the upstream answering: half_open now,
        before `recovery_timeout`. A probe that outlived its open state changes nothing."""
        if ticket == self._epoch and self._observe() is OPEN:
            self._transition(HALF_OPEN, "health_probe")

    def force_open(self) -> None:
        """Reject every call (shadow mode: only count) until `force_close` or `reset`."""
        if self._observe() is not FORCED_OPEN:
            self._transition(FORCED_OPEN, "force_open")

    def force_close(self) -> None:
        """Admit every call until `force_open` or `reset`; failures still show in
        `consecutive_failures` but never trip it."""
        if self._observe() is not FORCED_CLOSED:
            self._transition(FORCED_CLOSED, "force_close")

    def reset(self) -> None:
        """Back to closed with a clean consecutive count and window; totals are kept.

        Already closed: no transition, but a new epoch, so calls in flight from before the
        reset do not count against the fresh start.
        """
        if self._observe() is CLOSED:
            self._start_epoch(CLOSED)
        else:
            self._transition(CLOSED, "reset")

    @property
    def state(self) -> BreakerState:
        return self._observe()

    @property
    def retry_after_s(self) -> float | None:
        """Open: time until half_open. Forced open: `recovery_timeout`, a hint, since only
        an operator ends it. Otherwise None."""
        state = self._observe()
        if state is OPEN:
            return self._opened_at + self.policy.recovery_timeout - self._clock.monotonic()
        if state is FORCED_OPEN:
            return self.policy.recovery_timeout
        return None

    def stats(self) -> dict[str, Any]:
        """The STATS object of the admin API (CONTRACT 3), plus configuration and window.

        The window is kept only while `failure_rate_threshold` is set (it costs a clock read
        per call); without it `window_calls` and `window_failures` read 0.
        """
        state = self._observe()
        now = self._clock.monotonic()
        calls = self._total_successes + self._total_failures
        retry_after = self.retry_after_s
        policy = self.policy
        return {
            "name": self.name,
            "state": state.value,
            "mode": policy.mode,
            "total_calls": calls,
            "total_successes": self._total_successes,
            "total_failures": self._total_failures,
            "failure_rate": self._total_failures / calls if calls else 0.0,
            "total_rejections": self._total_rejections,
            "total_shadow_rejections": self._total_shadow_rejections,
            "total_slow_calls": self._total_slow_calls,
            "consecutive_failures": self._consecutive,
            "opened_at": None if self._opened_at_wall is None else iso_utc(self._opened_at_wall),
            "retry_after_s": None if retry_after is None else round(retry_after, 3),
            "failure_threshold": policy.failure_threshold,
            "recovery_timeout_s": policy.recovery_timeout,
            "success_threshold": policy.success_threshold,
            "half_open_max_calls": policy.half_open_max_calls,
            "half_open_in_flight": self._in_flight,
            "half_open_successes": self._probe_successes,
            "failure_rate_threshold": policy.failure_rate_threshold,
            "minimum_calls": policy.minimum_calls,
            "window_s": policy.window,
            "window_calls": self._window_calls.total(now),
            "window_failures": self._window_failures.total(now),
        }

    # -- one breaker across processes (workers > 1) ---------------------------------------------
    def shared_state(self) -> tuple[str, float | None, float | None, int]:
        """`(state, opened_at_wall, retry_after_s, consecutive_failures)`: what a worker
        needs to mirror this breaker (the supervisor's copy is the authoritative one)."""
        state = self._observe()
        return state.value, self._opened_at_wall, self.retry_after_s, self._consecutive

    def adopt(
        self,
        state: str,
        opened_at_wall: float | None,
        retry_after_s: float | None,
        consecutive: int,
    ) -> None:
        """Take a state decided in another process, emitting no transition (the process
        that decided it did). Starts a new epoch: calls in flight count in totals only."""
        target = BreakerState(state)
        self._start_epoch(target)
        self._consecutive = consecutive
        self._opened_at_wall = opened_at_wall
        if target is OPEN:
            left = retry_after_s if retry_after_s is not None else self.policy.recovery_timeout
            self._opened_at = self._clock.monotonic() + left - self.policy.recovery_timeout
        elif target is FORCED_OPEN:
            self._opened_at = self._clock.monotonic()
