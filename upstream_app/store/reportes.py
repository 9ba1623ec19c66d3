"""Aggregate reports over sales and inventory."""

from __future__ import annotations

import sqlite3
from datetime import date
from typing import Any

from upstream_app.store.lotes import CRITICAL_DAYS, expiring
from upstream_app.store.productos import low_stock


def sales_report(conn: sqlite3.Connection) -> dict[str, Any]:
    """Sales, units and revenue in all and per product (best sellers first)."""
    rows = conn.execute(
        "SELECT v.producto_id, p.nombre, COUNT(*) AS ventas, SUM(v.cantidad) AS unidades,"
        " SUM(v.cantidad * v.precio_unitario_centavos) AS centavos"
        " FROM ventas v JOIN productos p ON p.producto_id = v.producto_id"
        " GROUP BY v.producto_id ORDER BY unidades DESC, v.producto_id"
    ).fetchall()
    per_product = [
        {
            "producto_id": row["producto_id"],
            "nombre": row["nombre"],
            "ventas": row["ventas"],
            "unidades": row["unidades"],
            "ingresos": row["centavos"] / 100,
        }
        for row in rows
    ]
    return {
        "ventas": sum(item["ventas"] for item in per_product),
        "unidades": sum(item["unidades"] for item in per_product),
        "ingresos": sum(row["centavos"] for row in rows) / 100,
        "por_producto": per_product,
    }


def inventory_report(conn: sqlite3.Connection, today: date, expiry_days: int) -> dict[str, Any]:
    """Stock units and value, products below threshold, lots near expiry."""
    totals = conn.execute(
        "SELECT COUNT(*) AS productos, COALESCE(SUM(stock), 0) AS unidades,"
        " COALESCE(SUM(stock * precio_centavos), 0) AS centavos"
        " FROM (SELECT p.precio_centavos, (SELECT COALESCE(SUM(l.cantidad), 0) FROM lotes l"
        "       WHERE l.producto_id = p.producto_id) AS stock FROM productos p)"
    ).fetchone()
    low = low_stock(conn)
    lots = expiring(conn, today, expiry_days)
    return {
        "productos": totals["productos"],
        "unidades": totals["unidades"],
        "valor_stock": totals["centavos"] / 100,
        "stock_bajo": len(low),
        "lotes_por_vencer": len(lots),
        "lotes_criticos": sum(1 for lot in lots if lot["dias_restantes"] <= CRITICAL_DAYS),
        "dias_vencimiento": expiry_days,
        "productos_stock_bajo": low,
        "lotes_proximos_vencer": lots,
    }
