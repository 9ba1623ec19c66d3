"""Own endpoints on their own listener, through the real sidecar process.

The upstream (the fault upstream: it echoes what it receives) stands for a service that
serves `/metrics`, `/healthz` and `/api/v1/events` itself: with `admin.listen` set, the data
port forwards those to it, and the sidecar's own answers come from the admin port only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import Process, free_port, start_sidecar
from tests.support.tokens import bearer

ADMIN_TOKEN = "admin-token-for-the-suite-0123456789"


class Ports:
    def __init__(self, proc: Process, data: int, admin: int) -> None:
        self.proc = proc
        self.data = f"http://127.0.0.1:{data}"
        self.admin = f"http://127.0.0.1:{admin}"


@pytest.fixture
def with_admin_port(tmp_path: Path) -> Iterator[Callable[..., Ports]]:
    started: list[Process] = []

    def start(upstream_url: str, env: dict[str, str] | None = None, **overrides: Any) -> Ports:
        data, admin = free_port(), free_port()
        doc = make_policy(data, upstream_url, **overrides)
        doc["admin"] = {
            **doc["admin"],
            "listen": f"127.0.0.1:{admin}",
            **overrides.get("admin", {}),
        }
        config = write_policy(tmp_path / f"policy-{data}.yaml", doc)
        proc = start_sidecar(config, admin, **(env or {}))
        started.append(proc)
        return Ports(proc, data, admin)

    yield start
    for proc in started:
        proc.stop()


async def test_the_apps_own_paths_reach_it_through_the_data_port(upstream, with_admin_port) -> None:
    ports = with_admin_port(upstream.url, alerts={"enabled": False})
    async with aiohttp.ClientSession() as http:
        for method, path in [
            ("GET", "/metrics"),
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("POST", "/api/v1/events"),
            ("GET", "/api/v1/resilience/circuit-breakers"),
            ("GET", "/api/v1/ws/connections"),
        ]:
            async with http.request(method, f"{ports.data}{path}", json={"x": 1}) as resp:
                assert resp.status == 200, path
                echoed = await resp.json()
            assert echoed["method"] == method and echoed["target"] == path
    assert {seen.target for seen in upstream.seen} >= {"/metrics", "/api/v1/events"}


async def test_ingest_stays_on_the_data_port_while_enabled(upstream, with_admin_port) -> None:
    ports = with_admin_port(upstream.url)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{ports.data}/api/v1/events", json={"type": "x"}) as resp:
            assert resp.status == 401  # the hub's: no ingest token
        async with http.post(f"{ports.admin}/api/v1/events", json={"type": "x"}) as resp:
            assert resp.status == 404
    assert not upstream.hits("/api/v1/events")


async def test_own_endpoints_answer_on_the_admin_port_only(upstream, with_admin_port) -> None:
    ports = with_admin_port(upstream.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{ports.admin}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        assert "resilience_proxy_requests_total" in text
        async with http.get(f"{ports.admin}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ready"
        headers = bearer("1", "admin")
        async with http.get(
            f"{ports.admin}/api/v1/resilience/circuit-breakers", headers=headers
        ) as r:
            assert r.status == 200
            assert "inventory" in (await r.json())["circuit_breakers"]
        # Nothing is forwarded from the admin port: another path is the sidecar's 404.
        async with http.get(f"{ports.admin}/echo") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "not_found"
    assert not upstream.hits("/echo")


async def test_the_admin_token_is_admin_and_never_logged(upstream, with_admin_port) -> None:
    ports = with_admin_port(
        upstream.url,
        env={"PROXY_ADMIN_TOKEN": ADMIN_TOKEN},
        admin={"token_env": "PROXY_ADMIN_TOKEN"},
    )
    url = f"{ports.admin}/api/v1/resilience/circuit-breakers/inventory"
    async with aiohttp.ClientSession() as http:
        good = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with http.post(f"{url}/force-open", headers=good) as resp:
            assert resp.status == 200
            assert (await resp.json())["state"] == "forced_open"
        async with http.post(f"{url}/reset", headers=good) as resp:
            assert (await resp.json())["state"] == "closed"
        async with http.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"}) as resp:
            assert resp.status == 401
        async with http.get(url) as resp:
            assert resp.status == 401
        async with http.get(url, headers=bearer("2", "viewer")) as resp:
            assert resp.status == 403
        async with http.get(f"{ports.admin}/api/v1/resilience/policy", headers=good) as resp:
            document = await resp.text()
    assert ADMIN_TOKEN not in document
    ports.proc.stop_gracefully()
    assert ADMIN_TOKEN not in ports.proc.output()


async def test_disabled_hub_and_ingest_paths_go_to_the_upstream(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, websocket={"enabled": False}, alerts={"enabled": False})
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/api/v1/events", json={"type": "x"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["target"] == "/api/v1/events"
        async with http.get(f"{sidecar.url}/api/v1/ws/alerts") as resp:
            assert resp.status == 200
            assert (await resp.json())["target"] == "/api/v1/ws/alerts"
        async with http.get(f"{sidecar.url}/metrics") as resp:  # admin paths still shared
            assert "resilience_proxy_requests_total" in await resp.text()


async def test_settable_hub_paths(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(
        upstream.url,
        websocket={"paths": {"notifications": "/_hub/all", "alerts": "/_hub/alerts"}},
        alerts={"ingest_path": "/_hub/events"},
    )
    ws_url = sidecar.url.replace("http://", "ws://")
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer test-events-token-0123456789"}
        async with http.ws_connect(f"{ws_url}/_hub/alerts") as ws:
            welcome = await ws.receive_json(timeout=5)
            assert welcome["channel"] == "alerts"
            event = {
                "type": "alert", "alert_type": "t", "severity": "warning",
                "title": "T", "message": "M",
            }  # fmt: skip
            async with http.post(f"{sidecar.url}/_hub/events", json=event, headers=headers) as r:
                assert r.status == 202
            assert (await ws.receive_json(timeout=5))["title"] == "T"
        # The default paths are nobody's now: they reach the upstream.
        async with http.post(f"{sidecar.url}/api/v1/events", json=event) as resp:
            assert (await resp.json())["target"] == "/api/v1/events"


async def test_the_console_and_its_alerts_socket_on_the_admin_port(
    upstream, with_admin_port
) -> None:
    ports = with_admin_port(upstream.url)
    admin_ws = ports.admin.replace("http://", "ws://")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{ports.admin}/console") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/html")
        async with http.get(f"{ports.data}/console") as resp:  # the app's path there
            assert (await resp.json())["target"] == "/console"
        async with http.ws_connect(f"{admin_ws}/api/v1/ws/alerts") as ws:
            assert (await ws.receive_json(timeout=5))["channel"] == "alerts"
            event = {
                "type": "alert", "alert_type": "t", "severity": "critical",
                "title": "From the app", "message": "M",
            }  # fmt: skip
            headers = {"Authorization": "Bearer test-events-token-0123456789"}
            async with http.post(f"{ports.data}/api/v1/events", json=event, headers=headers) as r:
                assert r.status == 202
            assert (await ws.receive_json(timeout=5))["title"] == "From the app"
