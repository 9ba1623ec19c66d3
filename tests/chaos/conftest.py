"""Chaos scenarios (CONTRACT 14 and 9): faults injected under realistic load through the
real sidecar, the real inventory app and a real redis-server.

Each scenario adds a row (errors by kind, duplicated sales, time back to normal) to a
table printed at the end of the session (`pytest tests/chaos -s`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chaos_load import SALE_PRODUCT
from tests.support.chaos_report import Row, format_table
from tests.support.inventory_app import InventoryApp

RESTOCK_UNITS = 100_000
"""Enough stock that no scenario's sale is refused for want of it."""


@pytest.fixture(scope="session")
def chaos_table() -> Iterator[list[Row]]:
    rows: list[Row] = []
    yield rows
    if rows:
        print("\n\nChaos scenarios\n" + format_table(rows))


@pytest.fixture
def inventory(tmp_path: Path) -> Iterator[InventoryApp]:
    """The inventory app on a fixed port (so it can be killed and restarted), restocked."""
    app = InventoryApp(tmp_path / "inventory.db")
    app.start()
    try:
        app.admin_post("/api/v1/lotes", {
            "producto_id": SALE_PRODUCT, "cantidad": RESTOCK_UNITS,
            "fecha_vencimiento": "2099-12-31",
        })  # fmt: skip
        yield app
    finally:
        app.stop()
