"""Redis killed and restarted under load (storage backend redis, CONTRACT 4 and 12): no
request fails (decisions fall back to memory), and the sidecar goes back to Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from tests.support.chaos_load import Load, duplicated_sales, errors_by_kind
from tests.support.chaos_report import Row, metric, wait_until
from tests.support.inventory_app import InventoryApp
from tests.support.policy_files import resilient_upstream
from tests.support.processes import Sidecar
from tests.support.redis_server import RedisServer

FALLBACK = 'resilience_proxy_storage_fallback_active{backend="redis"}'
BASELINE_S = 1.0
DOWN_S = 1.5
BACK_BOUND_S = 10.0
"""Back on Redis: the store's breaker (recovery_timeout 1 s) lets a call through, it works."""


async def test_redis_killed_and_restarted_costs_no_request(
    inventory: InventoryApp,
    sidecar_factory: Callable[..., Sidecar],
    redis_server: RedisServer,
    redis_url: str,
    chaos_table: list[Row],
) -> None:
    storage = {
        "backend": "redis",
        "redis_url": redis_url,
        "timeout": "100ms",
        "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": "1s"},
    }
    sidecar = sidecar_factory(
        inventory.url, storage=storage, upstreams={"inventory": resilient_upstream(timeout="5s")}
    )

    async def on_fallback() -> bool:
        """the memory fallback"""
        return await metric(sidecar.url, FALLBACK) == 1.0

    async def back_on_redis() -> bool:
        """back on Redis"""
        async with aiohttp.ClientSession() as http, http.get(f"{sidecar.url}/readyz") as resp:
            degraded = (await resp.json())["degraded"]
        return degraded == [] and await metric(sidecar.url, FALLBACK) == 0.0

    load = Load(sidecar.url)
    load.start(deadline_s=60)
    await asyncio.sleep(BASELINE_S)
    assert await back_on_redis()
    redis_server.kill()
    await wait_until(on_fallback)
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(redis_server.start)
    restarted = time.monotonic()
    back_after = await wait_until(back_on_redis, BACK_BOUND_S) - restarted
    await load.settle(restarted)
    outcomes = await load.stop()
    errors = errors_by_kind(outcomes)
    duplicates = duplicated_sales(inventory.db, load)
    chaos_table.append(
        Row("Redis SIGKILL, restarted", len(outcomes), errors, duplicates, back_after,
            "normal: back on Redis (/readyz, storage_fallback_active) after restart")
    )  # fmt: skip
    assert errors == {}
    assert duplicates == 0
