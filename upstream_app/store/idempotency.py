"""Answers kept per (user, Idempotency-Key), so a repeated request gets the first answer."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from upstream_app.db import write_transaction

DONE_UNANSWERED = 0
"""`status` of a claim: the work committed, its answer not stored yet (or lost in a crash)."""


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The first answer given to a key, and the fingerprint of the request that got it."""

    fingerprint: str
    status: int
    headers: dict[str, str]
    body: bytes


def claim(
    conn: sqlite3.Connection, usuario_id: str, key: str, fingerprint: str, now: float
) -> None:
    """Record, inside the work's own transaction, that the work for `key` is committed."""
    conn.execute(
        "INSERT OR REPLACE INTO idempotency_keys"
        " (usuario_id, clave, huella, status, headers, body, creado_en)"
        " VALUES (?, ?, ?, ?, '{}', x'', ?)",
        (usuario_id, key, fingerprint, DONE_UNANSWERED, now),
    )


def find_answer(
    conn: sqlite3.Connection, usuario_id: str, key: str, not_before: float
) -> StoredAnswer | None:
    """The answer stored for `key` at or after `not_before` (unix seconds), if any."""
    row = conn.execute(
        "SELECT huella, status, headers, body FROM idempotency_keys"
        " WHERE usuario_id = ? AND clave = ? AND creado_en >= ?",
        (usuario_id, key, not_before),
    ).fetchone()
    if row is None:
        return None
    return StoredAnswer(row["huella"], row["status"], json.loads(row["headers"]), row["body"])


def store_answer(
    conn: sqlite3.Connection,
    usuario_id: str,
    key: str,
    answer: StoredAnswer,
    now: float,
    not_before: float,
) -> None:
    """Keep `answer` for `key` (replacing an expired one) and forget answers older than kept."""
    with write_transaction(conn):
        conn.execute("DELETE FROM idempotency_keys WHERE creado_en < ?", (not_before,))
        conn.execute(
            "INSERT OR REPLACE INTO idempotency_keys"
            " (usuario_id, clave, huella, status, headers, body, creado_en)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                usuario_id,
                key,
                answer.fingerprint,
                answer.status,
                json.dumps(answer.headers),
                answer.body,
                now,
            ),
        )
