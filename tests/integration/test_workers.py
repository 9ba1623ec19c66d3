"""`server.workers: 2` with real processes: one sidecar's totals, shared breakers, restarts.

Every request goes over a new connection, so the kernel's SO_REUSEPORT hash spreads them
over both workers; what a test asserts are the supervisor's totals, which no single
worker could produce alone once both have served.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.fault_upstream import FaultUpstream
from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import EVENTS_TOKEN, Process, free_port, start_sidecar
from tests.support.tokens import bearer

ADMIN = bearer("1", "admin")
BREAKERS = "/api/v1/resilience/circuit-breakers"
REQUESTS = 'resilience_proxy_requests_total{code="200",method="GET",route="inventory"}'


@pytest.fixture
def workers(
    upstream: FaultUpstream, redis_url: str, tmp_path: Path
) -> Iterator[tuple[Process, str]]:
    port = free_port()
    doc = make_policy(
        port,
        upstream.url,
        server={"workers": 2},
        storage={"backend": "redis", "redis_url": redis_url},
    )
    inventory = doc["upstreams"]["inventory"]
    inventory["retry"] = {"max_attempts": 1}
    inventory["circuit_breaker"] = {"failure_threshold": 3, "recovery_timeout": "60s"}
    proc = start_sidecar(write_policy(tmp_path / "policy.yaml", doc), port)
    base = f"http://127.0.0.1:{port}"

    async def serving() -> bool:
        return sample(await scrape(base), "resilience_proxy_workers") == 2

    assert asyncio.run(until(serving)), "both workers should be serving"
    yield proc, base
    proc.stop()


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


async def fresh(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    """One request on a connection of its own (the kernel picks the worker)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.request(method, url, **kwargs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


def sample(text: str, series: str) -> float:
    match = re.search("^" + re.escape(series) + r" (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not in the scrape"
    return float(match.group(1))


async def scrape(base: str) -> str:
    status, text = await fresh("GET", f"{base}/metrics")
    assert status == 200
    return str(text)


async def stats(base: str) -> dict[str, Any]:
    status, body = await fresh("GET", f"{base}{BREAKERS}/inventory", headers=ADMIN)
    assert status == 200, body
    return dict(body)


async def until(check: Any, deadline_s: float = 10.0) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        value = await check()
        if value or time.monotonic() > end:
            return value
        await asyncio.sleep(0.05)


async def test_metrics_are_the_totals_of_all_workers(workers: tuple[Process, str]) -> None:
    proc, base = workers
    assert len(children(proc.pid)) == 2
    seen: list[float] = []
    for _ in range(10):
        for _ in range(3):
            assert (await fresh("GET", f"{base}/echo"))[0] == 200
        text = await scrape(base)
        seen.append(sample(text, REQUESTS))
        assert sample(text, "resilience_proxy_workers") == 2
        assert sample(text, "resilience_proxy_worker_restarts_total") == 0
    assert seen == [3.0 * n for n in range(1, 11)]


async def test_failures_through_both_workers_open_the_shared_breaker(
    workers: tuple[Process, str],
) -> None:
    _, base = workers
    for _ in range(3):
        assert (await fresh("GET", f"{base}/status/503"))[0] == 503

    async def opened() -> dict[str, Any] | None:
        body = await stats(base)
        return body if body["state"] == "open" else None

    body = await until(opened)
    assert body is not None, "the breaker did not open"
    assert body["total_failures"] == 3
    assert body["consecutive_failures"] == 3
    for _ in range(10):
        status, answer = await fresh("GET", f"{base}/echo")
        assert (status, answer["error"]) == (503, "circuit_open")
    body = await stats(base)
    assert body["total_rejections"] == 10
    text = await scrape(base)
    assert (
        sample(text, 'resilience_proxy_circuit_breaker_state{breaker="inventory",state="open"}')
        == 1
    )
    assert (
        sample(
            text,
            'resilience_proxy_circuit_breaker_calls_total{breaker="inventory",outcome="rejected"}',
        )
        == 10
    )

    status, body = await fresh("POST", f"{base}{BREAKERS}/inventory/reset", headers=ADMIN)
    assert (status, body["state"]) == (200, "closed")
    for _ in range(10):
        assert (await fresh("GET", f"{base}/echo"))[0] == 200
    status, body = await fresh("GET", f"{base}{BREAKERS}", headers=ADMIN)
    assert body["circuit_breakers"]["inventory"]["total_successes"] == 10


async def test_admin_force_open_reaches_every_worker(workers: tuple[Process, str]) -> None:
    _, base = workers
    status, body = await fresh("POST", f"{base}{BREAKERS}/inventory/force-open", headers=ADMIN)
    assert (status, body["state"]) == (200, "forced_open")
    for _ in range(10):
        assert (await fresh("GET", f"{base}/echo"))[0] == 503
    await fresh("POST", f"{base}{BREAKERS}/inventory/force-close", headers=ADMIN)
    for _ in range(10):
        assert (await fresh("GET", f"{base}/status/503"))[0] == 503  # forced closed: no trip
    assert (await stats(base))["state"] == "forced_closed"


async def test_a_killed_worker_is_restarted_and_nothing_shared_is_lost(
    workers: tuple[Process, str],
) -> None:
    proc, base = workers
    for _ in range(10):
        assert (await fresh("GET", f"{base}/echo"))[0] == 200
    assert sample(await scrape(base), REQUESTS) == 10
    await fresh("POST", f"{base}{BREAKERS}/inventory/force-open", headers=ADMIN)
    victim = children(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)

    async def restarted() -> str | None:
        text = await scrape(base)
        live = sample(text, "resilience_proxy_workers") == 2
        return text if live and len(children(proc.pid)) == 2 else None

    text = await until(restarted)
    assert text is not None, "the worker was not restarted"
    assert victim not in children(proc.pid)
    assert sample(text, "resilience_proxy_worker_restarts_total") == 1
    assert sample(text, REQUESTS) == 10
    assert "worker 0 died" in proc.output() or "worker 1 died" in proc.output()
    for _ in range(10):
        status, answer = await fresh("GET", f"{base}/echo")
        assert (status, answer["error"]) == (503, "circuit_open")
    assert (await stats(base))["state"] == "forced_open"


async def test_sigterm_drains_every_worker_and_exits_0(workers: tuple[Process, str]) -> None:
    proc, base = workers
    assert (await fresh("GET", f"{base}/echo"))[0] == 200
    pids = children(proc.pid)
    proc.signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


async def test_websocket_clients_on_every_worker_get_every_event_once_in_order(
    workers: tuple[Process, str],
) -> None:
    _, base = workers
    sessions = [aiohttp.ClientSession() for _ in range(6)]  # a connection each
    try:
        sockets = [await s.ws_connect(f"{base}/api/v1/ws/notifications") for s in sessions]
        for ws in sockets:
            assert (await ws.receive_json(timeout=10))["type"] == "welcome"

        async def everyone() -> bool:
            status, body = await fresh("GET", f"{base}/api/v1/ws/connections", headers=ADMIN)
            return status == 200 and body["total"] == len(sockets)

        assert await until(everyone), "the connection counts are not the sum of the workers'"
        service = {"Authorization": f"Bearer {EVENTS_TOKEN}"}
        ids = []
        for n in range(5):
            event = {"type": "inventory_update", "update_type": "venta", "producto_id": n,
                     "producto_nombre": "x", "data": {}}  # fmt: skip
            status, body = await fresh("POST", f"{base}/api/v1/events", json=event, headers=service)
            assert status == 202, body
            ids.append(body["id"])
        for ws in sockets:
            got: list[int] = []
            while len(got) < len(ids):
                message = await ws.receive_json(timeout=10)
                if message["type"] == "inventory_update":
                    got.append(message["id"])
            assert got == ids
        text = await scrape(base)
        connections = 'resilience_proxy_websocket_connections{channel="notifications"}'
        assert sample(text, connections) == len(sockets)
    finally:
        for session in sessions:
            await session.close()


async def test_sighup_reloads_every_worker_and_the_shared_breakers(
    workers: tuple[Process, str], tmp_path: Path
) -> None:
    proc, base = workers
    config = tmp_path / "policy.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["upstreams"]["inventory"]["circuit_breaker"]["failure_threshold"] = 7
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc.signal(signal.SIGHUP)

    async def reloaded() -> bool:
        text = await scrape(base)
        return sample(text, 'resilience_proxy_policy_reloads_total{result="success"}') == 2

    assert await until(reloaded), "not every worker reloaded"
    assert (await stats(base))["failure_threshold"] == 7
