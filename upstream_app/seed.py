"""Demo data written on first start: three users and a dozen supplements with lots.

Expiry dates are relative to the first start, so a fresh database always shows a few lots
about to expire and a few products below their threshold.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from upstream_app.clock import utc_now_iso, utc_today
from upstream_app.db import connect, create_schema_once
from upstream_app.passwords import hash_password

USERS = (("admin", "admin"), ("vendedor", "vendedor"), ("viewer", "viewer"))


@dataclass(frozen=True, slots=True)
class DemoProduct:
    """A seeded product; each lot is `(cantidad, days until it expires)`."""

    nombre: str
    descripcion: str
    precio_centavos: int
    umbral_min: int
    lotes: tuple[tuple[int, int], ...]


PRODUCTS = (
    DemoProduct("Omega 3", "Aceite de pescado 1000 mg, 60 cápsulas", 1890, 10, ((3, 2), (40, 180))),
    DemoProduct(
        "Vitamina C", "Ácido ascórbico 1000 mg, 100 tabletas", 950, 15, ((20, 5), (60, 240))
    ),
    DemoProduct("Magnesio", "Citrato de magnesio 400 mg, 90 cápsulas", 1400, 10, ((100, 300),)),
    DemoProduct("Zinc", "Gluconato de zinc 50 mg, 100 tabletas", 790, 10, ((4, 120),)),
    DemoProduct("Colágeno", "Colágeno hidrolizado en polvo, 300 g", 2450, 15, ((6, 1), (3, 90))),
    DemoProduct(
        "Vitamina D3", "Colecalciferol 5000 UI, 120 cápsulas", 1120, 12, ((50, 6), (30, 365))
    ),
    DemoProduct("Proteína Whey", "Proteína de suero sabor vainilla, 1 kg", 4500, 5, ((25, 200),)),
    DemoProduct("Creatina", "Creatina monohidratada, 300 g", 2990, 8, ((5, 400),)),
    DemoProduct("Melatonina", "Melatonina 3 mg, 60 tabletas", 875, 10, ((35, 3),)),
    DemoProduct("Probióticos", "10 cepas, 30 cápsulas", 2130, 10, ((18, 45), (12, 60))),
    DemoProduct("Hierro", "Bisglicinato de hierro 25 mg, 90 cápsulas", 640, 10, ((80, 500),)),
    DemoProduct("Ashwagandha", "Extracto de raíz 600 mg, 60 cápsulas", 1680, 6, ((2, 150),)),
)


def prepare_database(path: Path, seed_password: str) -> bool:
    """Create and seed the database if it is new; True when this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        return create_schema_once(conn, lambda c: _populate(c, seed_password))
    finally:
        conn.close()


def _populate(conn: sqlite3.Connection, seed_password: str) -> None:
    now = utc_now_iso()
    today = utc_today()
    for username, role in USERS:
        conn.execute(
            "INSERT INTO usuarios (username, password_hash, role, creado_en) VALUES (?, ?, ?, ?)",
            (username, hash_password(seed_password), role, now),
        )
    for product in PRODUCTS:
        cursor = conn.execute(
            "INSERT INTO productos (nombre, descripcion, precio_centavos, umbral_min,"
            " creado_en, actualizado_en) VALUES (?, ?, ?, ?, ?, ?)",
            (
                product.nombre,
                product.descripcion,
                product.precio_centavos,
                product.umbral_min,
                now,
                now,
            ),
        )
        for cantidad, days in product.lotes:
            conn.execute(
                "INSERT INTO lotes (producto_id, cantidad_inicial, cantidad, fecha_vencimiento,"
                " creado_en) VALUES (?, ?, ?, ?, ?)",
                (
                    cursor.lastrowid,
                    cantidad,
                    cantidad,
                    (today + timedelta(days=days)).isoformat(),
                    now,
                ),
            )
