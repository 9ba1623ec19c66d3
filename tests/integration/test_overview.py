"""`GET /api/v1/resilience/overview` (CONTRACT 13) from the real sidecar."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.support.fault_upstream import FaultUpstream
from tests.support.processes import Sidecar
from tests.support.tokens import bearer

ADMIN = bearer("1", "admin")


async def overview(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/v1/resilience/overview", headers=ADMIN) as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def test_overview_shape_figures_and_last_reload(
    sidecar_factory: Callable[..., Sidecar], upstream: FaultUpstream
) -> None:
    sidecar = sidecar_factory(upstream.url)
    url = f"{sidecar.url}/api/v1/resilience/overview"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(url, headers=bearer("7", "viewer")) as resp:
            assert resp.status == 403
        async with http.post(url, headers=ADMIN) as resp:
            assert resp.status == 405
        first = await overview(http, sidecar.url)
        for _ in range(8):
            async with http.get(f"{sidecar.url}/status/200") as resp:
                assert resp.status == 200
        for code in (404, 503):
            async with http.get(f"{sidecar.url}/status/{code}") as resp:
                assert resp.status == code
        end = time.monotonic() + 5
        while (now := await overview(http, sidecar.url))["routes"]["inventory"]["requests"] < 10:
            assert time.monotonic() < end, now["routes"]
            await asyncio.sleep(0.05)

        sidecar.config.write_text(sidecar.config.read_text() + "\nbogus_key: 1\n")
        end = time.monotonic() + 10
        while (after := await overview(http, sidecar.url))["policy"]["last_reload"] is None:
            assert time.monotonic() < end, "the failed reload was never reported"
            await asyncio.sleep(0.1)

    assert set(first) >= {"breakers", "routes", "in_flight", "websocket_connections", "policy"}
    assert set(first["breakers"]) == {"inventory", "email_service", "external_api"}
    assert first["breakers"]["inventory"]["state"] == "closed"
    assert {"total_calls", "failure_rate", "total_rejections", "retry_after_s"} <= set(
        first["breakers"]["inventory"]
    )
    assert {"external", "inventory"} <= set(first["routes"])
    assert first["policy"]["last_reload"] is None
    assert len(first["policy"]["hash"]) == 64 and first["policy"]["loaded_at"].endswith("Z")
    assert isinstance(first["in_flight"], int) and isinstance(first["websocket_connections"], int)

    inventory = now["routes"]["inventory"]
    assert inventory["requests"] == 10
    assert {"rps", "share_4xx", "share_5xx", "p50_ms", "p99_ms"} <= set(inventory)
    assert inventory["rps"] > 0
    assert inventory["share_4xx"] == 0.1
    assert inventory["share_5xx"] == 0.1
    assert 0 < inventory["p50_ms"] <= inventory["p99_ms"]
    assert now["routes"]["external"]["rps"] == 0.0

    reload = after["policy"]["last_reload"]
    assert reload["result"] == "failure"
    assert reload["at"].endswith("Z")
    assert any("bogus_key" in line for line in reload["errors"])
    assert all(line.startswith(f"{sidecar.config}:") for line in reload["errors"])
    assert after["policy"]["hash"] == first["policy"]["hash"]


async def test_the_console_and_its_assets_are_served_with_a_strict_policy(
    sidecar_factory: Callable[..., Sidecar], upstream: FaultUpstream
) -> None:
    sidecar = sidecar_factory(upstream.url)
    expected = {
        "/console": "text/html",
        "/console/console.js": "text/javascript",
        "/console/console.css": "text/css",
    }
    async with aiohttp.ClientSession() as http:
        for path, content_type in expected.items():
            async with http.get(sidecar.url + path) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith(content_type)
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                body = await resp.text()
            assert body
        async with http.get(sidecar.url + "/console") as resp:
            page = await resp.text()
        async with http.post(sidecar.url + "/console") as resp:
            assert resp.status == 405
    assert 'src="console/console.js"' in page and "http" not in page.split("<body>")[0]
    assert not upstream.hits("/console")  # the sidecar's own, never forwarded
