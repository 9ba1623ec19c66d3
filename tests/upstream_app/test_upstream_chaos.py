"""Fault injection through `/api/v1/_chaos`, against the real process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from upstream_harness import Api

CHAOS = "/api/v1/_chaos"


@pytest.fixture(autouse=True)
async def chaos_off(api: Api) -> AsyncIterator[None]:
    """Every test starts and ends without chaos (the app is shared by the module).

    Logging in first matters: chaos applies to the login endpoint too.
    """
    for user in ("admin", "vendedor", "viewer"):
        await api.token(user)
    assert (await api.call("POST", CHAOS, user="admin", json_body={})).status == 200
    yield
    assert (await api.call("POST", CHAOS, user="admin", json_body={})).status == 200


async def test_answers_the_active_settings(api: Api) -> None:
    body = {"error_rate": 0.25, "status": 500, "latency_ms": 0, "fail_after_commit_rate": 0.5}
    reply = await api.call("POST", CHAOS, user="admin", json_body=body)
    assert reply.status == 200
    assert reply.body == body
    assert (await api.call("GET", CHAOS, user="admin")).body == body
    off = await api.call("POST", CHAOS, user="admin", json_body={})
    assert off.body == {
        "error_rate": 0,
        "status": 503,
        "latency_ms": 0,
        "fail_after_commit_rate": 0,
    }


async def test_error_rate_one_writes_nothing(api: Api) -> None:
    producto_id = await api.new_product(lots=((10, 30),))
    await api.call("POST", CHAOS, user="admin", json_body={"error_rate": 1})
    reply = await api.sell(producto_id, 2)
    assert reply.status == 503
    assert reply.body["error"] == "chaos_injected"
    assert reply.headers["X-Chaos"] == "before"
    await api.call("POST", CHAOS, user="admin", json_body={})
    assert await api.stock(producto_id) == 10
    sales = await api.call("GET", f"/api/v1/ventas?producto_id={producto_id}", user="viewer")
    assert sales.body["total"] == 0


async def test_fail_after_commit_keeps_the_sale(api: Api) -> None:
    producto_id = await api.new_product(lots=((10, 30),))
    await api.call("POST", CHAOS, user="admin", json_body={"fail_after_commit_rate": 1})
    reply = await api.sell(producto_id, 2)
    assert reply.status == 503
    assert reply.headers["X-Chaos"] == "after-commit"
    await api.call("POST", CHAOS, user="admin", json_body={})
    assert await api.stock(producto_id) == 8
    sales = await api.call("GET", f"/api/v1/ventas?producto_id={producto_id}", user="viewer")
    assert [(s["producto_id"], s["cantidad"]) for s in sales.body["items"]] == [(producto_id, 2)]


async def test_chosen_status_and_gets_are_affected(api: Api) -> None:
    await api.call("POST", CHAOS, user="admin", json_body={"error_rate": 1, "status": 502})
    reply = await api.call("GET", "/api/v1/productos", user="viewer")
    assert reply.status == 502
    assert set(reply.body) == {"error", "message"}


async def test_healthz_and_chaos_endpoint_are_never_affected(api: Api) -> None:
    body = {"error_rate": 1, "latency_ms": 2000, "fail_after_commit_rate": 1}
    await api.call("POST", CHAOS, user="admin", json_body=body)
    started = time.monotonic()
    assert (await api.call("GET", "/healthz")).body == {"status": "ok"}
    assert (await api.call("GET", CHAOS, user="admin")).status == 200
    assert (await api.call("POST", CHAOS, user="admin", json_body={})).status == 200
    assert time.monotonic() - started < 2.0  # none of the three waited out the latency


async def test_latency_delays_before_the_handler(api: Api) -> None:
    await api.call("POST", CHAOS, user="admin", json_body={"latency_ms": 300})
    started = time.monotonic()
    reply = await api.call("GET", "/api/v1/productos?limit=1", user="viewer")
    assert reply.status == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 2},
        {"status": 200},
        {"latency_ms": -5},
        {"fail_after_commit_rate": "1"},
        {"typo": 1},
    ],
)
async def test_bad_settings_are_400_and_change_nothing(api: Api, body: dict[str, object]) -> None:
    await api.call("POST", CHAOS, user="admin", json_body={"latency_ms": 1})
    reply = await api.call("POST", CHAOS, user="admin", json_body=body)
    assert reply.status == 400
    assert (await api.call("GET", CHAOS, user="admin")).body["latency_ms"] == 1


async def test_only_admin_switches_chaos(api: Api) -> None:
    reply = await api.call("POST", CHAOS, user="vendedor", json_body={"error_rate": 1})
    assert reply.status == 403
    assert (await api.call("POST", CHAOS, json_body={"error_rate": 1})).status == 401
    assert (await api.call("GET", CHAOS, user="admin")).body["error_rate"] == 0
