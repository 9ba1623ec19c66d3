"""Sidecar processes sharing a real 3-master Redis Cluster: limits stay exact (no
over-admission) for identities spread over every master, and `/readyz` is not degraded."""

from __future__ import annotations

import asyncio
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
