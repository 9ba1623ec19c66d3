"""The shapes of the events the app publishes; the sidecar and the front end rely on them."""

from __future__ import annotations

from typing import Any

from upstream_app.store.lotes import CRITICAL_DAYS


def stock_bajo(producto_id: int, nombre: str, stock: int, umbral_min: int) -> dict[str, Any]:
    """A product's stock is below its threshold."""
    return {
        "type": "alert",
        "alert_type": "stock_bajo",
        "severity": "warning",
        "title": f"Stock Bajo: {nombre}",
        "message": f"Stock actual: {stock} unidades. Minimo requerido: {umbral_min}",
        "data": {"producto_id": producto_id, "stock_actual": stock, "umbral_min": umbral_min},
    }


def proximo_vencer(lot: dict[str, Any]) -> dict[str, Any]:
    """A lot with units left expires soon (critical within CRITICAL_DAYS, or once expired).

    `lot` is a row from `store.lotes.expiring`.
    """
    days = lot["dias_restantes"]
    if days < 0:
        when = f"vencio hace {_dias(-days)}"
    elif days == 0:
        when = "vence hoy"
    else:
        when = f"vence en {_dias(days)}"
    return {
        "type": "alert",
        "alert_type": "producto_proximo_vencer",
        "severity": "critical" if days <= CRITICAL_DAYS else "warning",
        "title": f"Producto Proximo a Vencer: {lot['producto_nombre']}",
        "message": (
            f"Lote {lot['lote_id']} {when} ({lot['fecha_vencimiento']}). "
            f"Cantidad: {lot['cantidad']} unidades"
        ),
        "data": {
            "lote_id": lot["lote_id"],
            "producto_id": lot["producto_id"],
            "dias_restantes": days,
            "fecha_vencimiento": lot["fecha_vencimiento"],
            "cantidad": lot["cantidad"],
        },
    }


def inventory_update(
    update_type: str, producto_id: int, nombre: str, data: dict[str, Any]
) -> dict[str, Any]:
    """Stock or catalogue changed: `update_type` is `venta`, `lote` or `producto`."""
    return {
        "type": "inventory_update",
        "update_type": update_type,
        "producto_id": producto_id,
        "producto_nombre": nombre,
        "data": data,
    }


def _dias(count: int) -> str:
    return "1 dia" if count == 1 else f"{count} dias"
