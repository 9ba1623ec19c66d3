"""The inventory app behind the sidecar, under chaos: writes are never duplicated."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import (
    Process,
    base_env,
    free_port,
    start_sidecar,
    start_upstream_app,
)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    app, app_port = start_upstream_app(tmp_path / "inv.db", f"http://127.0.0.1:{port}")
    doc = make_policy(port, f"http://127.0.0.1:{app_port}")
    doc["upstreams"]["inventory"]["retry"] = {
        "max_attempts": 3,
        "base_delay": "10ms",
        "max_delay": "50ms",
        "budget": {"ratio": 1.0, "min_per_second": 100},
    }
    doc["upstreams"]["inventory"]["circuit_breaker"] = {"failure_threshold": 1000}
    sidecar = start_sidecar(write_policy(tmp_path / "policy.yaml", doc), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        sidecar.stop()
        app.stop()


async def login(http: aiohttp.ClientSession, url: str, user: str) -> dict[str, str]:
    async with http.post(
        f"{url}/api/v1/auth/login", json={"username": user, "password": "seed-password"}
    ) as resp:
        assert resp.status == 200
        return {"Authorization": f"Bearer {(await resp.json())['access_token']}"}


async def sales_of(http: aiohttp.ClientSession, url: str, auth: dict[str, str], pid: int) -> int:
    async with http.get(f"{url}/api/v1/ventas?producto_id={pid}&limit=500", headers=auth) as resp:
        assert resp.status == 200
        return (await resp.json())["total"]


@pytest.mark.parametrize("chaos", ["error_rate", "fail_after_commit_rate"])
async def test_concurrent_sales_under_chaos_are_never_duplicated(stack: str, chaos: str) -> None:
    async with aiohttp.ClientSession() as http:
        admin = await login(http, stack, "admin")
        async with http.get(f"{stack}/api/v1/productos?limit=500", headers=admin) as resp:
            products = (await resp.json())["items"]
        product = max(products, key=lambda p: p["stock"])
        pid = product["producto_id"]
        before = await sales_of(http, stack, admin, pid)
        async with http.post(f"{stack}/api/v1/_chaos", headers=admin, json={chaos: 0.5}) as resp:
            assert resp.status == 200

        async def sell() -> tuple[int, str | None]:
            async with http.post(
                f"{stack}/api/v1/ventas", headers=admin, json={"producto_id": pid, "cantidad": 1}
            ) as resp:
                await resp.read()
                return resp.status, resp.headers.get("X-Chaos")

        results = await asyncio.gather(*(sell() for _ in range(30)))
        async with http.post(f"{stack}/api/v1/_chaos", headers=admin, json={}) as resp:
            assert resp.status == 200
        created = await sales_of(http, stack, admin, pid) - before
    succeeded = sum(1 for status, _ in results if status == 201)
    committed_then_failed = sum(1 for _, stage in results if stage == "after-commit")
    assert 0 < succeeded < 30
    # Every sale the app made is one the client asked for exactly once.
    assert created == succeeded + committed_then_failed


async def test_keyed_sales_retried_by_the_sidecar_are_made_once(stack: str) -> None:
    """The app fails after the commit 30 % of the time; the sidecar retries keyed POSTs."""
    sales = 40
    async with aiohttp.ClientSession() as http:
        admin = await login(http, stack, "admin")
        async with http.post(
            f"{stack}/api/v1/productos", headers=admin, json={"nombre": "Idem", "precio": 1}
        ) as resp:
            pid = (await resp.json())["producto_id"]
        lot = {"producto_id": pid, "cantidad": 1000, "fecha_vencimiento": "2999-01-01"}
        async with http.post(f"{stack}/api/v1/lotes", headers=admin, json=lot) as resp:
            assert resp.status == 201
        chaos = {"fail_after_commit_rate": 0.3}
        async with http.post(f"{stack}/api/v1/_chaos", headers=admin, json=chaos) as resp:
            assert resp.status == 200

        async def sell(key: str) -> tuple[int, bool]:
            """Until answered 201 (as a client would), at most 10 times with the same key."""
            headers = {**admin, "Idempotency-Key": key}
            for _ in range(10):
                async with http.post(
                    f"{stack}/api/v1/ventas",
                    headers=headers,
                    json={"producto_id": pid, "cantidad": 1},
                ) as resp:
                    body = await resp.json()
                    if resp.status == 201:
                        replayed = resp.headers.get("Idempotent-Replayed") == "true"
                        return int(body["venta_id"]), replayed
            raise AssertionError(f"sale {key} never answered 201")

        answers = await asyncio.gather(*(sell(f"sale-{n}") for n in range(sales)))
        async with http.post(f"{stack}/api/v1/_chaos", headers=admin, json={}) as resp:
            assert resp.status == 200
        assert await sales_of(http, stack, admin, pid) == sales
        assert len({venta_id for venta_id, _ in answers}) == sales
        # Some sales were answered by a retry after a failure the app made past its commit.
        assert any(replayed for _, replayed in answers)
        async with http.get(f"{stack}/api/v1/productos/{pid}", headers=admin) as resp:
            assert (await resp.json())["stock"] == 1000 - sales


async def test_keyed_sales_are_made_once_across_an_app_crash(tmp_path: Path) -> None:
    """The app is killed (SIGKILL) under keyed sales and restarted on its port and database:
    each key makes exactly one sale, whatever answer its client finally got."""
    port = free_port()
    db = tmp_path / "inv.db"
    app, app_port = start_upstream_app(db, f"http://127.0.0.1:{port}")
    doc = make_policy(port, f"http://127.0.0.1:{app_port}")
    doc["upstreams"]["inventory"]["retry"] = {
        "max_attempts": 3,
        "base_delay": "50ms",
        "max_delay": "200ms",
        "budget": {"ratio": 1.0, "min_per_second": 100},
    }
    doc["upstreams"]["inventory"]["circuit_breaker"] = {"failure_threshold": 1000}
    sidecar = start_sidecar(write_policy(tmp_path / "policy.yaml", doc), port)
    url = f"http://127.0.0.1:{port}"
    restarted: Process | None = None
    try:
        async with aiohttp.ClientSession() as http:
            admin = await login(http, url, "admin")
            async with http.post(
                f"{url}/api/v1/productos", headers=admin, json={"nombre": "Crash", "precio": 1}
            ) as resp:
                pid = (await resp.json())["producto_id"]
            lot = {"producto_id": pid, "cantidad": 1000, "fecha_vencimiento": "2999-01-01"}
            async with http.post(f"{url}/api/v1/lotes", headers=admin, json=lot) as resp:
                assert resp.status == 201
            answers: dict[str, str] = {}

            async def sell(key: str) -> None:
                headers = {**admin, "Idempotency-Key": key}
                for _ in range(100):  # bounded: the app is back within seconds
                    async with http.post(
                        f"{url}/api/v1/ventas",
                        headers=headers,
                        json={"producto_id": pid, "cantidad": 1},
                    ) as resp:
                        body = await resp.json()
                        if resp.status == 201 or body.get("error") == "idempotency_key_answer_lost":
                            answers[key] = body.get("error", "created")
                            return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"sale {key} never got an answer")

            async def worker(first: int) -> None:
                for n in range(first, 60, 4):
                    await sell(f"crash-{n}")

            workers = asyncio.gather(*(worker(n) for n in range(4)))
            deadline = time.monotonic() + 30
            while len(answers) < 15:
                assert time.monotonic() < deadline, "sales did not start"
                await asyncio.sleep(0.01)
            app.popen.kill()
            app.popen.wait(10)
            restarted = Process(
                [
                    sys.executable,
                    "-m",
                    "upstream_app",
                    "--port",
                    str(app_port),
                    "--db",
                    str(db),
                    "--host",
                    "127.0.0.1",
                    "--events-url",
                    url,
                ],
                base_env(),
            )
            await workers
            assert len(answers) == 60
            assert await sales_of(http, url, admin, pid) == 60
            async with http.get(f"{url}/api/v1/productos/{pid}", headers=admin) as resp:
                assert (await resp.json())["stock"] == 1000 - 60
    finally:
        sidecar.stop()
        app.stop()
        if restarted is not None:
            restarted.stop()
