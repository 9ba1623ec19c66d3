"""Reports and the on-demand alert check, on a fresh app whose only data is the seed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from upstream_harness import EVENTS_TOKEN, Api, EventSink, RunningApp, start_app


@pytest.fixture(scope="module")
def app(sink: EventSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """A fresh app: the seeded alerts and counts are known, whatever other modules do."""
    running = start_app(tmp_path_factory.mktemp("reports"), events_url=sink.url)
    yield running
    running.stop()


async def test_inventory_report_counts_the_seed(api: Api) -> None:
    reply = await api.call("GET", "/api/v1/reportes/inventario", user="vendedor")
    assert reply.status == 200
    report = reply.body
    assert report["stock_bajo"] == 4
    assert {p["nombre"] for p in report["productos_stock_bajo"]} == {
        "Zinc",
        "Colágeno",
        "Creatina",
        "Ashwagandha",
    }
    assert report["lotes_por_vencer"] == 5
    assert report["lotes_criticos"] == 3
    products = await api.call("GET", "/api/v1/productos", user="viewer")
    items = products.body["items"]
    assert report["productos"] == products.body["total"] >= 12
    assert report["unidades"] == sum(p["stock"] for p in items)
    assert report["valor_stock"] == pytest.approx(sum(p["stock"] * p["precio"] for p in items))


async def test_sales_report_aggregates_per_product(api: Api) -> None:
    before = (await api.call("GET", "/api/v1/reportes/ventas", user="admin")).body
    first = await api.new_product(lots=((50, 90),), precio=2.0)
    second = await api.new_product(lots=((50, 90),), precio=10.0)
    for producto_id, cantidad in ((first, 3), (first, 4), (second, 1)):
        assert (await api.sell(producto_id, cantidad)).status == 201
    after = (await api.call("GET", "/api/v1/reportes/ventas", user="vendedor")).body
    assert after["ventas"] - before["ventas"] == 3
    assert after["unidades"] - before["unidades"] == 8
    assert after["ingresos"] - before["ingresos"] == pytest.approx(24.0)
    rows = {p["producto_id"]: p for p in after["por_producto"]}
    assert (rows[first]["ventas"], rows[first]["unidades"], rows[first]["ingresos"]) == (2, 7, 14.0)
    assert (rows[second]["ventas"], rows[second]["unidades"], rows[second]["ingresos"]) == (
        1,
        1,
        10.0,
    )
    ranked = [p["producto_id"] for p in after["por_producto"]]
    assert ranked.index(first) < ranked.index(second)  # most units sold first


@pytest.mark.parametrize("path", ["/api/v1/reportes/ventas", "/api/v1/reportes/inventario"])
async def test_viewer_cannot_read_reports(api: Api, path: str) -> None:
    assert (await api.call("GET", path, user="viewer")).status == 403


async def test_startup_check_announced_the_seeded_alerts(sink: EventSink) -> None:
    # The start-up check's alerts are the first ones sent (an on-demand check adds more).
    low = (await sink.wait_for(lambda e: e.get("alert_type") == "stock_bajo", count=4))[:4]
    assert {e.body["title"] for e in low} == {
        "Stock Bajo: Zinc",
        "Stock Bajo: Colágeno",
        "Stock Bajo: Creatina",
        "Stock Bajo: Ashwagandha",
    }
    expiring = await sink.wait_for(
        lambda e: e.get("alert_type") == "producto_proximo_vencer", count=5
    )
    expiring = expiring[:5]
    severities = sorted(e.body["severity"] for e in expiring)
    assert severities == ["critical", "critical", "critical", "warning", "warning"]
    assert {e.authorization for e in low + expiring} == {f"Bearer {EVENTS_TOKEN}"}


async def test_alert_check_on_demand_announces_again(api: Api, sink: EventSink) -> None:
    await sink.wait_for(lambda e: e.get("alert_type") == "stock_bajo", count=4)
    reply = await api.call("POST", "/api/v1/alertas/check", user="admin")
    assert reply.status == 200
    assert reply.body["total"] == len(reply.body["items"]) >= 9
    await sink.wait_for(lambda e: e.get("alert_type") == "stock_bajo", count=8)


async def test_only_admin_runs_the_check(api: Api) -> None:
    assert (await api.call("POST", "/api/v1/alertas/check", user="vendedor")).status == 403
