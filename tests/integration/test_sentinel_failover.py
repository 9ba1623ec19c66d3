"""A sidecar process on Redis through Sentinel (real master, replica and sentinel): the
master killed and the replica promoted costs no 5xx; the sidecar falls back to memory, then
goes back to Redis on the new master, where limits are exact again."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import free_port, start_sidecar
from tests.support.redis_cluster import RedisSentinelSet
from tests.support.tokens import bearer

FALLBACK = re.escape('resilience_proxy_storage_fallback_active{backend="redis"}')


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[RedisSentinelSet]:
    redis = RedisSentinelSet(tmp_path / "redis")
    redis.start()
    yield redis
    redis.stop()


async def fallback_active(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(f"{url}/metrics") as resp:
        match = re.search(FALLBACK + r" (\S+)", await resp.text())
    assert match
    return float(match.group(1)) == 1.0


async def test_a_failover_costs_no_5xx(upstream, sentinel_set: RedisSentinelSet, tmp_path):
    port = free_port()
    doc = make_policy(port, upstream.url)
    doc["storage"] = {
        "backend": "redis",
        "redis_sentinels": sentinel_set.sentinels,
        "redis_sentinel_master": sentinel_set.master_name,
        "timeout": "200ms",
        "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": "500ms"},
    }
    doc["rate_limits"]["roles"] = {"viewer": "5/min", "anonymous": "100000/min"}
    proc = start_sidecar(write_policy(tmp_path / "policy.yaml", doc), port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def hit(user: str) -> int:
                async with http.get(f"{url}/echo", headers=bearer(user, "viewer")) as resp:
                    await resp.read()
                    return resp.status

            assert [await hit("before") for _ in range(6)] == [200] * 5 + [429]
            sentinel_set.master.kill()
            statuses: list[int] = []
            promoted = back = fell_back = False
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not back:  # bounded
                statuses.append(await hit(f"during-{len(statuses) // 4}"))
                promoted = promoted or (
                    sentinel_set.named_master_port() == sentinel_set.replica.port
                )
                active = await fallback_active(http, url)
                fell_back = fell_back or active
                back = promoted and fell_back and not active
            assert promoted and fell_back and back
            assert statuses and all(status < 500 for status in statuses), statuses
            assert [await hit("after") for _ in range(6)] == [200] * 5 + [429]
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:  # the event broker reconnects on its backoff
                async with http.get(f"{url}/readyz") as resp:
                    assert resp.status == 200
                    if (await resp.json())["degraded"] == []:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("/readyz still degraded after the failover")
    finally:
        proc.stop()
