"""RedisStore on a real 3-master Redis Cluster: one script call per decision in one slot,
exact across replicas, slot migration (MOVED/ASK) and a lost node cost no failed decision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from policies.model import StoragePolicy
from proxy.clock import FakeClock
from proxy.core.breaker import CircuitBreaker
from proxy.storage.base import LimitCheck, await_decision
from proxy.storage.connect import RedisTarget
from proxy.storage.fallback import FallbackStore
from proxy.storage.redis import RedisStore, window_keys
from tests.support.redis_cluster import RedisCluster

TIMEOUT = 2.0


def cluster_store(cluster: RedisCluster, timeout: float = TIMEOUT) -> RedisStore:
    return RedisStore.connect(RedisTarget("", tuple(cluster.addresses)), timeout=timeout)


@pytest.fixture
async def store(redis_cluster: RedisCluster) -> AsyncIterator[RedisStore]:
    store = cluster_store(redis_cluster)
    yield store
    await store.close()


def checks(user: str, ip: str = "10.0.0.1", limit: int = 3) -> list[LimitCheck]:
    """A role rule keyed by the user and an endpoint rule keyed by IP: two keys, one tag."""
    return [
        LimitCheck("role:viewer", user, limit, 60.0, False, user),
        LimitCheck("by-ip", ip, 1000, 60.0, False, user),
    ]


def tagged(user: str) -> bytes:
    return window_keys("rl:", checks(user), tagged=True)[0]


def slot_of(cluster: RedisCluster, key: bytes) -> int:
    reply = cluster.nodes[0].command("CLUSTER", "KEYSLOT", key.decode())
    return int(reply[1:].split(b"\r\n")[0])


def test_the_keys_of_one_decision_share_a_slot(redis_cluster: RedisCluster):
    keys = window_keys("rl:", checks("user-7", "192.0.2.1"), tagged=True)
    assert len({slot_of(redis_cluster, key) for key in keys}) == 1
    other = window_keys("rl:", checks("user-8", "192.0.2.1"), tagged=True)
    assert other != keys  # the same IP rule, counted per user in a cluster


async def test_every_identity_gets_exactly_its_limit_across_replicas(redis_cluster: RedisCluster):
    replicas = [cluster_store(redis_cluster) for _ in range(3)]
    users = [f"user-{i}" for i in range(30)]  # spread over the three masters' slots
    try:
        calls = [
            await_decision(replicas[i % 3], checks(users[i % 30], limit=4)) for i in range(300)
        ]
        decisions = await asyncio.gather(*calls)
    finally:
        for replica in replicas:
            await replica.close()
    admitted: dict[str, int] = {}
    for i, decision in enumerate(decisions):
        admitted[users[i % 30]] = admitted.get(users[i % 30], 0) + decision.allowed
    assert admitted == {user: 4 for user in users}
    holders = {_holder(redis_cluster, slot_of(redis_cluster, tagged(u))) for u in users}
    assert holders == {0, 1, 2}


async def test_scripts_are_loaded_again_on_every_master(
    store: RedisStore, redis_cluster: RedisCluster
):
    assert (await await_decision(store, checks("before"))).allowed
    for node in redis_cluster.nodes:
        node.command("SCRIPT", "FLUSH")
    decisions = [await await_decision(store, checks(f"after-{i}")) for i in range(10)]
    assert all(d.allowed for d in decisions)


async def test_usage_is_kept_in_the_users_slot(store: RedisStore):
    for path in ("/a", "/a", "/b"):
        store.record_usage("u1", path, 60.0)
    for _ in range(100):
        if (await store.usage("u1")).total_requests == 3:
            break
        await asyncio.sleep(0.02)
    usage = await store.usage("u1")
    assert dict(usage.endpoints) == {"/a": 2, "/b": 1}


def _node_id(cluster: RedisCluster, index: int) -> str:
    return cluster.nodes[index].command("CLUSTER", "MYID").split(b"\r\n")[1].decode()


def _holder(cluster: RedisCluster, slot: int) -> int:
    """The index of the node that holds keys of `slot`."""
    for index, node in enumerate(cluster.nodes):
        if node.command("CLUSTER", "COUNTKEYSINSLOT", str(slot)) != b":0\r\n":
            return index
    raise AssertionError(f"no node holds keys of slot {slot}")


async def test_a_slot_migration_costs_no_decision_and_stays_exact(
    store: RedisStore, redis_cluster: RedisCluster
):
    user = "migrating-user"
    slot = slot_of(redis_cluster, window_keys("rl:", checks(user), True)[0])
    first = [(await await_decision(store, checks(user, limit=5))).allowed for _ in range(2)]
    assert first == [True, True]
    source = _holder(redis_cluster, slot)
    target = (source + 1) % 3
    source_id, target_id = _node_id(redis_cluster, source), _node_id(redis_cluster, target)
    src, dst = redis_cluster.nodes[source], redis_cluster.nodes[target]
    dst.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
    src.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
    # Half-way: the keys still on the source answer there, new keys are ASKed to the target.
    assert (await await_decision(store, checks(user, limit=5))).allowed
    keys = src.command("CLUSTER", "GETKEYSINSLOT", str(slot), "100").split(b"\r\n")
    names = [k.decode() for k in keys[2::2] if k]
    assert names
    src.command("MIGRATE", "127.0.0.1", str(dst.port), "", "0", "5000", "KEYS", *names)
    for node in (src, dst):
        node.command("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
    remaining = [(await await_decision(store, checks(user, limit=5))).allowed for _ in range(4)]
    assert remaining == [True, True, False, False]  # 5 in all: exact across the move
    assert _holder(redis_cluster, slot) == target


async def test_a_lost_node_falls_back_and_recovers(redis_cluster: RedisCluster):
    clock = FakeClock()
    policy = StoragePolicy(backend="redis", expected_replicas=1)
    breaker = CircuitBreaker("redis", policy.circuit_breaker, clock)
    changes: list[bool] = []
    primary = cluster_store(redis_cluster, timeout=0.5)
    store = FallbackStore(primary, breaker, policy, clock=clock, on_fallback_change=changes.append)
    users = [f"node-loss-{i}" for i in range(12)]
    try:
        for user in users:
            assert (await await_decision(store, checks(user))).allowed
        lost = redis_cluster.nodes[1]
        lost.kill()
        decisions = []
        for _ in range(8):  # batches as under load: each spans every master
            batch = [await_decision(store, checks(user)) for user in users]
            decisions += await asyncio.gather(*batch)
        assert all(d.allowed or d.blocking_rule == "role:viewer" for d in decisions)
        assert breaker.state == "open" and store.fallback_active and changes == [True]
        lost.start()
        redis_cluster.wait_ok()
        clock.advance(policy.circuit_breaker.recovery_timeout)
        for _ in range(50):  # a bounded poll: the client relearns the slot map
            await await_decision(store, checks("probe"))
            if not store.fallback_active:
                break
            await asyncio.sleep(0.1)
        assert not store.fallback_active and changes == [True, False]
        fresh = [(await await_decision(store, checks("after-recovery"))).allowed for _ in range(4)]
        assert fresh == [True, True, True, False]
    finally:
        await primary.close()
