"""SIGTERM under load (CONTRACT 6 and the drain): every request in flight is answered,
WebSockets get 1001, and the process exits within `server.drain_timeout`."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import aiohttp

from tests.support.chaos_load import Load, duplicated_sales, errors_by_kind
from tests.support.chaos_report import Row, metric, wait_until
from tests.support.inventory_app import InventoryApp
from tests.support.policy_files import resilient_upstream
from tests.support.processes import Sidecar

DRAIN_TIMEOUT_S = 5.0
APP_LATENCY_MS = 1000
"""Every app answer takes this long, so the burst is surely in flight at the signal."""
IN_FLIGHT = 8
WEBSOCKETS = 3
BASELINE_S = 1.0
EXIT_SLACK_S = 1.5
"""Closing sockets and the interpreter's own exit, after the drain."""


async def test_sigterm_answers_every_request_in_flight_and_closes_websockets_with_1001(
    inventory: InventoryApp, sidecar_factory: Callable[..., Sidecar], chaos_table: list[Row]
) -> None:
    sidecar = sidecar_factory(
        inventory.url,
        server={"drain_timeout": f"{DRAIN_TIMEOUT_S}s"},
        upstreams={"inventory": resilient_upstream(timeout="5s")},
    )
    inventory.admin_post("/api/v1/_chaos", {"latency_ms": APP_LATENCY_MS})
    ws_url = sidecar.url.replace("http", "ws") + "/api/v1/ws/notifications"
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(ws_url) for _ in range(WEBSOCKETS)]
        for ws in sockets:
            assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        load = Load(sidecar.url)
        load.start(deadline_s=60)
        await asyncio.sleep(BASELINE_S)
        load.stop_starting()

        async def clients_idle() -> bool:
            """the clients' last requests answered"""
            return load.pending == 0

        async def burst_in_the_sidecar() -> bool:
            """the whole burst held by the sidecar"""
            return await metric(sidecar.url, "resilience_proxy_in_flight") == IN_FLIGHT

        await wait_until(clients_idle, 5.0)
        load.start_burst(IN_FLIGHT)
        await wait_until(burst_in_the_sidecar, 5.0)
        signalled = time.monotonic()
        sidecar.proc.signal(signal.SIGTERM)
        closes = [await ws.receive(timeout=DRAIN_TIMEOUT_S + 5) for ws in sockets]
        outcomes = await load.stop()
    code = await asyncio.to_thread(sidecar.proc.wait, DRAIN_TIMEOUT_S + 10)
    exit_s = time.monotonic() - signalled
    errors = errors_by_kind(outcomes)
    duplicates = duplicated_sales(inventory.db, load)
    chaos_table.append(
        Row("sidecar SIGTERM", len(outcomes), errors, duplicates, exit_s,
            f"{IN_FLIGHT} in flight at the signal, all answered; time: signal to exit")
    )  # fmt: skip
    assert errors == {}  # those in flight at the signal included
    assert duplicates == 0
    assert [(m.type, m.data) for m in closes] == [(aiohttp.WSMsgType.CLOSE, 1001)] * WEBSOCKETS
    assert code == 0
    assert exit_s < DRAIN_TIMEOUT_S + EXIT_SLACK_S
