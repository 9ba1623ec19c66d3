"""Two sidecar processes sharing one real redis-server: exact shared limits, outages."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import Process, free_port, start_sidecar
from tests.support.redis_server import RedisServer
from tests.support.tokens import bearer


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def start_replica(
    tmp_path: Path, upstream_url: str, redis_url: str, **storage: object
) -> tuple[Process, str]:
    port = free_port()
    doc = make_policy(port, upstream_url)
    doc["storage"] = {
        "backend": "redis",
        "redis_url": redis_url,
        "expected_replicas": 2,
        "timeout": "100ms",
        "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": "1s"},
        **storage,
    }
    doc["rate_limits"]["roles"] = {"viewer": "40/min", "anonymous": "100000/min"}
    proc = start_sidecar(write_policy(tmp_path / f"policy-{port}.yaml", doc), port)
    return proc, f"http://127.0.0.1:{port}"


async def metric(http: aiohttp.ClientSession, url: str, pattern: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    match = re.search(pattern + r" (\S+)", text)
    assert match, pattern
    return float(match.group(1))


async def test_two_replicas_admit_exactly_the_limit_in_total(upstream, redis, tmp_path) -> None:
    a, url_a = start_replica(tmp_path, upstream.url, redis.url)
    b, url_b = start_replica(tmp_path, upstream.url, redis.url)
    try:
        async with aiohttp.ClientSession() as http:

            async def hit(url: str) -> int:
                async with http.get(f"{url}/echo", headers=bearer("77", "viewer")) as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.gather(*(hit(u) for u in [url_a, url_b] * 50))
        assert statuses.count(200) == 40
        assert statuses.count(429) == 60
    finally:
        a.stop()
        b.stop()


async def test_redis_outage_falls_back_without_5xx_and_recovers(upstream, redis, tmp_path) -> None:
    proc, url = start_replica(tmp_path, upstream.url, redis.url)
    try:
        async with aiohttp.ClientSession() as http:

            async def hit() -> int:
                async with http.get(f"{url}/echo", headers=bearer("88", "viewer")) as resp:
                    await resp.read()
                    return resp.status

            assert await hit() == 200
            redis.stop()
            statuses = [await hit() for _ in range(30)]
            assert all(s < 500 for s in statuses), statuses
            # In fallback each replica admits limit / expected_replicas = 20.
            assert statuses.count(200) == 20 and statuses.count(429) == 10
            fallback = 'resilience_proxy_storage_fallback_active{backend="redis"}'
            assert await metric(http, url, re.escape(fallback)) == 1.0
            async with http.get(f"{url}/readyz") as resp:
                assert resp.status == 200
                assert (await resp.json())["degraded"] == ["redis"]
            redis.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await hit()
                if await metric(http, url, re.escape(fallback)) == 0.0:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("never returned to redis")
            async with http.get(f"{url}/readyz") as resp:
                assert (await resp.json())["degraded"] == []
    finally:
        proc.stop()
