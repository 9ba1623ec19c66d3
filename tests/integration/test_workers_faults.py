"""`server.workers: 2` under faults, with real processes: a worker killed in the middle of
requests, and a Redis Cluster node killed under load.

Each test holds connections on a known worker (`tests.support.workers`), so it can tell
what the killed worker had in flight from what the other one had, and ask the worker that
saw no failure what it reports.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

from tests.support.fault_upstream import FaultUpstream
from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import free_port
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer
from tests.support.tokens import bearer
from tests.support.workers import (
    WORKERS,
    Pinned,
    children,
    counters,
    fresh,
    pinned_http,
    sample,
    scrape,
    start_workers,
    until,
)

EVENTS_STREAM = "{resilience_proxy:events}:stream"
FALLBACK = 'resilience_proxy_storage_fallback_active{backend="redis"}'
LIMIT = 15


async def test_a_worker_killed_mid_request_costs_only_its_own_requests(
    upstream: FaultUpstream, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    doc = make_policy(
        port,
        upstream.url,
        server={"workers": 2},
        storage={"backend": "redis", "redis_url": redis_url},
    )
    doc["upstreams"]["inventory"]["retry"] = {"max_attempts": 1}
    proc, base = start_workers(write_policy(tmp_path / "policy.yaml", doc), port)
    try:
        victim, survivor = children(proc.pid)
        async with pinned_http(base, [victim, survivor], per_worker=3) as held:
            for client in held[victim] + held[survivor]:
                assert (await client.request("GET", "/echo"))[0] == 200
            before = counters(await scrape(base))

            async def slow(client: Pinned) -> int | str:
                try:
                    return (await client.request("GET", "/slow?ms=1500"))[0]
                except (ConnectionError, asyncio.IncompleteReadError) as error:
                    return type(error).__name__

            calls = {pid: [asyncio.create_task(slow(c)) for c in held[pid]] for pid in held}

            async def all_in_flight() -> bool:
                return len(upstream.hits("/slow")) == 6

            assert await until(all_in_flight), "the slow requests did not reach the upstream"
            os.kill(victim, signal.SIGKILL)
            lost = await asyncio.gather(*calls[victim])
            kept = await asyncio.gather(*calls[survivor])
        assert kept == [200, 200, 200]
        assert all(isinstance(outcome, str) for outcome in lost), lost

        async def restarted() -> str | None:
            text = await scrape(base)
            return text if sample(text, WORKERS) == 2 and len(children(proc.pid)) == 2 else None

        text = await until(restarted)
        assert text is not None, "the worker was not restarted"
        assert sample(text, "resilience_proxy_worker_restarts_total") == 1
        after = counters(text)
        went_back = {k: (v, after.get(k)) for k, v in before.items() if after.get(k, -1) < v}
        assert not went_back, went_back
        for _ in range(10):  # new connections, to either worker: nothing else is lost
            assert (await fresh("GET", f"{base}/echo"))[0] == 200
    finally:
        proc.stop()


def owns(node: RedisServer, key: str) -> bool:
    """Whether the cluster node serves the key's slot (else it answers MOVED)."""
    return not node.command("EXISTS", key).startswith(b"-MOVED")


async def test_a_cluster_node_killed_costs_no_5xx_and_every_worker_reports_the_fallback(
    upstream: FaultUpstream, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    """Only worker A takes load while the node is down, so only its store falls back:
    worker B's `/readyz` and `/metrics` report the fallback all the same."""
    port = free_port()
    storage = {
        "backend": "redis",
        "redis_cluster_nodes": redis_cluster.addresses,
        "timeout": "300ms",
        "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": "500ms"},
    }
    doc = make_policy(port, upstream.url, server={"workers": 2}, storage=storage)
    doc["rate_limits"]["roles"] = {"viewer": f"{LIMIT}/min", "anonymous": "100000/min"}
    proc, base = start_workers(write_policy(tmp_path / "policy.yaml", doc), port)
    # The node to kill holds rate-limit keys but not the event stream: the hub's reader
    # stays up, so what B reports about the store can only come from A.
    victim = next(node for node in redis_cluster.nodes if not owns(node, EVENTS_STREAM))
    users = [f"load-{i}" for i in range(60)]
    on_victim = [user for user in users if owns(victim, f"x{{i:{user}}}")][:3]
    statuses: list[int] = []
    try:
        async with pinned_http(base, children(proc.pid)) as held:
            (a,), (b,) = held.values()

            async def hit(client: Pinned, user: str) -> int:
                status = (await client.request("GET", "/echo", headers=bearer(user, "viewer")))[0]
                statuses.append(status)
                return status

            async def reports(client: Pinned) -> tuple[list[str], float]:
                status, ready = await client.request("GET", "/readyz")
                assert status == 200
                _, text = await client.request("GET", "/metrics")
                return ready["degraded"], sample(text, FALLBACK)

            for user in users[:12]:
                await asyncio.gather(hit(a, user), hit(b, user))
            assert await reports(b) == ([], 0)
            victim.kill()
            for _ in range(4):
                for user in on_victim + users[:6]:
                    await hit(a, user)

            async def b_reports_it() -> bool:
                return await reports(b) == (["redis"], 1)

            assert await until(b_reports_it), await reports(b)
            for user in on_victim + users[:6]:  # B under load during the outage too
                await hit(b, user)
            redis_cluster.ensure_running()

            async def recovered() -> bool:
                for client in (a, b):
                    await hit(client, "probe")
                return [await reports(a), await reports(b)] == [([], 0), ([], 0)]

            assert await until(recovered, 30), (await reports(a), await reports(b))
            after = [await hit((a, b)[n % 2], "after-recovery") for n in range(LIMIT + 3)]
        assert after == [200] * LIMIT + [429] * 3  # exact again, across both workers
        assert all(status in (200, 429) for status in statuses), Counter(statuses)
    finally:
        proc.stop()  # (the cluster fixture restarts a node a failed test left down)
