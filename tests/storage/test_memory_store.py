"""MemoryStore: exact windows, bounded memory, the fallback's scaling, and per-user usage."""

from __future__ import annotations

import pytest

from proxy.clock import FakeClock
from proxy.storage.base import (
    MAX_USAGE_PATHS,
    OTHER_PATHS,
    USAGE_BUCKETS,
    LimitCheck,
    Usage,
    await_decision,
)
from proxy.storage.memory import (
    SWEEP_EVERY,
    SWEEP_VISITS,
    IdleSweptMap,
    MemoryStore,
    MemoryUsage,
)


def check(key: str = "u1", limit: int = 3, window_s: float = 60.0, rule: str = "role:admin"):
    return LimitCheck(rule, key, limit, window_s)


async def admitted(store: MemoryStore, checks: list[LimitCheck], n: int) -> int:
    return sum([(await await_decision(store, checks)).allowed for _ in range(n)])


async def test_limit_is_exact_and_frees_as_the_window_slides():
    clock = FakeClock()
    store = MemoryStore(clock)
    assert await admitted(store, [check(limit=3)], 5) == 3
    refused = await await_decision(store, [check(limit=3)])
    assert refused.blocking_rule == "role:admin" and refused.retry_after_s == 60.0
    clock.advance(60.0)
    assert await admitted(store, [check(limit=3)], 5) == 3


async def test_keys_are_counted_apart():
    store = MemoryStore(FakeClock())
    assert await admitted(store, [check("a", limit=1)], 2) == 1
    assert await admitted(store, [check("b", limit=1)], 2) == 1


async def test_refusal_by_one_rule_uses_no_quota_in_the_other():
    store = MemoryStore(FakeClock())
    ip_rule = LimitCheck("login", "10.0.0.1", 1, 60.0)
    user_rule = check(limit=2)
    assert await admitted(store, [user_rule, ip_rule], 3) == 1
    decision = await await_decision(store, [user_rule])
    assert decision.allowed and decision.results[0].remaining == 0


