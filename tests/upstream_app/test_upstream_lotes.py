"""Lots: staff add stock with an expiry date."""

from __future__ import annotations

import pytest
from upstream_harness import Api, EventSink, days_from_today


async def test_vendedor_adds_a_lot_and_event_is_published(api: Api, sink: EventSink) -> None:
    producto_id = await api.new_product(lots=((5, 90),))
    reply = await api.call(
        "POST",
        "/api/v1/lotes",
        user="vendedor",
        json_body={
            "producto_id": producto_id,
            "cantidad": 20,
            "fecha_vencimiento": days_from_today(60),
        },
    )
    assert reply.status == 201
    assert reply.body["cantidad"] == 20
    assert reply.body["stock"] == 25
    assert await api.stock(producto_id) == 25
    [event] = await sink.wait_for(
        lambda e: e.get("update_type") == "lote" and e["data"]["lote_id"] == reply.body["lote_id"]
    )
    assert event.body["producto_id"] == producto_id
    assert (event.body["data"]["stock_anterior"], event.body["data"]["stock_nuevo"]) == (5, 25)


@pytest.mark.parametrize(("days", "severity"), [(2, "critical"), (6, "warning")])
async def test_lot_near_expiry_publishes_proximo_vencer(
    api: Api, sink: EventSink, days: int, severity: str
) -> None:
    producto_id = await api.new_product()
    lote_id = await api.add_lot(producto_id, 4, days)
    [event] = await sink.wait_for(
        lambda e: (
            e.get("alert_type") == "producto_proximo_vencer" and e["data"]["lote_id"] == lote_id
        )
    )
    assert event.body["severity"] == severity
    assert event.body["data"]["producto_id"] == producto_id
    assert event.body["data"]["dias_restantes"] == days


async def test_viewer_cannot_add_lots(api: Api) -> None:
    reply = await api.call(
        "POST",
        "/api/v1/lotes",
        user="viewer",
        json_body={"producto_id": 1, "cantidad": 1, "fecha_vencimiento": days_from_today(30)},
    )
    assert reply.status == 403


@pytest.mark.parametrize(
    "body",
    [
        {"producto_id": 1, "cantidad": 0, "fecha_vencimiento": days_from_today(30)},
        {"producto_id": 1, "cantidad": 5, "fecha_vencimiento": "31/12/2030"},
        {"producto_id": 1, "cantidad": 5, "fecha_vencimiento": days_from_today(-1)},
        {"producto_id": 1, "cantidad": 5},
    ],
)
async def test_bad_lot_is_400(api: Api, body: dict[str, object]) -> None:
    reply = await api.call("POST", "/api/v1/lotes", user="admin", json_body=body)
    assert reply.status == 400


async def test_lot_for_unknown_product_is_404(api: Api) -> None:
    reply = await api.call(
        "POST",
        "/api/v1/lotes",
        user="admin",
        json_body={"producto_id": 999_999, "cantidad": 1, "fecha_vencimiento": days_from_today(9)},
    )
    assert reply.status == 404
