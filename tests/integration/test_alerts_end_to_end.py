"""Alerts end to end: the inventory app, the sidecar's hub, a WebSocket client, a sink."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import websockets
import yaml

from tests.support.fault_upstream import FaultUpstream
from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import (
    EVENTS_TOKEN,
    Process,
    free_port,
    start_sidecar,
    start_upstream_app,
)
from tests.support.tokens import bearer, token


@dataclass
class Stack:
    url: str
    ws: str
    sidecar: Process
    sink: FaultUpstream
    config: Path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    sink = await FaultUpstream().start()
    port = free_port()
    app, app_port = start_upstream_app(tmp_path / "inv.db", f"http://127.0.0.1:{port}")
    doc = make_policy(port, f"http://127.0.0.1:{app_port}")
    doc["upstreams"]["email_service"]["url"] = sink.url
    doc["alerts"]["sinks"] = [{"upstream": "email_service", "path": "/send"}]
    config = write_policy(tmp_path / "policy.yaml", doc)
    sidecar = start_sidecar(config, port)
    try:
        await events_flowing(app)
        yield Stack(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", sidecar, sink, config)
    finally:
        sidecar.stop()
        app.stop()
        await sink.stop()


async def events_flowing(app: Process, deadline_s: float = 15.0) -> None:
    """The app started first: wait until its outbox (the startup alerts) reached the sidecar."""
    end = time.monotonic() + deadline_s
    while "not reachable" in (output := app.output()) and "reachable again" not in output:
        assert time.monotonic() < end, output
        await asyncio.sleep(0.05)


async def next_of_type(ws: websockets.ClientConnection, kind: str, deadline_s: float) -> dict:
    end = time.monotonic() + deadline_s
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), end - time.monotonic()))
        if message.get("type") == kind or message.get("alert_type") == kind:
            return message


async def test_a_sale_crossing_the_threshold_alerts_clients_and_the_sink(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        admin = bearer("1", "admin")
        async with http.get(f"{stack.url}/api/v1/productos?limit=500", headers=admin) as resp:
            products = (await resp.json())["items"]
        product = next(p for p in products if p["stock"] - 1 >= p["umbral_min"] > 0)
        quantity = product["stock"] - product["umbral_min"] + 1
        async with websockets.connect(f"{stack.ws}/api/v1/ws/alerts") as ws:
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == "welcome" and welcome["channel"] == "alerts"
            sold_at = time.monotonic()
            async with http.post(
                f"{stack.url}/api/v1/ventas",
                headers=admin,
                json={"producto_id": product["producto_id"], "cantidad": quantity},
            ) as resp:
                assert resp.status == 201
            # The startup check's alerts (delivered from the app's outbox) may come first.
            alert = await next_of_type(ws, "stock_bajo", 1.0)
            while alert["data"]["producto_id"] != product["producto_id"]:
                alert = await next_of_type(ws, "stock_bajo", 1.0)
            assert time.monotonic() - sold_at < 1.0
    assert alert["type"] == "alert" and alert["severity"] == "warning"
    assert alert["data"]["producto_id"] == product["producto_id"]
    assert isinstance(alert["id"], int) and alert["timestamp"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sent = [json.loads(s.body) for s in stack.sink.hits("/send")]
        if any(a.get("alert_type") == "stock_bajo" for a in sent):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the sink never got the alert")
    assert all(s.headers.get("idempotency-key") for s in stack.sink.hits("/send"))


async def test_notifications_get_inventory_updates_and_resume(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        admin = bearer("1", "admin")
        async with websockets.connect(f"{stack.ws}/api/v1/ws/notifications") as ws:
            await ws.recv()
            async with http.post(
                f"{stack.url}/api/v1/ventas", headers=admin, json={"producto_id": 2, "cantidad": 1}
            ) as resp:
                assert resp.status == 201
            update = await next_of_type(ws, "inventory_update", 2.0)
        assert update["update_type"] == "venta" and update["producto_id"] == 2
        async with http.post(
            f"{stack.url}/api/v1/ventas", headers=admin, json={"producto_id": 2, "cantidad": 1}
        ) as resp:
            assert resp.status == 201
        async with websockets.connect(f"{stack.ws}/api/v1/ws/notifications") as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "resume", "last_event_id": update["id"]}))
            missed = await next_of_type(ws, "inventory_update", 2.0)
            resumed = await next_of_type(ws, "resumed", 2.0)
    assert missed["id"] > update["id"]
    assert resumed["from"] == update["id"] and resumed["count"] >= 1


async def test_ingest_auth_and_validation_through_the_sidecar(stack: Stack) -> None:
    url = f"{stack.url}/api/v1/events"
    event = {"type": "inventory_update", "update_type": "lote", "producto_id": 3}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=event) as resp:
            assert resp.status == 401
        async with http.post(url, json=event, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with http.post(url, json=event, headers=bearer("2", "vendedor")) as resp:
            assert resp.status == 403
        async with http.post(url, json=event, headers=bearer("1", "admin")) as resp:
            assert resp.status == 202 and isinstance((await resp.json())["id"], int)
        bad = {"type": "alert", "alert_type": "x", "severity": "loud", "title": "t", "message": "m"}
        service = {"Authorization": f"Bearer {EVENTS_TOKEN}"}
        async with http.post(url, json=bad, headers=service) as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["error"] == "invalid_event" and body["field"] == "severity"
        async with http.post(url, data=b"x" * 70_000, headers=service) as resp:
            assert resp.status == 413


async def test_connections_endpoint_reload_and_shutdown(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        protocols = ["bearer", token("5", "viewer")]
        async with (
            websockets.connect(f"{stack.ws}/api/v1/ws/alerts", subprotocols=protocols) as alerts,
            websockets.connect(f"{stack.ws}/api/v1/ws/notifications") as plain,
        ):
            assert alerts.subprotocol == "bearer"
            assert json.loads(await alerts.recv())["authenticated"] is True
            await plain.recv()
            url = f"{stack.url}/api/v1/ws/connections"
            async with http.get(url, headers=bearer("1", "admin")) as resp:
                assert await resp.json() == {
                    "total": 2,
                    "by_channel": {"notifications": 1, "alerts": 1},
                    "authenticated": 1,
                }
            async with http.get(url, headers=bearer("5", "viewer")) as resp:
                assert resp.status == 403
            # A reload never closes open sockets.
            doc = yaml.safe_load(stack.config.read_text())
            doc["websocket"]["heartbeat"] = "20s"
            stack.config.write_text(yaml.safe_dump(doc))
            await asyncio.sleep(1.5)
            await plain.send(json.dumps({"type": "ping"}))
            assert (await next_of_type(plain, "pong", 2.0))["type"] == "pong"
            # SIGTERM: clients are told the server is going away.
            stack.sidecar.signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(plain.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_the_app_started_before_the_sidecar_loses_no_alert(tmp_path: Path) -> None:
    """CONTRACT 14: the startup alerts wait in the app's outbox until the sidecar listens."""
    sink = await FaultUpstream().start()
    port = free_port()
    app, app_port = start_upstream_app(tmp_path / "inv.db", f"http://127.0.0.1:{port}")
    sidecar: Process | None = None
    try:
        deadline = time.monotonic() + 10
        while "not reachable" not in app.output():
            assert time.monotonic() < deadline, app.output()
            await asyncio.sleep(0.05)
        doc = make_policy(port, f"http://127.0.0.1:{app_port}")
        doc["upstreams"]["email_service"]["url"] = sink.url
        doc["alerts"]["sinks"] = [{"upstream": "email_service", "path": "/send"}]
        sidecar = start_sidecar(write_policy(tmp_path / "policy.yaml", doc), port)
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/api/v1/reportes/inventario"
            async with http.get(url, headers=bearer("1", "admin")) as resp:
                report = await resp.json()
        expected = report["stock_bajo"] + report["lotes_por_vencer"]
        assert expected > 0
        deadline = time.monotonic() + 15
        while len(sent := [json.loads(s.body) for s in sink.hits("/send")]) < expected:
            assert time.monotonic() < deadline, f"{len(sent)} of {expected} alerts arrived"
            await asyncio.sleep(0.05)
        keys = [alert["event_key"] for alert in sent]
        assert len(keys) == len(set(keys)) == expected
        output = app.output()
        assert '"level":"warning"' not in output and "dropped" not in output, output
    finally:
        if sidecar is not None:
            sidecar.stop()
        app.stop()
        await sink.stop()


