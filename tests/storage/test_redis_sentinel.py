"""RedisStore through Sentinel, with real master, replica and sentinel processes: a failover
(the master killed, the replica promoted) costs no failed decision: memory decides while it
lasts, and decisions go back to Redis on the new master once the sentinel names it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.model import CircuitBreakerPolicy, StoragePolicy
from proxy.clock import FakeClock
from proxy.core.breaker import CircuitBreaker
from proxy.storage.base import LimitCheck, await_decision
from proxy.storage.connect import RedisTarget
from proxy.storage.fallback import FallbackStore
from proxy.storage.redis import RedisStore
from tests.support.redis_cluster import RedisSentinelSet


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[RedisSentinelSet]:
    redis = RedisSentinelSet(tmp_path)
    redis.start()
    yield redis
    redis.stop()


def check(user: str, limit: int = 3) -> LimitCheck:
    return LimitCheck("role:viewer", user, limit, 60.0, False, user)


async def test_a_failover_falls_back_then_returns_to_the_new_master(
    sentinel_set: RedisSentinelSet,
):
    clock = FakeClock()
    breaker_policy = CircuitBreakerPolicy(failure_threshold=2, recovery_timeout=1.0)
    policy = StoragePolicy(
        backend="redis",
        redis_sentinels=tuple(sentinel_set.sentinels),
        redis_sentinel_master=sentinel_set.master_name,
        circuit_breaker=breaker_policy,
    )
    breaker = CircuitBreaker("redis", breaker_policy, clock)
    changes: list[bool] = []
    primary = RedisStore.connect(RedisTarget.from_policy(policy), timeout=0.5)
    store = FallbackStore(primary, breaker, policy, clock=clock, on_fallback_change=changes.append)
    try:
        assert [(await await_decision(store, [check("before")])).allowed for _ in range(4)] == [
            True,
            True,
            True,
            False,
        ]
        assert changes == []
        sentinel_set.master.kill()
        during = []
        for _ in range(200):  # bounded: until the sentinel names the replica
            during.append(await await_decision(store, [check("during", limit=1000)]))
            if sentinel_set.named_master_port() == sentinel_set.replica.port:
                break
            await asyncio.sleep(0.05)
        assert sentinel_set.named_master_port() == sentinel_set.replica.port
        assert all(d.allowed for d in during) and changes == [True]
        for _ in range(100):  # bounded: probes reach the promoted replica
            clock.advance(breaker_policy.recovery_timeout)
            await await_decision(store, [check("probe", limit=1000)])
            if not store.fallback_active:
                break
            await asyncio.sleep(0.05)
        assert changes == [True, False]
        after = [(await await_decision(store, [check("after")])).allowed for _ in range(4)]
        assert after == [True, True, True, False]
        info = sentinel_set.replica.command("INFO", "replication")
        assert b"role:master" in info
    finally:
        await primary.close()
