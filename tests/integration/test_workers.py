"""`server.workers: 2` with real processes: one sidecar's totals, shared breakers, restarts.

Most requests go over a new connection, so the kernel's SO_REUSEPORT hash spreads them
over both workers; what a test asserts are the supervisor's totals, which no single
worker could produce alone once both have served. Where "every worker" is the point, a
test holds connections on each worker (`tests.support.workers`).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.fault_upstream import FaultUpstream
from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import EVENTS_TOKEN, Process, free_port
from tests.support.tokens import bearer
from tests.support.workers import (
    children,
    fresh,
    on_each_worker,
    pinned_http,
    sample,
    scrape,
    start_workers,
    until,
)

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
    proc, base = start_workers(write_policy(tmp_path / "policy.yaml", doc), port)
    yield proc, base
    proc.stop()


async def stats(base: str) -> dict[str, Any]:
    status, body = await fresh("GET", f"{base}{BREAKERS}/inventory", headers=ADMIN)
    assert status == 200, body
    return dict(body)


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


async def test_admin_actions_reach_every_worker(workers: tuple[Process, str]) -> None:
    proc, base = workers
    async with pinned_http(base, children(proc.pid)) as held:
        clients = [client for pinned in held.values() for client in pinned]
        status, body = await fresh("POST", f"{base}{BREAKERS}/inventory/force-open", headers=ADMIN)
        assert (status, body["state"]) == (200, "forced_open")
        for client in clients:
            status, answer = await client.request("GET", "/echo")
            assert (status, answer["error"]) == (503, "circuit_open")
        await fresh("POST", f"{base}{BREAKERS}/inventory/force-close", headers=ADMIN)
        for client in clients:
            for _ in range(4):  # forced closed: no trip, whichever worker counts them
                assert (await client.request("GET", "/status/503"))[0] == 503
            assert (await client.request("GET", "/echo"))[0] == 200
        assert (await stats(base))["state"] == "forced_closed"
        await fresh("POST", f"{base}{BREAKERS}/inventory/reset", headers=ADMIN)
        for client in clients:
            assert (await client.request("GET", "/echo"))[0] == 200
        body = await stats(base)
        assert (body["state"], body["consecutive_failures"]) == ("closed", 0)


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


def event(n: int) -> dict[str, Any]:
    return {"type": "inventory_update", "update_type": "venta", "producto_id": n,
            "producto_nombre": "x", "data": {}}  # fmt: skip


async def test_every_websocket_client_gets_every_event_once_in_order_wherever_ingested(
    workers: tuple[Process, str],
) -> None:
    proc, base = workers
    pids = children(proc.pid)

    async def websocket() -> tuple[Any, int, Any]:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{base}/api/v1/ws/notifications")
        assert (await ws.receive_json(timeout=10))["type"] == "welcome"

        async def close() -> None:
            await ws.close()
            await session.close()

        return ws, int(ws.get_extra_info("sockname")[1]), close

    service = {"Authorization": f"Bearer {EVENTS_TOKEN}"}
    async with (
        on_each_worker(base, pids, 2, websocket) as sockets_by_worker,
        pinned_http(base, pids) as ingest,
    ):
        sockets = [ws for held in sockets_by_worker.values() for ws in held]

        async def everyone() -> bool:
            status, body = await fresh("GET", f"{base}/api/v1/ws/connections", headers=ADMIN)
            return status == 200 and body["total"] == len(sockets)

        assert await until(everyone), "the connection counts are not the sum of the workers'"

        async def publish(pid: int, n: int) -> int:
            status, body = await ingest[pid][0].request(
                "POST", "/api/v1/events", json=event(n), headers=service
            )
            assert status == 202, body
            return int(body["id"])

        # Ingested on both workers at once, so their ids interleave.
        ids = await asyncio.gather(*(publish(pids[n % 2], n) for n in range(10)))
        last = await publish(pids[0], 10)  # after every other: nothing may come after it
        expected = [*sorted(ids), last]
        for ws in sockets:
            got: list[int] = []
            while not got or got[-1] != last:
                message = await ws.receive_json(timeout=10)
                if message["type"] == "inventory_update":
                    got.append(message["id"])
            assert got == expected
        text = await scrape(base)
        connections = 'resilience_proxy_websocket_connections{channel="notifications"}'
        assert sample(text, connections) == len(sockets)


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