async def test_idle_keys_are_swept_by_later_decisions():
    clock = FakeClock()
    store = MemoryStore(clock)
    for i in range(100):
        await await_decision(store, [check(f"user{i}", window_s=10.0)])
    assert store.key_count == 100
    clock.advance(10.0)
    for _ in range((100 // SWEEP_VISITS + 1) * SWEEP_EVERY):
        await await_decision(store, [check("busy", window_s=10.0)])
    assert store.key_count == 1


async def test_a_refused_first_request_leaves_no_key_behind_and_no_quota_is_lost():
    store = MemoryStore(FakeClock())
    user_rule, ip_rule = check("u", limit=1), LimitCheck("login", "10.0.0.1", 0, 60.0)
    for _ in range(3):
        assert not (await await_decision(store, [user_rule, ip_rule])).allowed
    assert await admitted(store, [user_rule], 3) == 1


async def test_each_new_key_sweeps_two_idle_ones():
    clock = FakeClock()
    store = MemoryStore(clock)
    for i in range(100):
        await await_decision(store, [check(f"old{i}", window_s=10.0)])
    clock.advance(10.0)
    for i in range(50):
        await await_decision(store, [check(f"new{i}", window_s=10.0)])
    assert store.key_count == 50


async def test_live_keys_survive_the_sweep():
    clock = FakeClock()
    store = MemoryStore(clock)
    await await_decision(store, [check("long", limit=1, window_s=1000.0)])
    clock.advance(20.0)
    for _ in range(20):
        await await_decision(store, [check("busy", window_s=10.0)])
    assert store.key_count == 2
    assert not (await await_decision(store, [check("long", limit=1, window_s=1000.0)])).allowed


async def test_key_count_is_capped_evicting_the_least_recently_used():
    store = MemoryStore(FakeClock(), max_keys=10)
    for i in range(50):
        await await_decision(store, [check(f"user{i}", limit=1)])
    assert store.key_count == 10
    assert not (await await_decision(store, [check("user49", limit=1)])).allowed
    assert (
        await await_decision(store, [check("user0", limit=1)])
    ).allowed  # evicted: starts afresh


async def test_scale_divides_every_limit_and_reports_it():
    store = MemoryStore(FakeClock(), scale=3)
    assert await admitted(store, [check("a", limit=10)], 10) == 3
    decision = await await_decision(store, [check("a", limit=10)])
    assert decision.results[0].limit == 3
    assert await admitted(store, [check("b", limit=2)], 3) == 1  # never below 1


async def test_a_reloaded_limit_applies_to_existing_windows():
    store = MemoryStore(FakeClock())
    assert await admitted(store, [check(limit=5)], 3) == 3
    assert await admitted(store, [check(limit=2)], 1) == 0
    assert await admitted(store, [check(limit=4)], 3) == 2  # the newest 2 were kept


async def test_no_rule_admits_and_ping_is_true():
    store = MemoryStore(FakeClock())
    decision = await await_decision(store, [])
    assert decision.allowed and decision.results == ()
    assert await store.ping()
    await store.close()


def test_idle_swept_map_rejects_a_zero_cap():
    with pytest.raises(ValueError):
        IdleSweptMap(0)
    with pytest.raises(ValueError):
        MemoryStore(scale=0)


async def test_usage_counts_paths_in_the_current_window():
    clock = FakeClock()
    store = MemoryStore(clock)
    for path in ("/api/v1/productos", "/api/v1/productos", "/api/v1/ventas"):
        store.record_usage("u1", path, 60.0)
    store.record_usage("u2", "/other-user", 60.0)
    usage = await store.usage("u1")
    assert usage == Usage({"/api/v1/productos": 2, "/api/v1/ventas": 1}, 3)
    assert await store.usage("nobody") == Usage({}, 0)
    clock.advance(60.0)
    assert await store.usage("u1") == Usage({}, 0)


def test_usage_forgets_the_oldest_slice_first():
    clock = FakeClock(start=0.0)
    usage = MemoryUsage(clock)
    usage.record("u", "/old", 20.0)
    clock.advance(10.0)
    usage.record("u", "/new", 20.0)
    clock.advance(10.0)  # /old's slice has left the window, /new's has not
    assert usage.snapshot("u") == Usage({"/new": 1}, 1)


def test_usage_never_reports_more_than_the_window_and_loses_at_most_one_slice():
    clock = FakeClock(start=0.0)
    usage = MemoryUsage(clock)
    width = 60.0 / USAGE_BUCKETS
    for _ in range(USAGE_BUCKETS * 2):
        usage.record("u", "/p", 60.0)
        clock.advance(width)
    clock.advance(width / 2)
    assert USAGE_BUCKETS - 1 <= usage.snapshot("u").total_requests <= USAGE_BUCKETS


def test_usage_caps_paths_and_folds_the_rest_into_other():
    usage = MemoryUsage(FakeClock())
    for i in range(MAX_USAGE_PATHS + 10):
        usage.record("u", f"/p{i}", 60.0)
    snapshot = usage.snapshot("u")
    assert len(snapshot.endpoints) == MAX_USAGE_PATHS + 1
    assert snapshot.endpoints[OTHER_PATHS] == 10
    assert snapshot.total_requests == MAX_USAGE_PATHS + 10


def test_a_changed_role_window_starts_the_user_afresh():
    usage = MemoryUsage(FakeClock())
    usage.record("u", "/p", 60.0)
    usage.record("u", "/p", 30.0)
    assert usage.snapshot("u").total_requests == 1


def test_usage_users_are_bounded_and_idle_ones_swept():
    clock = FakeClock()
    usage = MemoryUsage(clock, max_users=5)
    for i in range(20):
        usage.record(f"user{i}", "/p", 10.0)
    assert len(usage) == 5
    clock.advance(10.0)
    for _ in range(SWEEP_EVERY):
        usage.record("busy", "/p", 10.0)
    assert len(usage) == 1


def test_usage_from_counts_keeps_the_busiest_paths():
    counts = {f"/p{i}": i + 1 for i in range(MAX_USAGE_PATHS + 5)}
    counts[OTHER_PATHS] = 7
    folded = Usage.from_counts(counts)
    assert len(folded.endpoints) == MAX_USAGE_PATHS + 1
    assert "/p0" not in folded.endpoints and f"/p{MAX_USAGE_PATHS + 4}" in folded.endpoints
    assert folded.endpoints[OTHER_PATHS] == 1 + 2 + 3 + 4 + 5 + 7
    assert folded.total_requests == sum(counts.values())
