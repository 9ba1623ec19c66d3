"""Users: creation and lookup by username."""

from __future__ import annotations

import sqlite3
from typing import Any

from upstream_app.clock import utc_now_iso
from upstream_app.errors import ApiError


def create_user(
    conn: sqlite3.Connection, username: str, password_hash: str, role: str
) -> dict[str, Any]:
    """Insert a user; 409 when the username is taken."""
    try:
        cursor = conn.execute(
            "INSERT INTO usuarios (username, password_hash, role, creado_en) VALUES (?, ?, ?, ?)",
            (username, password_hash, role, utc_now_iso()),
        )
    except sqlite3.IntegrityError:
        raise ApiError(409, "username_taken", f"username {username!r} is taken") from None
    return {"usuario_id": cursor.lastrowid, "username": username, "role": role}


def find_user(conn: sqlite3.Connection, username: str) -> sqlite3.Row | None:
    """The user row (`usuario_id`, `password_hash`, `role`) or None."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT usuario_id, username, password_hash, role FROM usuarios WHERE username = ?",
        (username,),
    ).fetchone()
    return row
