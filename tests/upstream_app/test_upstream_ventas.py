"""Sales: FEFO, no overselling under concurrency, and the events a sale publishes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest
from upstream_harness import EVENTS_TOKEN, Api, EventSink, RunningApp, free_port


async def test_sale_answers_201_and_publishes_inventory_update(api: Api, sink: EventSink) -> None:
    producto_id = await api.new_product(lots=((100, 90),), precio=2.5)
    reply = await api.sell(producto_id, 3)
    assert reply.status == 201
    assert reply.body["cantidad"] == 3
    assert reply.body["total"] == 7.5
    assert reply.body["stock_restante"] == 97
    [event] = await sink.wait_for(
        lambda e: e.get("update_type") == "venta" and e["producto_id"] == producto_id
    )
    assert event.path == "/api/v1/events"
    assert event.authorization == f"Bearer {EVENTS_TOKEN}"
    assert event.body["type"] == "inventory_update"
    assert event.body["producto_nombre"].startswith("Test ")
    assert {k: event.body["data"][k] for k in ("cantidad", "stock_anterior", "stock_nuevo")} == {
        "cantidad": 3,
        "stock_anterior": 100,
        "stock_nuevo": 97,
    }


async def test_crossing_the_threshold_publishes_stock_bajo(api: Api, sink: EventSink) -> None:
    producto_id = await api.new_product(lots=((12, 90),), umbral_min=10)
    assert (await api.sell(producto_id, 2)).status == 201  # 12 -> 10: not below yet
    assert (await api.sell(producto_id, 3)).status == 201  # 10 -> 7: crosses
    assert (await api.sell(producto_id, 1)).status == 201  # 7 -> 6: already low
    # Events leave in order, one at a time: once the third sale's update is in, any alert
    # published by the first two sales is in too.
    await sink.wait_for(
        lambda e: e.get("update_type") == "venta" and e["producto_id"] == producto_id, count=3
    )
    alerts = [
        e.body
        for e in sink.snapshot()
        if e.body.get("alert_type") == "stock_bajo" and e.body["data"]["producto_id"] == producto_id
    ]
    assert len(alerts) == 1
    assert alerts[0]["severity"] == "warning"
    assert alerts[0]["data"] == {"producto_id": producto_id, "stock_actual": 7, "umbral_min": 10}
    assert alerts[0]["message"] == "Stock actual: 7 unidades. Minimo requerido: 10"


async def test_fefo_takes_the_first_expiring_lot_first(api: Api) -> None:
    producto_id = await api.new_product()
    late = await api.add_lot(producto_id, 10, 200)
    early = await api.add_lot(producto_id, 4, 20)
    middle = await api.add_lot(producto_id, 5, 100)
    reply = await api.sell(producto_id, 6)
    assert reply.status == 201
    assert reply.body["lotes"] == [
        {"lote_id": early, "cantidad": 4},
        {"lote_id": middle, "cantidad": 2},
    ]
    product = await api.call("GET", f"/api/v1/productos/{producto_id}", user="viewer")
    left = {lot["lote_id"]: lot["cantidad"] for lot in product.body["lotes"]}
    assert left == {middle: 3, late: 10}


async def test_short_stock_is_409_and_changes_nothing(api: Api) -> None:
    producto_id = await api.new_product(lots=((2, 30),))
    reply = await api.sell(producto_id, 3)
    assert reply.status == 409
    assert reply.body["error"] == "insufficient_stock"
    assert await api.stock(producto_id) == 2


async def test_fifty_concurrent_sales_never_oversell(api: Api) -> None:
    producto_id = await api.new_product(lots=((8, 30), (12, 60)))
    await api.token("vendedor")
    replies = await asyncio.gather(*(api.sell(producto_id, 1) for _ in range(50)))
    assert Counter(reply.status for reply in replies) == {201: 20, 409: 30}
    assert await api.stock(producto_id) == 0
    sales = await api.call("GET", f"/api/v1/ventas?producto_id={producto_id}", user="viewer")
    assert sales.body["total"] == 20


@pytest.mark.parametrize(
    "body",
    [
        {"producto_id": 1},
        {"producto_id": 1, "cantidad": 0},
        {"producto_id": "1", "cantidad": 1},
        {"cantidad": 1},
        {"producto_id": 1, "cantidad": 1.5},
    ],
)
async def test_bad_sale_is_400(api: Api, body: dict[str, object]) -> None:
    reply = await api.call("POST", "/api/v1/ventas", user="vendedor", json_body=body)
    assert reply.status == 400


async def test_unknown_product_is_404(api: Api) -> None:
    assert (await api.sell(999_999, 1)).status == 404


async def test_admin_may_sell_too(api: Api) -> None:
    producto_id = await api.new_product(lots=((1, 30),))
    assert (await api.sell(producto_id, 1, user="admin")).status == 201


async def test_list_sales_newest_first_with_pagination(api: Api) -> None:
    producto_id = await api.new_product(lots=((10, 30),))
    for cantidad in (1, 2, 3):
        assert (await api.sell(producto_id, cantidad)).status == 201
    path = f"/api/v1/ventas?producto_id={producto_id}"
    reply = await api.call("GET", path, user="viewer")
    assert reply.status == 200
    assert reply.body["total"] == 3
    assert [item["cantidad"] for item in reply.body["items"]] == [3, 2, 1]
    page = await api.call("GET", f"{path}&limit=1&offset=1", user="viewer")
    assert [item["cantidad"] for item in page.body["items"]] == [2]
    everything = await api.call("GET", "/api/v1/ventas?limit=2", user="viewer")
    assert len(everything.body["items"]) == 2
    assert everything.body["total"] >= 3
    assert (await api.call("GET", "/api/v1/ventas?producto_id=x", user="viewer")).status == 400


async def _timed_sale(api: Api) -> tuple[int, float]:
    producto_id = await api.new_product(lots=((5, 30),))
    started = time.monotonic()
    reply = await api.sell(producto_id, 1)
    return reply.status, time.monotonic() - started


async def test_sale_succeeds_when_the_sidecar_is_down(
    api: Api, start: Callable[..., RunningApp]
) -> None:
    down = start(events_url=f"http://127.0.0.1:{free_port()}")
    status, _ = await _timed_sale(Api(api.http, down))
    assert status == 201
    assert "keeping events in the outbox" in await _wait_for_log(down, "keeping events")


async def test_sale_does_not_wait_for_a_hanging_sidecar(
    api: Api, start: Callable[..., RunningApp]
) -> None:
    hanging = EventSink(hang=True)
    try:
        app = start(events_url=hanging.url)
        status, elapsed = await _timed_sale(Api(api.http, app))
        assert status == 201
        # The events endpoint holds every request; a sale that waited would take >= 2 s.
        assert elapsed < 1.5
    finally:
        hanging.close()


async def _wait_for_log(app: RunningApp, needle: str) -> str:
    deadline = time.monotonic() + 5
    while needle not in (text := app.log_text()):
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.02)
    return text
