"""FallbackStore: Redis behind the `redis` breaker, with on_failure memory | allow | deny."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from policies.model import StoragePolicy
from proxy.clock import FakeClock
from proxy.storage.base import (
    Decision,
    DecisionDone,
    LimitCheck,
    LimitStore,
    StoreUnavailable,
    Usage,
    await_decision,
)
from proxy.storage.fallback import FallbackStore
from proxy.storage.memory import MemoryStore
from proxy.storage.redis import RedisStore
from tests.support.redis_server import RedisServer

RECOVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class FakePermit:
    allowed: bool


class FakeBreaker:
    """Opens after `threshold` consecutive failures; half-open after RECOVERY_S of the clock;
    closed again after `probes` successes."""

    def __init__(self, clock: FakeClock, threshold: int = 2, probes: int = 1) -> None:
        self.clock = clock
        self.threshold = threshold
        self.probes = probes
        self.state = "closed"
        self.failures = 0
        self.successes = 0
        self.released = 0
        self.opened_at = 0.0

    def allow(self) -> FakePermit:
        if self.state == "open" and self.clock.monotonic() - self.opened_at >= RECOVERY_S:
            self.state = "half_open"
        return FakePermit(self.state != "open")

    def record_success(self, permit: FakePermit, duration_s: float) -> None:
        self.failures = 0
        if self.state == "half_open":
            self.successes += 1
            if self.successes >= self.probes:
                self.state = "closed"

    def record_failure(self, permit: FakePermit) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self.state, self.opened_at, self.successes = "open", self.clock.monotonic(), 0

    def release(self, permit: FakePermit) -> None:
        self.released += 1


class BrokenStore:
    """A primary that fails every call with `error` while `broken`, else answers from memory."""

    def __init__(self, clock: FakeClock, error: Exception) -> None:
        self.memory = MemoryStore(clock)
        self.error = error
        self.broken = True
        self.calls = 0

    def decide(
        self, checks: Sequence[LimitCheck], later: DecisionDone, context: Any
    ) -> Decision | None:
        """Broken: fails later, as Redis does; working: answers now, as memory does."""
        self.calls += 1
        if self.broken:
            asyncio.get_running_loop().call_soon(later, context, self.error)
            return None
        return self.memory.decide(checks, later, context)

    def record_usage(self, user_id: str, path: str, window_s: float) -> None:
        self.memory.record_usage(user_id, path, window_s)

    async def usage(self, user_id: str) -> Usage:
        if self.broken:
            raise self.error
        return await self.memory.usage(user_id)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        await self.memory.close()


def hear(heard: list[Decision | Exception], result: Decision | Exception) -> None:
    """A continuation that keeps what it hears in its context, a list."""
    heard.append(result)


def check(limit: int = 4, key: str = "u1", shadow: bool = False) -> LimitCheck:
    return LimitCheck("role:admin", key, limit, 60.0, shadow)


def make(
    primary: LimitStore,
    on_failure: Literal["memory", "allow", "deny"] = "memory",
    replicas: int = 1,
) -> tuple[FallbackStore, FakeBreaker, FakeClock, list[bool]]:
    clock = FakeClock()
    breaker = FakeBreaker(clock)
    changes: list[bool] = []
    policy = StoragePolicy(backend="redis", on_failure=on_failure, expected_replicas=replicas)
    store = FallbackStore(primary, breaker, policy, clock=clock, on_fallback_change=changes.append)
    return store, breaker, clock, changes


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, timeout=0.2)
    yield store
    await store.close()


async def test_redis_down_falls_back_to_memory_and_comes_back(
    redis_server: RedisServer, redis_store: RedisStore
):
    store, breaker, clock, changes = make(redis_store, replicas=2)
    assert (await await_decision(store, [check()])).results[0].limit == 4
    assert not store.fallback_active

    redis_server.stop()
    decisions = [await await_decision(store, [check()]) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, False, False]  # 4 // 2 replicas
    assert decisions[0].results[0].limit == 2
    assert store.fallback_active and changes == [True]
    assert breaker.state == "open"

    redis_server.start()
    assert not (
        await await_decision(store, [check()])
    ).allowed  # breaker still open: memory answers
    clock.advance(RECOVERY_S)
    back = await await_decision(store, [check()])
    assert back.allowed and back.results[0].limit == 4
    assert not store.fallback_active and changes == [True, False]
    assert breaker.state == "closed"


async def test_an_open_breaker_never_calls_the_primary():
    clock = FakeClock()
    primary = BrokenStore(clock, StoreUnavailable("down"))
    store, breaker, _, _ = make(primary)
    for _ in range(10):
        await await_decision(store, [check()])
    assert primary.calls == breaker.threshold


async def test_fallback_stays_active_until_the_probes_close_the_breaker():
    clock = FakeClock()
    primary = BrokenStore(clock, StoreUnavailable("down"))
    store, breaker, clock, changes = make(primary)
    breaker.probes = 2
    for _ in range(breaker.threshold):
        await await_decision(store, [check()])
    primary.broken = False
    clock.advance(RECOVERY_S)
    await await_decision(store, [check()])
    assert breaker.state == "half_open" and store.fallback_active
    await await_decision(store, [check()])
    assert breaker.state == "closed" and not store.fallback_active
    assert changes == [True, False]


async def test_allow_mode_admits_everything_with_the_full_limit_remaining():
    store, _, _, changes = make(BrokenStore(FakeClock(), StoreUnavailable("down")), "allow")
    decisions = [await await_decision(store, [check(limit=1)]) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert {d.results[0].remaining for d in decisions} == {1}
    assert changes == [True]


async def test_deny_mode_refuses_blaming_the_first_enforcing_rule():
    store, *_ = make(BrokenStore(FakeClock(), StoreUnavailable("down")), "deny")
    decision = await await_decision(
        store, [check(key="shadowed", shadow=True), check(), check(key="b")]
    )
    assert not decision.allowed
    assert (decision.blocking_rule, decision.retry_after_s) == ("role:admin", 1.0)
    assert [r.outcome for r in decision.results] == ["shadow_limited", "limited", "limited"]
    only_shadow = await await_decision(store, [check(shadow=True)])
    assert only_shadow.allowed


async def test_an_unexpected_error_is_a_failure_not_an_exception():
    store, breaker, _, _ = make(BrokenStore(FakeClock(), RuntimeError("bug")))
    assert (await await_decision(store, [check()])).allowed
    assert breaker.failures == 1 and store.fallback_active


async def test_one_failed_batch_counts_as_one_failure():
    """Every decision of a batch fails with the same cause: Redis failed once, not 16 times."""
    batch_cause = TimeoutError("one slow reply")
    shared = StoreUnavailable("redis: TimeoutError")
    shared.__cause__ = batch_cause
    primary = BrokenStore(FakeClock(), shared)
    store, breaker, _, _ = make(primary)
    breaker.threshold = 5
    for _ in range(16):
        await await_decision(store, [check(limit=100)])
    assert breaker.failures == 1 and breaker.released == 15
    again = StoreUnavailable("redis: TimeoutError")
    again.__cause__ = TimeoutError("the next batch")
    primary.error = again
    await await_decision(store, [check(limit=100)])
    assert breaker.failures == 2


async def test_a_waiter_that_gives_up_leaves_the_permit_to_the_answer():
    class Late(BrokenStore):
        """Answers when told to, as Redis does after the waiter may have gone."""

        def decide(self, checks: Sequence[LimitCheck], later: DecisionDone, context: Any) -> None:
            self.later = lambda: later(context, self.error)

    primary = Late(FakeClock(), StoreUnavailable("down"))
    store, breaker, _, _ = make(primary)
    task = asyncio.create_task(await_decision(store, [check()]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.released == 0 and breaker.failures == 0
    primary.later()  # the store's own timeout guarantees this call comes
    assert breaker.failures == 1


async def test_a_failure_reaches_the_continuation_as_a_decision():
    store, _, _, _ = make(BrokenStore(FakeClock(), StoreUnavailable("down")))
    heard: list[Decision | Exception] = []
    assert store.decide([check()], hear, heard) is None
    await asyncio.sleep(0)
    assert len(heard) == 1 and isinstance(heard[0], Decision) and store.fallback_active


async def test_decisions_are_known_now_while_the_breaker_rejects():
    store, breaker, clock, _ = make(BrokenStore(FakeClock(), StoreUnavailable("down")))
    breaker.state, breaker.opened_at = "open", clock.monotonic()
    heard: list[Decision | Exception] = []
    decision = store.decide([check()], hear, heard)
    assert decision is not None and decision.allowed and store.fallback_active
    await asyncio.sleep(0)
    assert heard == []


async def test_usage_follows_the_store_that_answers():
    clock = FakeClock()
    primary = BrokenStore(clock, StoreUnavailable("down"))
    primary.broken = False
    store, _, _, _ = make(primary)
    store.record_usage("u1", "/in-primary", 60.0)
    assert await store.usage("u1") == Usage({"/in-primary": 1}, 1)

    primary.broken = True
    await await_decision(store, [check()])
    store.record_usage("u1", "/in-memory", 60.0)
    assert await store.usage("u1") == Usage({"/in-memory": 1}, 1)


async def test_a_failing_usage_read_falls_back_to_memory():
    store, *_ = make(BrokenStore(FakeClock(), StoreUnavailable("down")))
    assert await store.usage("u1") == Usage({}, 0)


async def test_no_rule_skips_the_breaker_and_ping_asks_the_primary():
    clock = FakeClock()
    primary = BrokenStore(clock, StoreUnavailable("down"))
    store, _, _, _ = make(primary)
    assert (await await_decision(store, [])).allowed and primary.calls == 0
    assert await store.ping()
    await store.close()
