"""Lots (lotes): stock arrives as lots, each with its own expiry date."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from upstream_app.clock import utc_now_iso
from upstream_app.db import write_transaction
from upstream_app.errors import not_found

CRITICAL_DAYS = 3  # a lot this close to expiry (or past it) is a critical alert


@dataclass(frozen=True, slots=True)
class LotAdded:
    """What adding a lot changed, for the response and the `inventory_update` event."""

    lote: dict[str, Any]
    producto_nombre: str
    stock_anterior: int
    stock_nuevo: int


def to_dict(row: sqlite3.Row) -> dict[str, Any]:
    """The public shape of a lot."""
    return {
        "lote_id": row["lote_id"],
        "producto_id": row["producto_id"],
        "cantidad": row["cantidad"],
        "cantidad_inicial": row["cantidad_inicial"],
        "fecha_vencimiento": row["fecha_vencimiento"],
        "creado_en": row["creado_en"],
    }


def add_lot(conn: sqlite3.Connection, producto_id: int, cantidad: int, vence: date) -> LotAdded:
    """Insert a lot for an existing product; 404 when the product is missing."""
    with write_transaction(conn):
        product = conn.execute(
            "SELECT nombre FROM productos WHERE producto_id = ?", (producto_id,)
        ).fetchone()
        if product is None:
            raise not_found("producto", producto_id)
        before = stock_of(conn, producto_id)
        cursor = conn.execute(
            "INSERT INTO lotes (producto_id, cantidad_inicial, cantidad, fecha_vencimiento,"
            " creado_en) VALUES (?, ?, ?, ?, ?)",
            (producto_id, cantidad, cantidad, vence.isoformat(), utc_now_iso()),
        )
        row = conn.execute("SELECT * FROM lotes WHERE lote_id = ?", (cursor.lastrowid,)).fetchone()
    return LotAdded(to_dict(row), product["nombre"], before, before + cantidad)


def stock_of(conn: sqlite3.Connection, producto_id: int) -> int:
    """The product's stock: the sum of its lots."""
    total: int = conn.execute(
        "SELECT COALESCE(SUM(cantidad), 0) FROM lotes WHERE producto_id = ?", (producto_id,)
    ).fetchone()[0]
    return total


def lots_of(conn: sqlite3.Connection, producto_id: int) -> list[dict[str, Any]]:
    """The product's lots with units left, first to expire first."""
    rows = conn.execute(
        "SELECT * FROM lotes WHERE producto_id = ? AND cantidad > 0"
        " ORDER BY fecha_vencimiento, lote_id",
        (producto_id,),
    ).fetchall()
    return [to_dict(row) for row in rows]


def expiring(conn: sqlite3.Connection, today: date, within_days: int) -> list[dict[str, Any]]:
    """Lots with units left that expire within `within_days` of `today` (or already did).

    Each carries `producto_nombre` and `dias_restantes` (negative once expired).
    """
    limit = (today + timedelta(days=within_days)).isoformat()
    rows = conn.execute(
        "SELECT l.*, p.nombre AS producto_nombre FROM lotes l"
        " JOIN productos p ON p.producto_id = l.producto_id"
        " WHERE l.cantidad > 0 AND l.fecha_vencimiento <= ?"
        " ORDER BY l.fecha_vencimiento, l.lote_id",
        (limit,),
    ).fetchall()
    return [
        {
            **to_dict(row),
            "producto_nombre": row["producto_nombre"],
            "dias_restantes": (date.fromisoformat(row["fecha_vencimiento"]) - today).days,
        }
        for row in rows
    ]
