"""Alert sinks: severity filter, bounded queues, and never in the WebSocket's way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from websockets.asyncio.client import connect

from policies.model import AlertsPolicy, SinkPolicy
from proxy.hub.sinks import AiohttpSinkSender, SinkDispatcher
from tests.hub.hubkit import HubFactory, RecordingObserver, recv_json, recv_type, wait_for


def alert(severity: str) -> dict[str, Any]:
    return {
        "type": "alert",
        "alert_type": "stock_bajo",
        "severity": severity,
        "title": "t",
        "message": "m",
    }


class RecordingSend:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, sink: SinkPolicy, body: bytes) -> str:
        self.sent.append((sink.upstream, sink.path, orjson.loads(body)))
        return "success"


async def test_sinks_get_alerts_at_or_above_their_min_severity(make_hub: HubFactory) -> None:
    send = RecordingSend()
    sinks = (
        SinkPolicy(upstream="email_service", path="/send", min_severity="warning"),
        SinkPolicy(upstream="pager", path="/page", min_severity="critical"),
    )
    running = await make_hub(alerts=AlertsPolicy(sinks=sinks), hub_kwargs={"sink_send": send})
    for severity in ("info", "warning", "critical"):
        await running.publish(alert(severity))
    await running.publish({"type": "inventory_update", "update_type": "v", "producto_id": 1})
    await wait_for(lambda: len(send.sent) == 3)
    by_sink = sorted((s, p, body["severity"], body["id"]) for s, p, body in send.sent)
    assert by_sink == [
        ("email_service", "/send", "critical", 3),
        ("email_service", "/send", "warning", 2),
        ("pager", "/page", "critical", 3),
    ]
    assert running.observer.counts["sink:success", "email_service"] == 2


async def test_a_dead_sink_neither_delays_websockets_nor_grows(make_hub: HubFactory) -> None:
    stuck = asyncio.Event()
    calls = 0

    async def hanging_send(sink: SinkPolicy, body: bytes) -> str:
        nonlocal calls
        calls += 1
        await stuck.wait()
        return "timeout"

    sink = SinkPolicy(upstream="email_service", path="/send", min_severity="info", queue=2)
    running = await make_hub(
        alerts=AlertsPolicy(sinks=(sink,)), hub_kwargs={"sink_send": hanging_send}
    )
    async with connect(running.url("alerts")) as ws:
        await recv_type(ws, "welcome")
        async with asyncio.timeout(2):
            ids = [await running.publish(alert("critical"))]
            await wait_for(lambda: calls == 1)
            ids += [await running.publish(alert("critical")) for _ in range(5)]
            assert [(await recv_json(ws))["id"] for _ in ids] == ids
    # One alert in the hanging call, two queued, the other three dropped and counted.
    assert calls == 1
    assert running.observer.counts["sink_dropped", "email_service"] == 3


async def test_reload_keeps_surviving_sinks_and_stops_removed_ones() -> None:
    send = RecordingSend()
    observer = RecordingObserver()
    keep = SinkPolicy(upstream="email_service", path="/send", min_severity="warning")
    drop = SinkPolicy(upstream="pager", path="/page", min_severity="info")
    dispatcher = SinkDispatcher((keep, drop), send, observer)
    dispatcher.start()
    try:
        dispatcher.reconfigure((SinkPolicy(upstream="email_service", path="/send", queue=5),))
        dispatcher.offer("info", b'{"n":1}')
        dispatcher.offer("critical", b'{"n":2}')
        await wait_for(lambda: len(send.sent) == 1)
        assert send.sent == [("email_service", "/send", {"n": 2})]
    finally:
        await dispatcher.close()


@pytest.fixture
async def sink_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []
    release = asyncio.Event()

    async def accept(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({"ok": True}, status=202)

    async def fail(request: web.Request) -> web.Response:
        return web.json_response({"error": "down"}, status=503)

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/send", accept)
    app.router.add_post("/fail", fail)
    app.router.add_post("/hang", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/", received
    release.set()
    await runner.cleanup()


async def test_default_sender_posts_json_and_names_outcomes(
    sink_server: tuple[str, list[bytes]],
) -> None:
    url, received = sink_server
    sender = AiohttpSinkSender({"email": url, "nowhere": "http://127.0.0.1:1"}, timeout=0.3)
    try:
        assert await sender(SinkPolicy(upstream="email", path="/send"), b'{"id":1}') == "success"
        assert received == [b'{"id":1}']
        assert await sender(SinkPolicy(upstream="email", path="/fail"), b"{}") == "failure"
        assert await sender(SinkPolicy(upstream="email", path="/hang"), b"{}") == "timeout"
        nowhere = SinkPolicy(upstream="nowhere", path="/send")
        assert await sender(nowhere, b"{}") == "connect_failure"
        assert await sender(SinkPolicy(upstream="unknown", path="/x"), b"{}") == "failure"
    finally:
        await sender.close()
