"""The event shapes, exactly as the contract shows them."""

from __future__ import annotations

from upstream_app import payloads


def test_stock_bajo_shape() -> None:
    assert payloads.stock_bajo(123, "Omega 3", 5, 10) == {
        "type": "alert",
        "alert_type": "stock_bajo",
        "severity": "warning",
        "title": "Stock Bajo: Omega 3",
        "message": "Stock actual: 5 unidades. Minimo requerido: 10",
        "data": {"producto_id": 123, "stock_actual": 5, "umbral_min": 10},
    }


def _lot(days: int) -> dict[str, object]:
    return {
        "lote_id": 456,
        "producto_id": 12,
        "producto_nombre": "Omega 3",
        "cantidad": 30,
        "fecha_vencimiento": "2030-01-10",
        "dias_restantes": days,
    }


def test_proximo_vencer_severity_by_days() -> None:
    assert payloads.proximo_vencer(_lot(7))["severity"] == "warning"
    assert payloads.proximo_vencer(_lot(4))["severity"] == "warning"
    assert payloads.proximo_vencer(_lot(3))["severity"] == "critical"
    assert payloads.proximo_vencer(_lot(0))["severity"] == "critical"
    assert payloads.proximo_vencer(_lot(-2))["severity"] == "critical"


def test_proximo_vencer_shape() -> None:
    event = payloads.proximo_vencer(_lot(7))
    assert {k: event[k] for k in ("type", "alert_type")} == {
        "type": "alert",
        "alert_type": "producto_proximo_vencer",
    }
    assert event["title"] == "Producto Proximo a Vencer: Omega 3"
    assert "Lote 456 vence en 7 dias" in event["message"]
    assert event["data"]["lote_id"] == 456
    assert event["data"]["producto_id"] == 12
    assert event["data"]["dias_restantes"] == 7


def test_proximo_vencer_message_by_days() -> None:
    assert "vence en 1 dia (" in payloads.proximo_vencer(_lot(1))["message"]
    assert "vence hoy" in payloads.proximo_vencer(_lot(0))["message"]
    assert "vencio hace 2 dias" in payloads.proximo_vencer(_lot(-2))["message"]


def test_inventory_update_shape() -> None:
    data = {"cantidad": 3, "stock_anterior": 100, "stock_nuevo": 97}
    assert payloads.inventory_update("venta", 789, "Magnesio", data) == {
        "type": "inventory_update",
        "update_type": "venta",
        "producto_id": 789,
        "producto_nombre": "Magnesio",
        "data": data,
    }
