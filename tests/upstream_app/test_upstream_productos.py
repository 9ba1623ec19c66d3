"""Products: reading for everyone, writing for admins, list pagination."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from upstream_harness import Api, EventSink, RunningApp

SEED_NAMES = {"Omega 3", "Vitamina C", "Magnesio", "Zinc", "Colágeno", "Melatonina"}


async def test_list_has_the_seeded_supplements(api: Api) -> None:
    reply = await api.call("GET", "/api/v1/productos?limit=12", user="viewer")
    assert reply.status == 200
    assert reply.body["total"] >= 12
    names = {item["nombre"] for item in reply.body["items"]}
    assert names >= SEED_NAMES
    for item in reply.body["items"]:
        assert {"producto_id", "nombre", "precio", "stock", "umbral_min"} <= set(item)
    zinc = next(item for item in reply.body["items"] if item["nombre"] == "Zinc")
    assert zinc["stock"] < zinc["umbral_min"]


async def test_offset_pages_do_not_overlap(api: Api) -> None:
    first = await api.call("GET", "/api/v1/productos?limit=5", user="viewer")
    second = await api.call("GET", "/api/v1/productos?limit=5&offset=5", user="viewer")
    ids_first = [item["producto_id"] for item in first.body["items"]]
    ids_second = [item["producto_id"] for item in second.body["items"]]
    assert len(ids_first) == len(ids_second) == 5
    assert max(ids_first) < min(ids_second)
    assert first.body["total"] == second.body["total"]


async def test_limit_defaults_to_50_and_caps_at_500(api: Api, app: RunningApp) -> None:
    # Rows written straight into the app's database: 600 POSTs would only slow the suite.
    with sqlite3.connect(app.db) as conn:
        conn.executemany(
            "INSERT INTO productos (nombre, precio_centavos, umbral_min, creado_en,"
            " actualizado_en) VALUES (?, 100, 0, '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z')",
            [(f"Bulk {uuid.uuid4()}",) for _ in range(600)],
        )
    default = await api.call("GET", "/api/v1/productos", user="viewer")
    assert len(default.body["items"]) == 50
    assert default.body["total"] >= 612
    capped = await api.call("GET", "/api/v1/productos?limit=10000", user="viewer")
    assert len(capped.body["items"]) == 500
    tail = await api.call(
        "GET", f"/api/v1/productos?offset={default.body['total'] - 3}", user="viewer"
    )
    assert len(tail.body["items"]) == 3


@pytest.mark.parametrize(
    "query", ["limit=-1", "limit=abc", "offset=-5", "limit=1.5", f"offset={2**64}"]
)
async def test_bad_pagination_is_400(api: Api, query: str) -> None:
    reply = await api.call("GET", f"/api/v1/productos?{query}", user="viewer")
    assert reply.status == 400


async def test_get_one_with_its_lots(api: Api) -> None:
    producto_id = await api.new_product(lots=((5, 30), (7, 10)), umbral_min=3, precio=12.34)
    reply = await api.call("GET", f"/api/v1/productos/{producto_id}", user="viewer")
    assert reply.status == 200
    assert reply.body["stock"] == 12
    assert reply.body["precio"] == 12.34
    assert reply.body["umbral_min"] == 3
    assert [lot["cantidad"] for lot in reply.body["lotes"]] == [7, 5]  # first to expire first


@pytest.mark.parametrize(
    "path", ["/api/v1/productos/999999", "/api/v1/productos/99999999999999999999"]
)
async def test_missing_product_is_404(api: Api, path: str) -> None:
    reply = await api.call("GET", path, user="viewer")
    assert reply.status == 404
    assert set(reply.body) == {"error", "message"}


async def test_admin_creates_and_event_is_published(api: Api, sink: EventSink) -> None:
    nombre = f"Espirulina {uuid.uuid4()}"
    reply = await api.call(
        "POST",
        "/api/v1/productos",
        user="admin",
        json_body={"nombre": nombre, "precio": 19.9, "umbral_min": 4, "descripcion": "polvo"},
    )
    assert reply.status == 201
    assert reply.body["stock"] == 0
    assert reply.body["descripcion"] == "polvo"
    producto_id = reply.body["producto_id"]
    [event] = await sink.wait_for(
        lambda e: e["type"] == "inventory_update" and e["producto_id"] == producto_id
    )
    assert event.body["update_type"] == "producto"
    assert event.body["producto_nombre"] == nombre


async def test_vendedor_cannot_create(api: Api) -> None:
    reply = await api.call(
        "POST", "/api/v1/productos", user="vendedor", json_body={"nombre": "X", "precio": 1}
    )
    assert reply.status == 403


async def test_duplicate_name_is_409(api: Api) -> None:
    reply = await api.call(
        "POST", "/api/v1/productos", user="admin", json_body={"nombre": "Zinc", "precio": 1}
    )
    assert reply.status == 409


@pytest.mark.parametrize(
    "body",
    [{"precio": 1}, {"nombre": "", "precio": 1}, {"nombre": "Y", "precio": -1}, {"nombre": "Y"}],
)
async def test_bad_product_is_400(api: Api, body: dict[str, object]) -> None:
    reply = await api.call("POST", "/api/v1/productos", user="admin", json_body=body)
    assert reply.status == 400


async def test_admin_updates_and_event_is_published(api: Api, sink: EventSink) -> None:
    producto_id = await api.new_product(lots=((8, 60),))
    reply = await api.call(
        "PUT",
        f"/api/v1/productos/{producto_id}",
        user="admin",
        json_body={"precio": 7.5, "umbral_min": 9},
    )
    assert reply.status == 200
    assert (reply.body["precio"], reply.body["umbral_min"], reply.body["stock"]) == (7.5, 9, 8)
    await sink.wait_for(
        lambda e: (
            e.get("update_type") == "producto"
            and e["producto_id"] == producto_id
            and e["data"]["accion"] == "actualizado"
        )
    )
    again = await api.call("GET", f"/api/v1/productos/{producto_id}", user="viewer")
    assert again.body["precio"] == 7.5


async def test_update_rules(api: Api) -> None:
    producto_id = await api.new_product()
    path = f"/api/v1/productos/{producto_id}"
    assert (await api.call("PUT", path, user="vendedor", json_body={"precio": 1})).status == 403
    assert (await api.call("PUT", path, user="admin", json_body={})).status == 400
    assert (await api.call("PUT", path, user="admin", json_body={"nombre": "Zinc"})).status == 409
    missing = await api.call(
        "PUT", "/api/v1/productos/999999", user="admin", json_body={"precio": 1}
    )
    assert missing.status == 404
