"""RedisStore against a real redis-server: exactness across replicas, batching, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from proxy.storage.base import (
    MAX_USAGE_PATHS,
    OTHER_PATHS,
    LimitCheck,
    StoreUnavailable,
    Usage,
    await_decision,
)
from proxy.storage.redis import SLIDING_WINDOW, RedisStore
from tests.support.redis_server import RedisServer

TIMEOUT = 0.5


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, timeout=TIMEOUT)
    yield store
    await store.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def check(key: str = "u1", limit: int = 3, window_s: float = 60.0, rule: str = "role:admin"):
    return LimitCheck(rule, key, limit, window_s)


async def test_limit_is_exact_with_remaining_and_reset(store: RedisStore):
    decisions = [await await_decision(store, [check(limit=3)]) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.results[0].remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.blocking_rule == "role:admin"
    assert 59.0 < refused.retry_after_s <= 60.0
    assert refused.results[0].outcome == "limited"


async def test_two_replicas_admit_exactly_the_limit_under_concurrency(redis_url: str):
    replicas = [RedisStore.from_url(redis_url, timeout=2.0) for _ in range(2)]
    try:
        calls = [await_decision(replicas[i % 2], [check("shared", limit=37)]) for i in range(200)]
        decisions = await asyncio.gather(*calls)
    finally:
        for replica in replicas:
            await replica.close()
    assert sum(d.allowed for d in decisions) == 37


async def test_rules_are_recorded_together_or_not_at_all(store: RedisStore, raw: Redis):
    ip_rule = LimitCheck("login", "10.0.0.1", 5, 60.0)
    user_rules = [LimitCheck("role:viewer", f"user{i}", 100, 60.0) for i in range(50)]
    decisions = await asyncio.gather(*(await_decision(store, [u, ip_rule]) for u in user_rules))
    assert sum(d.allowed for d in decisions) == 5
    recorded = [await raw.zcard(f"rl:w:role:viewer:user{i}") for i in range(50)]
    assert sum(recorded) == 5
    assert [d.allowed for d in decisions] == [n == 1 for n in recorded]


async def test_shadow_rule_admits_and_its_window_stays_bounded(store: RedisStore, raw: Redis):
    shadow = LimitCheck("reportes", "u1", 2, 60.0, shadow=True)
    decisions = [await await_decision(store, [check(limit=10), shadow]) for _ in range(4)]
    assert all(d.allowed for d in decisions)
    assert [d.results[1].outcome for d in decisions][2:] == ["shadow_limited"] * 2
    assert await raw.zcard("rl:w:reportes:u1") == 2
    assert await raw.zcard("rl:w:role:admin:u1") == 4


async def test_windows_slide_and_expire(store: RedisStore, raw: Redis):
    short = check(limit=2, window_s=0.3)
    assert [(await await_decision(store, [short])).allowed for _ in range(3)] == [True, True, False]
    assert 0 < await raw.pttl("rl:w:role:admin:u1") <= 300
    refused = await await_decision(store, [short])
    await asyncio.sleep(refused.retry_after_s + 0.02)  # the window itself is what is tested
    assert (await await_decision(store, [short])).allowed


async def test_one_write_per_event_loop_tick(
    store: RedisStore, raw: Redis, monkeypatch: pytest.MonkeyPatch
):
    await await_decision(store, [check("warm-up")])  # loads the script
    await raw.config_resetstat()
    writes = 0
    send = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        nonlocal writes
        writes += 1
        await send(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    decisions = await asyncio.gather(*(await_decision(store, [check(f"k{i}")]) for i in range(100)))
    assert all(d.allowed for d in decisions)
    assert writes == 1
    stats = await raw.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 100


async def test_noscript_is_recovered_after_script_flush(store: RedisStore, raw: Redis):
    assert (await await_decision(store, [check(limit=5)])).allowed
    await raw.script_flush()
    decisions = await asyncio.gather(*(await_decision(store, [check(limit=5)]) for _ in range(6)))
    assert sum(d.allowed for d in decisions) == 4
    assert await raw.script_exists(SLIDING_WINDOW.sha) == [True]


async def test_a_paused_redis_gives_store_unavailable_within_the_timeout(
    redis_server: RedisServer, redis_url: str
):
    store = RedisStore.from_url(redis_url, timeout=0.1)
    try:
        assert (await await_decision(store, [check()])).allowed
        redis_server.pause()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await await_decision(store, [check()])
        assert time.monotonic() - started < 0.5
        assert not await store.ping()
        redis_server.resume()
        assert (await await_decision(store, [check()])).allowed
    finally:
        redis_server.resume()
        await store.close()


async def test_a_stopped_redis_gives_store_unavailable_and_recovers(
    redis_server: RedisServer, redis_url: str
):
    store = RedisStore.from_url(redis_url, timeout=0.2)
    try:
        redis_server.stop()
        with pytest.raises(StoreUnavailable, match="redis"):
            await await_decision(store, [check()])
        assert not await store.ping()
        store.record_usage("u1", "/lost", 60.0)  # best effort: no error reaches anyone
        redis_server.start()
        assert await store.ping()
        assert (
            await await_decision(store, [check()])
        ).allowed  # a fresh server: NOSCRIPT, reloaded
    finally:
        await store.close()


async def test_usage_counts_paths_of_each_user(store: RedisStore):
    for path in ("/api/v1/productos", "/api/v1/productos", "/api/v1/ventas"):
        store.record_usage("u1", path, 60.0)
    store.record_usage("u2", "/elsewhere", 60.0)
    assert await store.usage("u1") == Usage({"/api/v1/productos": 2, "/api/v1/ventas": 1}, 3)
    assert await store.usage("nobody") == Usage({}, 0)


async def test_usage_records_of_one_turn_are_summed_and_sent_without_replies(
    store: RedisStore, raw: Redis
):
    await raw.config_resetstat()
    for _ in range(3):
        store.record_usage("u1", "/p", 60.0)
    store.record_usage("u1", "/q", 60.0)
    assert await store.usage("u1") == Usage({"/p": 3, "/q": 1}, 4)
    stats = await raw.info("commandstats")
    assert stats["cmdstat_client|reply"]["calls"] == 2  # one record per (user, path)


async def test_usage_records_come_back_after_a_script_flush(store: RedisStore, raw: Redis):
    store.record_usage("u1", "/p", 60.0)
    assert (await store.usage("u1")).total_requests == 1
    await raw.script_flush()
    store.record_usage("u1", "/p", 60.0)  # NOSCRIPT, unanswered: this one is lost
    assert (await await_decision(store, [check()])).allowed  # reloads every script
    store.record_usage("u1", "/p", 60.0)
    assert (await store.usage("u1")).total_requests == 2


async def test_usage_caps_paths_per_user(store: RedisStore):
    for i in range(MAX_USAGE_PATHS + 3):
        store.record_usage("u1", f"/p{i}", 60.0)
    usage = await store.usage("u1")
    assert usage.total_requests == MAX_USAGE_PATHS + 3
    assert len(usage.endpoints) == MAX_USAGE_PATHS + 1
    assert usage.endpoints[OTHER_PATHS] == 3


async def test_usage_expires_with_the_window(store: RedisStore, raw: Redis):
    store.record_usage("u1", "/p", 0.4)
    assert (await store.usage("u1")).total_requests == 1
    assert 0 < await raw.pttl("rl:u:u1") <= 420
    await asyncio.sleep(0.45)  # the window itself is what is tested
    assert await store.usage("u1") == Usage({}, 0)


async def test_no_rule_needs_no_round_trip(store: RedisStore):
    decision = await await_decision(store, [])
    assert decision.allowed and decision.results == ()


async def test_any_user_id_and_path_round_trip(store: RedisStore):
    hostile = "\ud800 \u00e9:*"  # a lone surrogate is valid JSON in a token's `sub`
    decisions = await asyncio.gather(
        await_decision(store, [check(hostile)]), await_decision(store, [check("ok")])
    )
    assert all(d.allowed for d in decisions)
    store.record_usage(hostile, "/caf\u00e9/\udcff", 60.0)
    assert await store.usage(hostile) == Usage({"/caf\u00e9/\udcff": 1}, 1)
