"""`alerts.operational`: the sidecar's own alerts on the alerts channel, from real processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
import yaml

from tests.support.fault_upstream import FaultUpstream
from tests.support.processes import EVENTS_TOKEN, Sidecar
from tests.support.redis_server import RedisServer
from tests.support.tokens import bearer

ADMIN = bearer("1", "admin")


async def next_alert(ws: websockets.ClientConnection, deadline_s: float = 5.0) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), end - time.monotonic()))
        if message.get("type") == "alert":
            return message


async def breaker_action(http: aiohttp.ClientSession, base: str, name: str, action: str) -> None:
    url = f"{base}/api/v1/resilience/circuit-breakers/{name}/{action}"
    async with http.post(url, headers=ADMIN) as resp:
        assert resp.status == 200


async def policy_hash(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/api/v1/resilience/policy", headers=ADMIN) as resp:
        return str((await resp.json())["hash"])


async def test_breaker_and_reload_alerts_only_while_turned_on(
    sidecar_factory: Callable[..., Sidecar], upstream: FaultUpstream
) -> None:
    sidecar = sidecar_factory(upstream.url)
    ws_url = sidecar.url.replace("http", "ws") + "/api/v1/ws/alerts"
    async with aiohttp.ClientSession() as http, websockets.connect(ws_url) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        # Off (the default): a forced open says nothing; the next alert is the marker.
        await breaker_action(http, sidecar.url, "inventory", "force-open")
        marker = {"type": "alert", "alert_type": "marker", "severity": "info",
                  "title": "marker", "message": "m"}  # fmt: skip
        service = {"Authorization": f"Bearer {EVENTS_TOKEN}"}
        async with http.post(f"{sidecar.url}/api/v1/events", json=marker, headers=service) as r:
            assert r.status == 202
        assert (await next_alert(ws))["alert_type"] == "marker"
        await breaker_action(http, sidecar.url, "inventory", "reset")

        # On, by a reload.
        before = await policy_hash(http, sidecar.url)
        doc = yaml.safe_load(sidecar.config.read_text())
        doc["alerts"]["operational"] = True
        sidecar.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        end = time.monotonic() + 10
        while await policy_hash(http, sidecar.url) == before:
            assert time.monotonic() < end, "the reload never happened"
            await asyncio.sleep(0.1)

        await breaker_action(http, sidecar.url, "inventory", "force-open")
        opened = await next_alert(ws)
        await breaker_action(http, sidecar.url, "inventory", "reset")
        closed = await next_alert(ws)

        sidecar.config.write_text(sidecar.config.read_text() + "\nbogus_key: 1\n")
        failed = await next_alert(ws, deadline_s=10)
    assert opened["alert_type"] == "circuit_breaker_open"
    assert opened["severity"] == "critical"
    assert opened["data"]["breaker"] == "inventory"
    assert opened["data"]["reason"] == "force_open"
    assert isinstance(opened["id"], int) and opened["timestamp"]
    assert closed["alert_type"] == "circuit_breaker_closed"
    assert closed["severity"] == "info"
    assert closed["data"]["breaker"] == "inventory"
    assert failed["alert_type"] == "policy_reload_failed"
    assert failed["severity"] == "warning"
    assert failed["message"].startswith(f"{sidecar.config}:")
    assert "bogus_key" in failed["message"]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def test_storage_fallback_and_recovery_alerts(
    sidecar_factory: Callable[..., Sidecar], upstream: FaultUpstream, redis: RedisServer
) -> None:
    storage = {
        "backend": "redis",
        "redis_url": redis.url,
        "timeout": "200ms",
        "circuit_breaker": {"failure_threshold": 1, "recovery_timeout": "1s"},
    }
    sidecar = sidecar_factory(upstream.url, storage=storage, alerts={"operational": True})
    ws_url = sidecar.url.replace("http", "ws") + "/api/v1/ws/alerts"
    seen: list[dict[str, Any]] = []

    async def until(alert_type: str, http: aiohttp.ClientSession) -> None:
        end = time.monotonic() + 20
        while alert_type not in [a["alert_type"] for a in seen]:
            assert time.monotonic() < end, f"no {alert_type}: {seen}"
            async with http.get(f"{sidecar.url}/echo") as resp:
                assert resp.status == 200  # never a 5xx because Redis is down
            try:
                seen.append(await next_alert(ws, deadline_s=0.2))
            except TimeoutError:
                pass

    async with aiohttp.ClientSession() as http, websockets.connect(ws_url) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        redis.stop()
        await until("storage_fallback", http)
        redis.start()
        await until("storage_recovered", http)
    kinds = [a["alert_type"] for a in seen]
    assert kinds.index("storage_fallback") < kinds.index("storage_recovered")
    fallback = next(a for a in seen if a["alert_type"] == "storage_fallback")
    assert fallback["severity"] == "warning"
    assert fallback["data"]["on_failure"] == "memory"
    redis_open = [a for a in seen if a["alert_type"] == "circuit_breaker_open"]
    assert redis_open and redis_open[0]["data"]["breaker"] == "redis"
    recovered = next(a for a in seen if a["alert_type"] == "storage_recovered")
    assert recovered["severity"] == "info"
