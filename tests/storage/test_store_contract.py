"""The `LimitStore` contract, run against every store the pipeline can be given.

memory, Redis (a real redis-server), Redis Cluster (three real masters), and the fallback
store twice: with Redis up (Redis decides) and with the breaker open (its memory fallback
decides). Each case gets a fresh
store; `pass_time` lets a window elapse (the fake clock's, or real seconds for Redis).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from policies.model import StoragePolicy
from proxy.clock import FakeClock
from proxy.core.breaker import CircuitBreaker
from proxy.storage.base import Decision, LimitCheck, LimitStore, Usage, await_decision
from proxy.storage.connect import RedisTarget
from proxy.storage.fallback import FallbackStore
from proxy.storage.memory import MemoryStore
from proxy.storage.redis import RedisStore

STORES = ("memory", "redis", "redis-cluster", "fallback-redis", "fallback-memory")


@dataclass
class Subject:
    store: LimitStore
    pass_time: Callable[[float], Awaitable[None]]


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _breaker(policy: StoragePolicy, clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("redis", policy.circuit_breaker, clock)


@pytest.fixture(params=STORES)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    kind = request.param
    clock = FakeClock()

    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    if kind == "memory":
        yield Subject(MemoryStore(clock), advance)
        return
    if kind == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        target = RedisTarget("", tuple(cluster.addresses))
        store = RedisStore.connect(target, timeout=2.0)
        yield Subject(store, _sleep)
        await store.close()
        return
    redis_url = request.getfixturevalue("redis_url")
    redis = RedisStore.from_url(redis_url, timeout=2.0)
    if kind == "redis":
        yield Subject(redis, _sleep)
    else:
        policy = StoragePolicy(backend="redis")
        breaker = _breaker(policy, clock)
        store = FallbackStore(redis, breaker, policy, clock=clock)
        if kind == "fallback-redis":
            yield Subject(store, _sleep)
        else:
            breaker.force_open()
            yield Subject(store, advance)
    await redis.close()


def check(
    key: str = "u1", limit: int = 3, window_s: float = 60.0, rule: str = "role:user"
) -> LimitCheck:
    return LimitCheck(rule, key, limit, window_s)


def hear(heard: list[Decision | Exception], result: Decision | Exception) -> None:
    """A continuation that keeps what it hears in its context, a list."""
    heard.append(result)


async def decide(subject: Subject, *checks: LimitCheck) -> Decision:
    return await await_decision(subject.store, list(checks))


async def test_admits_the_limit_then_refuses_with_a_retry_after(subject: Subject):
    decisions = [await decide(subject, check(limit=3)) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.results[0].remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.blocking_rule == "role:user"
    assert 0 < refused.retry_after_s <= 60.0
    assert refused.results[0].limit == 3 and refused.results[0].window_s == 60.0


async def test_keys_and_rules_are_counted_apart(subject: Subject):
    for _ in range(2):
        assert (await decide(subject, check("a", limit=2))).allowed
    assert not (await decide(subject, check("a", limit=2))).allowed
    assert (await decide(subject, check("b", limit=2))).allowed
    assert (await decide(subject, check("a", limit=2, rule="other"))).allowed


async def test_a_refusal_records_in_no_rule(subject: Subject):
    tight, loose = check(limit=1, rule="tight"), check(limit=10, rule="loose")
    assert (await decide(subject, tight, loose)).allowed
    for _ in range(3):
        refused = await decide(subject, tight, loose)
        assert not refused.allowed and refused.blocking_rule == "tight"
    alone = await decide(subject, check(limit=10, rule="loose"))
    assert alone.results[0].remaining == 8  # one admission recorded, the refusals none


async def test_a_shadow_rule_counts_but_never_refuses(subject: Subject):
    shadow = LimitCheck("shadowed", "u1", 2, 60.0, True)
    decisions = [await decide(subject, shadow) for _ in range(4)]
    assert all(d.allowed for d in decisions)
    assert [d.results[0].allowed for d in decisions] == [True, True, False, False]
    assert all(d.blocking_rule is None for d in decisions)


async def test_the_window_slides(subject: Subject):
    short = check(limit=1, window_s=0.3)
    assert (await decide(subject, short)).allowed
    assert not (await decide(subject, short)).allowed
    await subject.pass_time(0.35)
    assert (await decide(subject, short)).allowed


async def test_no_checks_are_admitted_at_once(subject: Subject):
    heard: list[Decision | Exception] = []
    decision = subject.store.decide([], hear, heard)
    assert decision is not None and decision.allowed and decision.results == ()
    await asyncio.sleep(0)
    assert heard == []


async def test_the_continuation_runs_once_and_only_without_an_answer_now(subject: Subject):
    heard: list[Decision | Exception] = []
    now = subject.store.decide([check()], hear, heard)
    for _ in range(100):  # a bounded poll: Redis answers within a few loop turns
        if now is not None or heard:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    if now is None:
        assert len(heard) == 1 and isinstance(heard[0], Decision) and heard[0].allowed
    else:
        assert heard == [] and now.allowed


async def test_usage_counts_forwarded_requests_per_path(subject: Subject):
    store = subject.store
    for path in ("/a", "/a", "/b"):
        store.record_usage("u1", path, 60.0)
    store.record_usage("u2", "/a", 60.0)
    expected = Usage({"/a": 2, "/b": 1}, 3)
    for _ in range(100):  # records ride the next batch (or a short timer) to Redis
        if await store.usage("u1") == expected:
            break
        await asyncio.sleep(0.02)
    assert await store.usage("u1") == expected
    assert await store.usage("nobody") == Usage({}, 0)


async def test_ping_answers_while_the_backend_is_up(subject: Subject):
    assert await subject.store.ping()