async def test_a_resent_event_key_is_published_once_through_the_sidecar(stack: Stack) -> None:
    url = f"{stack.url}/api/v1/events"
    service = {"Authorization": f"Bearer {EVENTS_TOKEN}"}
    event = {"type": "inventory_update", "update_type": "lote", "producto_id": 3}
    async with aiohttp.ClientSession() as http:
        async with websockets.connect(f"{stack.ws}/api/v1/ws/notifications") as ws:
            await ws.recv()
            ids = []
            for _ in range(2):
                async with http.post(
                    url, json={**event, "event_key": "e2e-1"}, headers=service
                ) as resp:
                    assert resp.status == 202
                    ids.append((await resp.json())["id"])
            assert ids[0] == ids[1]
            async with http.post(url, json={**event, "producto_id": 4}, headers=service) as resp:
                marker = (await resp.json())["id"]
            received = []
            while not received or received[-1]["id"] != marker:
                received.append(await next_of_type(ws, "inventory_update", 5.0))
        assert [e["id"] for e in received if e.get("event_key") == "e2e-1"] == [ids[0]]
        too_long = {**event, "event_key": "k" * 129}
        async with http.post(url, json=too_long, headers=service) as resp:
            assert resp.status == 400
            assert (await resp.json())["field"] == "event_key"
