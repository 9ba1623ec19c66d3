"""Sales: stock leaves first-expired-first-out (FEFO), all inside one write transaction."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from upstream_app.clock import utc_now_iso
from upstream_app.db import write_transaction
from upstream_app.errors import ApiError, not_found
from upstream_app.store.lotes import stock_of
from upstream_app.validation import Page


@dataclass(frozen=True, slots=True)
class SaleRecorded:
    """What a sale changed, for the response and the events it triggers."""

    venta: dict[str, Any]
    producto_nombre: str
    umbral_min: int
    stock_anterior: int
    stock_nuevo: int


_SELECT = """
SELECT v.venta_id, v.producto_id, p.nombre AS producto_nombre, v.usuario_id, v.cantidad,
       v.precio_unitario_centavos, v.creado_en
FROM ventas v JOIN productos p ON p.producto_id = v.producto_id
"""


def record_sale(
    conn: sqlite3.Connection, producto_id: int, cantidad: int, usuario_id: str
) -> SaleRecorded:
    """Sell `cantidad` units; 404 for an unknown product, 409 when stock is short.

    The stock check and the lot updates happen under one `BEGIN IMMEDIATE`, so concurrent
    sales are serialised by SQLite and can never oversell.
    """
    with write_transaction(conn):
        product = conn.execute(
            "SELECT nombre, precio_centavos, umbral_min FROM productos WHERE producto_id = ?",
            (producto_id,),
        ).fetchone()
        if product is None:
            raise not_found("producto", producto_id)
        before = stock_of(conn, producto_id)
        if before < cantidad:
            raise ApiError(
                409, "insufficient_stock", f"stock is {before}, {cantidad} units were requested"
            )
        cursor = conn.execute(
            "INSERT INTO ventas (producto_id, usuario_id, cantidad, precio_unitario_centavos,"
            " creado_en) VALUES (?, ?, ?, ?, ?)",
            (producto_id, usuario_id, cantidad, product["precio_centavos"], utc_now_iso()),
        )
        venta_id = int(cursor.lastrowid or 0)
        taken = _take_fefo(conn, venta_id, producto_id, cantidad)
        row = conn.execute(f"{_SELECT} WHERE v.venta_id = ?", (venta_id,)).fetchone()
    venta = {**_to_dict(row), "lotes": taken}
    return SaleRecorded(venta, product["nombre"], product["umbral_min"], before, before - cantidad)


def _take_fefo(
    conn: sqlite3.Connection, venta_id: int, producto_id: int, cantidad: int
) -> list[dict[str, int]]:
    """Empty the lots that expire first; ties go to the older lot."""
    lots = conn.execute(
        "SELECT lote_id, cantidad FROM lotes WHERE producto_id = ? AND cantidad > 0"
        " ORDER BY fecha_vencimiento, lote_id",
        (producto_id,),
    ).fetchall()
    taken: list[dict[str, int]] = []
    remaining = cantidad
    for lot in lots:
        if remaining == 0:
            break
        units = min(remaining, lot["cantidad"])
        conn.execute(
            "UPDATE lotes SET cantidad = cantidad - ? WHERE lote_id = ?", (units, lot["lote_id"])
        )
        conn.execute(
            "INSERT INTO venta_lotes (venta_id, lote_id, cantidad) VALUES (?, ?, ?)",
            (venta_id, lot["lote_id"], units),
        )
        taken.append({"lote_id": lot["lote_id"], "cantidad": units})
        remaining -= units
    return taken


def list_sales(
    conn: sqlite3.Connection, page: Page, producto_id: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """One page of sales (of one product if given), newest first, and how many match."""
    where, args = ("WHERE v.producto_id = ?", (producto_id,)) if producto_id else ("", ())
    rows = conn.execute(
        f"{_SELECT} {where} ORDER BY v.venta_id DESC LIMIT ? OFFSET ?",
        (*args, page.limit, page.offset),
    ).fetchall()
    total = conn.execute(f"SELECT COUNT(*) FROM ventas v {where}", args).fetchone()[0]
    return [_to_dict(row) for row in rows], total


def _to_dict(row: sqlite3.Row) -> dict[str, Any]:
    cents = row["precio_unitario_centavos"]
    return {
        "venta_id": row["venta_id"],
        "producto_id": row["producto_id"],
        "producto_nombre": row["producto_nombre"],
        "usuario_id": row["usuario_id"],
        "cantidad": row["cantidad"],
        "precio_unitario": cents / 100,
        "total": cents * row["cantidad"] / 100,
        "creado_en": row["creado_en"],
    }
