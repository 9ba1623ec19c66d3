"""Sidecar processes sharing a real 3-master Redis Cluster: limits stay exact (no
over-admission) for identities spread over every master, and `/readyz` is not degraded; a
node killed under load costs no 5xx (fallback, degraded) and limits are exact after."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp

from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import Process, free_port, start_sidecar
from tests.support.redis_cluster import RedisCluster
from tests.support.tokens import bearer

LIMIT = 15
USERS = 9
REQUESTS_PER_USER = 25


def start_replica(tmp_path: Path, upstream_url: str, nodes: list[str]) -> tuple[Process, str]:
    port = free_port()
    doc = make_policy(port, upstream_url)
    doc["storage"] = {
        "backend": "redis",
        "redis_cluster_nodes": nodes,
        "expected_replicas": 2,
        "timeout": "2s",
    }
    doc["rate_limits"]["roles"] = {"viewer": f"{LIMIT}/min", "anonymous": "100000/min"}
    proc = start_sidecar(write_policy(tmp_path / f"policy-{port}.yaml", doc), port)
    return proc, f"http://127.0.0.1:{port}"


async def test_replicas_on_a_cluster_admit_exactly_the_limit(
    upstream, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    replicas = [start_replica(tmp_path, upstream.url, redis_cluster.addresses) for _ in range(2)]
    try:
        async with aiohttp.ClientSession() as http:

            async def hit(url: str, user: int) -> tuple[int, int]:
                headers = bearer(f"cluster-user-{user}", "viewer")
                async with http.get(f"{url}/echo", headers=headers) as resp:
                    await resp.read()
                    return user, resp.status

            calls = [hit(replicas[i % 2][1], i % USERS) for i in range(USERS * REQUESTS_PER_USER)]
            results = await asyncio.gather(*calls)
            async with http.get(f"{replicas[0][1]}/readyz") as resp:
                assert (await resp.json())["degraded"] == []
        admitted = Counter(user for user, status in results if status == 200)
        assert all(status in (200, 429) for _, status in results)
        assert admitted == {user: LIMIT for user in range(USERS)}
        keys = sum(int(n.command("DBSIZE")[1:].split(b"\r\n")[0]) for n in redis_cluster.nodes)
        holders = [n for n in redis_cluster.nodes if n.command("DBSIZE") != b":0\r\n"]
        assert keys > 0 and len(holders) == 3  # the identities spread over every master
    finally:
        for proc, _ in replicas:
            proc.stop()


async def test_a_node_killed_under_load_costs_no_5xx_and_exactness_returns(
    upstream, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    port = free_port()
    doc = make_policy(port, upstream.url)
    doc["storage"] = {
        "backend": "redis",
        "redis_cluster_nodes": redis_cluster.addresses,
        "timeout": "300ms",
        "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": "500ms"},
    }
    doc["rate_limits"]["roles"] = {"viewer": f"{LIMIT}/min", "anonymous": "100000/min"}
    proc = start_sidecar(write_policy(tmp_path / "policy.yaml", doc), port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def hit(user: str) -> int:
                async with http.get(f"{url}/echo", headers=bearer(user, "viewer")) as resp:
                    await resp.read()
                    return resp.status

            async def degraded() -> list[str]:
                async with http.get(f"{url}/readyz") as resp:
                    assert resp.status == 200
                    return list((await resp.json())["degraded"])

            statuses = list(await asyncio.gather(*(hit(f"load-{i % 12}") for i in range(48))))
            redis_cluster.nodes[2].kill()
            for _ in range(4):  # bounded: batches spanning every master, one of them gone
                batch = [hit(f"load-{i % 12}") for i in range(24)]
                statuses += await asyncio.gather(*batch)
            assert await degraded() == ["redis"]
            redis_cluster.ensure_running()
            deadline = time.monotonic() + 30
            while await degraded() and time.monotonic() < deadline:  # bounded poll
                statuses.append(await hit("probe"))
                await asyncio.sleep(0.1)
            assert await degraded() == []
            assert all(status in (200, 429) for status in statuses), Counter(statuses)
            after = [await hit("after-recovery") for _ in range(LIMIT + 3)]
            assert after == [200] * LIMIT + [429] * 3
    finally:
        proc.stop()
