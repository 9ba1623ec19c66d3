"""The outbox: events the sidecar has not taken yet, oldest first, bounded."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from upstream_app.db import write_transaction


def append(conn: sqlite3.Connection, events: Sequence[dict[str, Any]], limit: int) -> int:
    """Add `events` after those waiting; drop the oldest past `limit`. Returns how many."""
    with write_transaction(conn):
        conn.executemany(
            "INSERT INTO outbox (event) VALUES (?)",
            [(json.dumps(event, ensure_ascii=False),) for event in events],
        )
        waiting: int = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        excess = max(0, waiting - limit)
        if excess:
            conn.execute(
                "DELETE FROM outbox WHERE outbox_id IN"
                " (SELECT outbox_id FROM outbox ORDER BY outbox_id LIMIT ?)",
                (excess,),
            )
    return excess


def oldest(conn: sqlite3.Connection, count: int) -> list[tuple[int, dict[str, Any]]]:
    """Up to `count` waiting events, oldest first, with their outbox ids."""
    rows = conn.execute(
        "SELECT outbox_id, event FROM outbox ORDER BY outbox_id LIMIT ?", (count,)
    ).fetchall()
    return [(row["outbox_id"], json.loads(row["event"])) for row in rows]


def remove_through(conn: sqlite3.Connection, outbox_id: int) -> None:
    """Forget every event up to and including `outbox_id` (they were delivered)."""
    conn.execute("DELETE FROM outbox WHERE outbox_id <= ?", (outbox_id,))


def waiting(conn: sqlite3.Connection) -> int:
    """How many events wait."""
    count: int = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    return count
