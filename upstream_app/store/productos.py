"""Products; `stock` is never stored, it is the sum of the product's lots."""

from __future__ import annotations

import sqlite3
from typing import Any

from upstream_app.clock import utc_now_iso
from upstream_app.errors import ApiError, not_found
from upstream_app.validation import Page

# Columns a client may set; `update_product` builds SQL only from these names.
EDITABLE = ("nombre", "descripcion", "precio_centavos", "umbral_min")

_SELECT = """
SELECT p.producto_id, p.nombre, p.descripcion, p.precio_centavos, p.umbral_min,
       p.creado_en, p.actualizado_en,
       COALESCE((SELECT SUM(l.cantidad) FROM lotes l WHERE l.producto_id = p.producto_id), 0)
           AS stock
FROM productos p
"""


def to_dict(row: sqlite3.Row) -> dict[str, Any]:
    """The public shape of a product (prices are kept in cents, shown in units)."""
    return {
        "producto_id": row["producto_id"],
        "nombre": row["nombre"],
        "descripcion": row["descripcion"],
        "precio": row["precio_centavos"] / 100,
        "stock": row["stock"],
        "umbral_min": row["umbral_min"],
        "creado_en": row["creado_en"],
        "actualizado_en": row["actualizado_en"],
    }


def list_products(conn: sqlite3.Connection, page: Page) -> tuple[list[dict[str, Any]], int]:
    """One page of products by id, and how many there are in all."""
    rows = conn.execute(
        f"{_SELECT} ORDER BY p.producto_id LIMIT ? OFFSET ?", (page.limit, page.offset)
    ).fetchall()
    total = conn.execute("SELECT COUNT(*) FROM productos").fetchone()[0]
    return [to_dict(row) for row in rows], total


def get_product(conn: sqlite3.Connection, producto_id: int) -> dict[str, Any]:
    """One product; 404 when missing."""
    row = conn.execute(f"{_SELECT} WHERE p.producto_id = ?", (producto_id,)).fetchone()
    if row is None:
        raise not_found("producto", producto_id)
    return to_dict(row)


def low_stock(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Products whose stock is below their `umbral_min`."""
    rows = conn.execute(
        f"SELECT * FROM ({_SELECT}) WHERE stock < umbral_min ORDER BY producto_id"
    ).fetchall()
    return [to_dict(row) for row in rows]


def create_product(conn: sqlite3.Connection, fields: dict[str, Any]) -> dict[str, Any]:
    """Insert a product from the EDITABLE `fields`; 409 when the name is taken."""
    _check_editable(fields)
    now = utc_now_iso()
    values = {"descripcion": "", **fields, "creado_en": now, "actualizado_en": now}
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    try:
        cursor = conn.execute(
            f"INSERT INTO productos ({columns}) VALUES ({marks})", tuple(values.values())
        )
    except sqlite3.IntegrityError:
        raise _name_taken(fields["nombre"]) from None
    return get_product(conn, int(cursor.lastrowid or 0))


def update_product(
    conn: sqlite3.Connection, producto_id: int, changes: dict[str, Any]
) -> dict[str, Any]:
    """Apply EDITABLE `changes`; 404 when missing, 409 when the new name is taken."""
    _check_editable(changes)
    assignments = ", ".join(f"{column} = ?" for column in changes)
    try:
        cursor = conn.execute(
            f"UPDATE productos SET {assignments}, actualizado_en = ? WHERE producto_id = ?",
            (*changes.values(), utc_now_iso(), producto_id),
        )
    except sqlite3.IntegrityError:
        raise _name_taken(changes["nombre"]) from None
    if cursor.rowcount == 0:
        raise not_found("producto", producto_id)
    return get_product(conn, producto_id)


def _name_taken(nombre: str) -> ApiError:
    return ApiError(409, "nombre_taken", f"a product named {nombre!r} exists")


def _check_editable(fields: dict[str, Any]) -> None:
    """Column names are interpolated into SQL, so only known ones may get that far."""
    unknown = set(fields) - set(EDITABLE)
    if unknown or not fields:
        raise ValueError(f"not editable or empty: {sorted(unknown)}")
