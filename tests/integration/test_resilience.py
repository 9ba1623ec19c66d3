"""Retries and circuit breakers through the real sidecar, against a fault-injecting upstream."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from tests.support.fault_upstream import FaultUpstream
from tests.support.tokens import bearer

ADMIN = bearer("1", "admin")
FAST_RETRY = {"max_attempts": 3, "base_delay": "20ms", "max_delay": "200ms"}


def upstream_settings(**settings: object) -> dict[str, object]:
    return {"upstreams": {"inventory": settings}}


async def breaker_stats(http: aiohttp.ClientSession, url: str, name: str = "inventory") -> dict:
    async with http.get(f"{url}/api/v1/resilience/circuit-breakers/{name}", headers=ADMIN) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_get_is_retried_then_succeeds(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **upstream_settings(retry=FAST_RETRY))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/flaky?fail=2", headers={"X-Test-Key": "g1"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["calls"] == 3
        async with http.get(f"{sidecar.url}/metrics") as resp:
            text = await resp.text()
    assert 'resilience_proxy_retries_total{reason="status",upstream="inventory"} 2.0' in text


async def test_post_without_idempotency_key_is_sent_exactly_once(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **upstream_settings(retry=FAST_RETRY))
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sidecar.url}/flaky?fail=1", headers={"X-Test-Key": "p1"}, json={"a": 1}
        ) as resp:
            assert resp.status == 503  # the upstream's own answer, passed through
            assert (await resp.json()) == {"flaky": "failing"}
    assert upstream.calls["p1"] == 1


async def test_post_with_idempotency_key_is_retried(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **upstream_settings(retry=FAST_RETRY))
    headers = {"X-Test-Key": "p2", "Idempotency-Key": "order-77"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/flaky?fail=1", headers=headers, json={"a": 1}) as r:
            assert r.status == 200
    assert upstream.calls["p2"] == 2
    assert all(s.body == b'{"a": 1}' for s in upstream.hits("/flaky"))


async def test_post_is_retried_after_a_refused_connection(sidecar_factory) -> None:
    late = FaultUpstream()
    from tests.support.processes import free_port

    port = free_port()
    sidecar = sidecar_factory(
        f"http://127.0.0.1:{port}",
        **upstream_settings(retry={"max_attempts": 3, "base_delay": "600ms", "max_delay": "1s"}),
    )

    async def start_late() -> None:
        await asyncio.sleep(0.2)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", late._handle)
        late.runner = web.AppRunner(app, access_log=None)
        await late.runner.setup()
        await web.TCPSite(late.runner, "127.0.0.1", port).start()

    starter = asyncio.ensure_future(start_late())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sidecar.url}/echo/order", data=b"once") as resp:
                assert resp.status == 200
        assert len(late.hits("/echo/order")) == 1
    finally:
        await starter
        await late.stop()


async def test_retry_after_beyond_max_delay_returns_the_answer(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **upstream_settings(retry=FAST_RETRY))
    async with aiohttp.ClientSession() as http:
        start = time.monotonic()
        async with http.get(f"{sidecar.url}/status/503?retry_after=30") as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "30"
        assert time.monotonic() - start < 1
    assert len(upstream.hits("/status/503")) == 1


async def test_breaker_opens_fails_fast_probes_and_closes(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(
        upstream.url,
        **upstream_settings(
            retry={"max_attempts": 1},
            circuit_breaker={
                "failure_threshold": 3,
                "recovery_timeout": "1s",
                "success_threshold": 2,
            },
        ),
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(f"{sidecar.url}/status/500") as resp:
                assert resp.status == 500
        stats = await breaker_stats(http, sidecar.url)
        assert stats["state"] == "open" and stats["consecutive_failures"] == 3
        seen_before = len(upstream.seen)
        for _ in range(5):
            start = time.monotonic()
            async with http.get(f"{sidecar.url}/echo") as resp:
                assert resp.status == 503
                body = await resp.json()
                assert body["error"] == "circuit_open"
                assert int(resp.headers["Retry-After"]) >= 1
                assert resp.headers["X-RateLimit-Limit"] == "100000"  # it passed its limits
            assert time.monotonic() - start < 0.2
        assert len(upstream.seen) == seen_before  # nothing reached the upstream
        await asyncio.sleep(1.1)
        assert (await breaker_stats(http, sidecar.url))["state"] == "half_open"
        for _ in range(2):
            async with http.get(f"{sidecar.url}/echo") as resp:
                assert resp.status == 200
        stats = await breaker_stats(http, sidecar.url)
        assert stats["state"] == "closed"
        assert stats["total_rejections"] == 5
        assert stats["total_calls"] == stats["total_successes"] + stats["total_failures"] == 5


async def test_forced_states_and_reset(upstream, sidecar) -> None:
    base = f"{sidecar.url}/api/v1/resilience/circuit-breakers"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/inventory/force-open", headers=ADMIN) as resp:
            assert resp.status == 200
            assert (await resp.json())["state"] == "forced_open"
        async with http.get(f"{sidecar.url}/echo") as resp:
            assert resp.status == 503
        async with http.post(f"{base}/inventory/force-close", headers=ADMIN) as resp:
            assert (await resp.json())["state"] == "forced_closed"
        async with http.post(f"{base}/inventory/reset", headers=ADMIN) as resp:
            stats = await resp.json()
            assert stats["state"] == "closed" and stats["total_rejections"] == 1
        async with http.post(f"{base}/nope/reset", headers=ADMIN) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "unknown_breaker"
        async with http.post(f"{base}/inventory/explode", headers=ADMIN) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "unknown_action"
        async with http.get(base, headers=ADMIN) as resp:
            names = set((await resp.json())["circuit_breakers"])
        assert names == {"inventory", "email_service", "external_api"}


async def test_breaker_state_survives_a_reload(upstream, sidecar) -> None:
    base = f"{sidecar.url}/api/v1/resilience/circuit-breakers"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/inventory/force-open", headers=ADMIN) as resp:
            assert resp.status == 200
        doc = yaml.safe_load(Path(sidecar.config).read_text())
        doc["upstreams"]["inventory"]["timeout"] = "7s"
        del doc["upstreams"]["external_api"]
        doc["routes"] = [r for r in doc["routes"] if r["upstream"] != "external_api"]
        Path(sidecar.config).write_text(yaml.safe_dump(doc))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            async with http.get(base, headers=ADMIN) as resp:
                names = set((await resp.json())["circuit_breakers"])
            if "external_api" not in names:
                break
            await asyncio.sleep(0.1)
        assert names == {"inventory", "email_service"}
        assert (await breaker_stats(http, sidecar.url))["state"] == "forced_open"


async def test_shadow_breaker_reports_but_never_rejects(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(
        upstream.url,
        **upstream_settings(
            retry={"max_attempts": 1},
            circuit_breaker={"failure_threshold": 2, "mode": "shadow"},
        ),
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(f"{sidecar.url}/status/500"):
                pass
        for _ in range(3):
            async with http.get(f"{sidecar.url}/echo") as resp:
                assert resp.status == 200
        stats = await breaker_stats(http, sidecar.url)
    assert stats["state"] == "open"
    assert stats["total_rejections"] == 0 and stats["total_shadow_rejections"] == 3


async def test_egress_route_strips_its_prefix(upstream, sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/egress/external/echo/x?y=1") as resp:
            assert resp.status == 200
            assert (await resp.json())["target"] == "/echo/x?y=1"
