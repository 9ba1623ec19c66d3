"""Sinks through the real sidecar: formats on the wire, 4xx not retried, 5xx retried behind
the sink upstream's breaker, and neither delaying the WebSocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import websockets

from tests.support.fault_upstream import FaultUpstream
from tests.support.processes import EVENTS_TOKEN, Sidecar
from tests.support.tokens import bearer

SERVICE = {"Authorization": f"Bearer {EVENTS_TOKEN}"}


def alert(n: int, title: str = "Stock Bajo") -> dict[str, Any]:
    return {
        "type": "alert",
        "alert_type": "stock_bajo",
        "severity": "critical",
        "title": f"{title} {n}",
        "message": "Stock actual: 5 <b>unidades</b> & más",
        "data": {"producto_id": n},
    }


def sink_upstream(url: str, failure_threshold: int = 5) -> dict[str, Any]:
    return {
        "url": url,
        "retry": {"max_attempts": 3, "base_delay": "10ms", "max_delay": "20ms"},
        "circuit_breaker": {"failure_threshold": failure_threshold, "recovery_timeout": "1h"},
    }


async def poll(condition: Callable[[], bool], deadline_s: float = 5.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def metrics_with(http: aiohttp.ClientSession, base: str, *lines: str) -> None:
    """Return once the metrics hold every one of `lines` (polled, with a deadline)."""
    end = time.monotonic() + 5
    while True:
        async with http.get(f"{base}/metrics") as r:
            text = await r.text()
        if all(line in text for line in lines):
            return
        assert time.monotonic() < end, text
        await asyncio.sleep(0.05)


async def test_formats_on_the_wire_through_the_sidecar(
    sidecar_factory: Callable[..., Sidecar], upstream: FaultUpstream
) -> None:
    sinks = [
        {"upstream": "hooks", "path": "/status/200?f=slack", "format": "slack"},
        {"upstream": "hooks", "path": "/status/202?f=pd", "format": "pagerduty",
         "routing_key_env": "TEST_PD_KEY"},
        {"upstream": "hooks", "path": "/status/200?f=am", "format": "alertmanager"},
    ]  # fmt: skip
    sidecar = sidecar_factory(
        upstream.url,
        env={"TEST_PD_KEY": "pd-routing-key-xyz"},
        upstreams={"hooks": sink_upstream(upstream.url)},
        alerts={"sinks": sinks},
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/api/v1/events", json=alert(1), headers=SERVICE) as r:
            assert r.status == 202
        await poll(lambda: len(upstream.hits("/status/")) >= 3)
        await metrics_with(
            http, sidecar.url, 'sink_deliveries_total{outcome="success",sink="hooks"} 3.0'
        )
    bodies = {s.target.split("f=")[1]: json.loads(s.body) for s in upstream.hits("/status/")}
    assert "&lt;b&gt;unidades&lt;/b&gt; &amp; más" in bodies["slack"]["text"]
    assert bodies["pd"]["routing_key"] == "pd-routing-key-xyz"
    assert bodies["pd"]["payload"]["severity"] == "critical"
    assert bodies["am"][0]["labels"]["alertname"] == "stock_bajo"
    assert "pd-routing-key-xyz" not in sidecar.proc.output()


async def test_4xx_is_sent_once_5xx_is_retried_until_the_breaker_opens(
    sidecar_factory: Callable[..., Sidecar], upstream: FaultUpstream
) -> None:
    sinks = [
        {"upstream": "rejecting", "path": "/status/400", "format": "slack"},
        {"upstream": "failing", "path": "/status/503", "format": "alertmanager"},
    ]
    sidecar = sidecar_factory(
        upstream.url,
        upstreams={
            "rejecting": sink_upstream(upstream.url, failure_threshold=2),
            "failing": sink_upstream(upstream.url, failure_threshold=4),
        },
        alerts={"sinks": sinks},
    )
    ws_url = sidecar.url.replace("http", "ws") + "/api/v1/ws/alerts"
    async with aiohttp.ClientSession() as http, websockets.connect(ws_url) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        for n in range(3):
            url = f"{sidecar.url}/api/v1/events"
            async with http.post(url, json=alert(n), headers=SERVICE) as r:
                assert r.status == 202
            # The WebSocket gets each alert while the sinks fail behind it.
            async with asyncio.timeout(2):
                got = json.loads(await ws.recv())
            assert got["title"] == f"Stock Bajo {n}"
        # 400: one POST per alert, never retried, and the breaker never counts it.
        await poll(lambda: len(upstream.hits("/status/400")) == 3)
        # 503: alert 0 takes 3 attempts, alert 1 the 4th (the breaker opens: its 503 is
        # its outcome, as for any exchange), then nothing: alert 2 is rejected.
        await poll(lambda: len(upstream.hits("/status/503")) == 4)
        await metrics_with(
            http,
            sidecar.url,
            'sink_deliveries_total{outcome="failure",sink="failing"} 2.0',
            'sink_deliveries_total{outcome="rejected",sink="failing"} 1.0',
            'sink_deliveries_total{outcome="failure",sink="rejecting"} 3.0',
        )
        async with http.get(
            f"{sidecar.url}/api/v1/resilience/circuit-breakers", headers=bearer("1", "admin")
        ) as r:
            breakers = (await r.json())["circuit_breakers"]
    assert breakers["rejecting"]["state"] == "closed"
    assert breakers["failing"]["state"] == "open"
    assert len(upstream.hits("/status/400")) == 3
    assert len(upstream.hits("/status/503")) == 4
