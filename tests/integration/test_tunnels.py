"""WebSocket tunnels to upstreams (CONTRACT 10): a real WebSocket server behind the real
sidecar, real clients in front."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from tests.support.processes import free_port
from tests.support.tokens import bearer

FLOOD_CHUNK = 1 << 20
FLOOD_CHUNKS = 256
"""The flooding upstream tries to send 256 MiB; a paused tunnel must hold it far below."""


class WsUpstream:
    """An aiohttp app on loopback: an echo WebSocket, a refusing one, a flooding one."""

    def __init__(self) -> None:
        self.handshakes: list[dict[str, str]] = []
        self.closed = asyncio.Event()
        self.flood_sent = 0
        self.flood_done = False
        app = web.Application()
        app.router.add_get("/ws/echo", self.echo)
        app.router.add_get("/ws/refuse", self.refuse)
        app.router.add_get("/ws/flood", self.flood)
        app.router.add_get("/api/v1/ws/notifications", self.echo)
        self.runner = web.AppRunner(app)
        self.port = free_port()

    async def start(self) -> WsUpstream:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def echo(self, request: web.Request) -> web.WebSocketResponse:
        self.handshakes.append({k.lower(): v for k, v in request.headers.items()})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        self.closed.set()
        return ws

    async def refuse(self, request: web.Request) -> web.Response:
        self.handshakes.append({k.lower(): v for k, v in request.headers.items()})
        return web.json_response({"error": "no"}, status=403)

    async def flood(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        chunk = b"x" * FLOOD_CHUNK
        try:
            for _ in range(FLOOD_CHUNKS):
                await ws.send_bytes(chunk)
                self.flood_sent += FLOOD_CHUNK
            self.flood_done = True
        except (ConnectionError, RuntimeError):
            pass
        return ws


@pytest.fixture
async def ws_upstream() -> AsyncIterator[WsUpstream]:
    server = await WsUpstream().start()
    yield server
    await server.runner.cleanup()


def ws_url(sidecar, path: str) -> str:
    return f"ws://127.0.0.1:{sidecar.port}{path}"


async def tunnels_gauge(http: aiohttp.ClientSession, sidecar, route: str) -> float:
    async with http.get(f"{sidecar.url}/metrics") as resp:
        text = await resp.text()
    found = re.search(
        rf'^resilience_proxy_tunnels\{{route="{re.escape(route)}"\}} (\S+)$', text, re.M
    )
    assert found is not None, "tunnels gauge not declared"
    return float(found.group(1))


async def poll(check, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_messages_echo_both_ways_and_the_gauge_counts_the_tunnel(
    ws_upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(ws_upstream.url, "--access-log")
    async with aiohttp.ClientSession() as http:
        assert await tunnels_gauge(http, sidecar, "inventory") == 0
        async with http.ws_connect(ws_url(sidecar, "/ws/echo"), headers=bearer("42")) as ws:
            for i in range(20):
                await ws.send_str(f"m{i}")
                assert (await ws.receive(timeout=10)).data == f"echo:m{i}"
            await ws.send_bytes(b"\x00" * 100_000)
            assert (await ws.receive(timeout=10)).data == b"\x00" * 100_000
            assert await tunnels_gauge(http, sidecar, "inventory") == 1
        await asyncio.wait_for(ws_upstream.closed.wait(), 10)

        async def closed() -> bool:
            return await tunnels_gauge(http, sidecar, "inventory") == 0

        await poll(closed)
    seen = ws_upstream.handshakes[0]
    assert seen["x-user-id"] == "42"
    assert seen["upgrade"].lower() == "websocket"
    assert "upgrade" in seen["connection"].lower()

    def tunnel_lines() -> list[dict[str, object]]:
        lines = [json.loads(x) for x in sidecar.proc.output().splitlines() if x.startswith("{")]
        return [x for x in lines if x.get("reason") == "tunnel"]

    deadline = time.monotonic() + 10
    while not tunnel_lines():
        assert time.monotonic() < deadline, sidecar.proc.output()[-2000:]
        await asyncio.sleep(0.05)
    line = tunnel_lines()[0]
    assert line["status"] == 101 and line["route"] == "inventory" and line["path"] == "/ws/echo"
    assert line["user"] == "42"


async def test_a_bad_token_is_refused_before_the_upstream(ws_upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(ws_upstream.url)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(
                ws_url(sidecar, "/ws/echo"), headers={"Authorization": "Bearer junk"}
            )
    assert refused.value.status == 401
    assert ws_upstream.handshakes == []


async def test_rate_limits_apply_to_the_handshake(ws_upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(ws_upstream.url, rate_limits={"roles": {"anonymous": "2/min"}})
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.ws_connect(ws_url(sidecar, "/ws/echo")) as ws:
                await ws.send_str("hi")
                assert (await ws.receive(timeout=10)).data == "echo:hi"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(sidecar, "/ws/echo"))
    assert refused.value.status == 429
    assert len(ws_upstream.handshakes) == 2


async def test_an_upgrade_the_upstream_refuses_is_passed_back(ws_upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(ws_upstream.url)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(sidecar, "/ws/refuse"))
        assert refused.value.status == 403
        # A plain request on the same route still works, and no tunnel is counted.
        assert await tunnels_gauge(http, sidecar, "inventory") == 0
    assert ws_upstream.handshakes[0]["upgrade"].lower() == "websocket"


async def test_the_idle_timeout_closes_a_silent_tunnel(ws_upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(ws_upstream.url, server={"tunnel_idle_timeout": "1s"})
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(ws_url(sidecar, "/ws/echo"), autoping=False, heartbeat=None)
        await ws.send_str("once")
        assert (await ws.receive(timeout=10)).data == "echo:once"
        msg = await ws.receive(timeout=20)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR)
        await ws.close()
        await asyncio.wait_for(ws_upstream.closed.wait(), 10)


async def test_the_hubs_paths_are_forwarded_only_when_the_hub_is_off(
    ws_upstream, sidecar_factory
) -> None:
    path = "/api/v1/ws/notifications"
    hub_on = sidecar_factory(ws_upstream.url)
    hub_off = sidecar_factory(ws_upstream.url, websocket={"enabled": False})
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(hub_on, path)) as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "welcome"
        assert ws_upstream.handshakes == []
        async with http.ws_connect(ws_url(hub_off, path)) as ws:
            await ws.send_str("to the app")
            assert (await ws.receive(timeout=10)).data == "echo:to the app"
    assert len(ws_upstream.handshakes) == 1


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_client_that_stops_reading_pauses_the_upstream(
    ws_upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(ws_upstream.url)
    rss_before = rss_bytes(sidecar.proc.pid)
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port, limit=1 << 16)
    writer.write(
        b"GET /ws/flood HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101")
    # Read nothing more: the flood must stall, held back through the sidecar.
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() - stable_since < 1.5:
        assert time.monotonic() < deadline and not ws_upstream.flood_done
        if ws_upstream.flood_sent != last:
            last, stable_since = ws_upstream.flood_sent, time.monotonic()
        await asyncio.sleep(0.1)
    assert ws_upstream.flood_sent < 64 * FLOOD_CHUNK
    assert rss_bytes(sidecar.proc.pid) - rss_before < 64 * FLOOD_CHUNK
    # Reading again lets the flood go on.
    stalled_at = ws_upstream.flood_sent
    for _ in range(64):
        await reader.readexactly(FLOOD_CHUNK)
    assert ws_upstream.flood_sent > stalled_at
    writer.close()
