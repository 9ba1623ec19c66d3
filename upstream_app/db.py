"""SQLite access: the schema, one short-lived connection per unit of work, run in a thread.

A fresh connection per call keeps threads from sharing a connection; WAL lets readers run
beside the single writer, and `BEGIN IMMEDIATE` takes the write lock up front so two
concurrent sales can never both read the same stock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SCHEMA_VERSION = 2
_BUSY_TIMEOUT_S = 30.0

SCHEMA = """
CREATE TABLE usuarios (
    usuario_id    INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'vendedor', 'viewer')),
    creado_en     TEXT NOT NULL
);
CREATE TABLE productos (
    producto_id     INTEGER PRIMARY KEY,
    nombre          TEXT NOT NULL UNIQUE,
    descripcion     TEXT NOT NULL DEFAULT '',
    precio_centavos INTEGER NOT NULL CHECK (precio_centavos >= 0),
    umbral_min      INTEGER NOT NULL CHECK (umbral_min >= 0),
    creado_en       TEXT NOT NULL,
    actualizado_en  TEXT NOT NULL
);
CREATE TABLE lotes (
    lote_id           INTEGER PRIMARY KEY,
    producto_id       INTEGER NOT NULL REFERENCES productos (producto_id),
    cantidad_inicial  INTEGER NOT NULL CHECK (cantidad_inicial > 0),
    cantidad          INTEGER NOT NULL CHECK (cantidad >= 0),
    fecha_vencimiento TEXT NOT NULL,
    creado_en         TEXT NOT NULL
);
CREATE INDEX lotes_fefo ON lotes (producto_id, fecha_vencimiento, lote_id);
CREATE TABLE ventas (
    venta_id                 INTEGER PRIMARY KEY,
    producto_id              INTEGER NOT NULL REFERENCES productos (producto_id),
    usuario_id               TEXT NOT NULL,
    cantidad                 INTEGER NOT NULL CHECK (cantidad > 0),
    precio_unitario_centavos INTEGER NOT NULL,
    creado_en                TEXT NOT NULL
);
CREATE INDEX ventas_producto ON ventas (producto_id);
CREATE TABLE venta_lotes (
    venta_id INTEGER NOT NULL REFERENCES ventas (venta_id),
    lote_id  INTEGER NOT NULL REFERENCES lotes (lote_id),
    cantidad INTEGER NOT NULL CHECK (cantidad > 0),
    PRIMARY KEY (venta_id, lote_id)
);
"""

# Version 2: answers kept for Idempotency-Key, and events waiting for the sidecar.
SCHEMA_V2 = """
CREATE TABLE idempotency_keys (
    usuario_id   TEXT NOT NULL,
    clave        TEXT NOT NULL,
    huella       TEXT NOT NULL,
    status       INTEGER NOT NULL,
    headers      TEXT NOT NULL,
    body         BLOB NOT NULL,
    creado_en    REAL NOT NULL,
    PRIMARY KEY (usuario_id, clave)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (creado_en);
CREATE TABLE outbox (
    outbox_id INTEGER PRIMARY KEY,
    event     TEXT NOT NULL
);
"""

MIGRATIONS = (SCHEMA, SCHEMA_V2)
"""Schema version N is reached by running MIGRATIONS[N - 1] on version N - 1."""


def connect(path: Path) -> sqlite3.Connection:
    """Open a connection in autocommit mode; transactions are always explicit."""
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


BEFORE_COMMIT: ContextVar[Callable[[sqlite3.Connection], None] | None] = ContextVar(
    "before_commit", default=None
)
"""Writes joined to every write transaction run in this context (a request's), so they
commit or roll back with its work: the Idempotency-Key claim (`idempotency.py`).
`Database.run` reaches it in its worker thread: `asyncio.to_thread` copies the context."""


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Hold the database write lock from the first read to the commit."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        joined = BEFORE_COMMIT.get()
        if joined is not None:
            joined(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_schema_once(
    conn: sqlite3.Connection, populate: Callable[[sqlite3.Connection], None]
) -> bool:
    """Bring the schema to SCHEMA_VERSION; on a fresh file, also run `populate`.

    Returns True when this call created the database. Everything happens in one
    transaction: a crash midway leaves the file as it was, never half-migrated or
    half-seeded. (`executescript` would commit early, hence one statement at a time.)
    """
    conn.execute("PRAGMA journal_mode = WAL")
    with write_transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return False
        for script in MIGRATIONS[version:]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version == 0 and script is SCHEMA:
                populate(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return version == 0


class Database:
    """Runs blocking SQLite work off the event loop, one connection per call."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` in a worker thread and close the connection afterwards."""
        return await asyncio.to_thread(self._run_sync, work)

    def _run_sync(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = connect(self.path)
        try:
            return work(conn)
        finally:
            conn.close()
