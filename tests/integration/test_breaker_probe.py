"""The breaker's health probe (CONTRACT 14): after a crash of the app, recovery in seconds."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.inventory_app import InventoryApp
from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import free_port, start_sidecar
from tests.support.tokens import bearer

ADMIN = bearer("1", "admin")
RECOVERY_TIMEOUT_S = 300


@pytest.fixture
def app(tmp_path: Path) -> Iterator[InventoryApp]:
    app = InventoryApp(tmp_path / "inv.db")
    app.start()
    yield app
    app.stop()


def sidecar_policy(port: int, app_port: int, probe: dict | None) -> dict:
    doc = make_policy(port, f"http://127.0.0.1:{app_port}")
    inventory = doc["upstreams"]["inventory"]
    inventory["retry"] = {"max_attempts": 1}
    inventory["circuit_breaker"] = {
        "failure_threshold": 2,
        "recovery_timeout": f"{RECOVERY_TIMEOUT_S}s",
        "success_threshold": 1,
    }
    if probe is not None:
        inventory["circuit_breaker"]["probe"] = probe
    return doc


async def breaker_state(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(
        f"{url}/api/v1/resilience/circuit-breakers/inventory", headers=ADMIN
    ) as resp:
        return (await resp.json())["state"]


async def probes(http: aiohttp.ClientSession, url: str, result: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    line = f'resilience_proxy_breaker_probes_total{{breaker="inventory",result="{result}"}}'
    found = re.search(re.escape(line) + r" (\S+)", text)
    assert found is not None, f"{line} not in the scrape"
    return float(found.group(1))


async def open_the_breaker(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(2):
        async with http.get(f"{url}/api/v1/productos", headers=ADMIN) as resp:
            assert resp.status == 502
    assert await breaker_state(http, url) == "open"


async def test_app_killed_then_restarted_breaker_recovers_by_its_probe(
    app: InventoryApp, tmp_path: Path
) -> None:
    port = free_port()
    probe = {"path": "/healthz", "interval": "200ms"}
    config = write_policy(tmp_path / "policy.yaml", sidecar_policy(port, app.port, probe))
    sidecar = start_sidecar(config, port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            assert await probes(http, url, "success") == 0  # declared from the first scrape
            app.kill()
            await open_the_breaker(http, url)
            deadline = time.monotonic() + 20
            while await probes(http, url, "failure") < 2:  # probed while the app is down
                assert time.monotonic() < deadline, "no failed probe while the app was down"
                await asyncio.sleep(0.1)
            assert await breaker_state(http, url) == "open"
            app.start()
            restarted = time.monotonic()
            while await breaker_state(http, url) == "open":
                assert time.monotonic() - restarted < 20, "the probe never found the app back"
                await asyncio.sleep(0.1)
            assert await breaker_state(http, url) == "half_open"
            assert await probes(http, url, "success") == 1
            async with http.get(f"{url}/api/v1/productos", headers=ADMIN) as resp:
                assert resp.status == 200
            assert await breaker_state(http, url) == "closed"
    finally:
        sidecar.stop()


async def test_without_a_probe_the_breaker_waits_for_its_recovery_timeout(
    app: InventoryApp, tmp_path: Path
) -> None:
    port = free_port()
    config = write_policy(tmp_path / "policy.yaml", sidecar_policy(port, app.port, None))
    sidecar = start_sidecar(config, port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            app.kill()
            await open_the_breaker(http, url)
            app.start()
            async with http.get(f"{url}/api/v1/productos", headers=ADMIN) as resp:
                assert resp.status == 503
                assert (await resp.json())["error"] == "circuit_open"
            assert await breaker_state(http, url) == "open"
            async with http.get(f"{url}/metrics") as resp:
                assert 'breaker_probes_total{breaker="inventory"' not in await resp.text()
    finally:
        sidecar.stop()
