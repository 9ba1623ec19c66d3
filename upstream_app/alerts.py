"""Low-stock and expiry alerts: when they fire and how often they repeat.

A sale that takes stock below the threshold alerts at once. The periodic check (which also
runs at start) re-announces what is still low or expiring, at most once per
`realert_interval` per product or lot. The memory of past announcements lives in this
process, so a restart announces everything still pending once more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import date
from typing import Any, Protocol

from upstream_app import payloads
from upstream_app.clock import utc_today
from upstream_app.db import Database
from upstream_app.store.lotes import LotAdded, expiring
from upstream_app.store.productos import low_stock
from upstream_app.store.ventas import SaleRecorded

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where alerts go (`events.EventPublisher` in the app, a list in tests)."""

    def publish(self, event: dict[str, Any]) -> None:
        """Hand `event` over without waiting."""


class AnnounceThrottle:
    """Remembers when each alert key was last announced, with an injected clock."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        """True when `key` was never announced or not within the interval."""
        last = self._last.get(key)
        return last is None or self._clock() - last >= self._interval

    def mark(self, key: str) -> None:
        """Record that `key` has just been announced."""
        self._last[key] = self._clock()


class AlertChecker:
    """Finds what deserves an alert and hands it to the publisher."""

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        *,
        expiry_days: int,
        throttle: AnnounceThrottle,
        today: Callable[[], date] = utc_today,
    ) -> None:
        self._db = db
        self._publisher = publisher
        self._expiry_days = expiry_days
        self._throttle = throttle
        self._today = today

    async def check(self, *, force: bool = False) -> list[dict[str, Any]]:
        """Announce low stock and near expiry; `force` ignores the re-alert interval."""
        today = self._today()
        low, lots = await self._db.run(
            lambda conn: (low_stock(conn), expiring(conn, today, self._expiry_days))
        )
        pending = [(f"stock_bajo:{p['producto_id']}", _stock_bajo(p)) for p in low]
        pending += [(f"vencimiento:{lot['lote_id']}", payloads.proximo_vencer(lot)) for lot in lots]
        announced = []
        for key, event in pending:
            if force or self._throttle.due(key):
                self._announce(key, event)
                announced.append(event)
        return announced

    def sale_recorded(self, producto_id: int, sale: SaleRecorded) -> None:
        """Alert when this sale took the stock from >= threshold to below it."""
        if sale.stock_anterior >= sale.umbral_min > sale.stock_nuevo:
            event = payloads.stock_bajo(
                producto_id, sale.producto_nombre, sale.stock_nuevo, sale.umbral_min
            )
            self._announce(f"stock_bajo:{producto_id}", event)

    def lot_added(self, added: LotAdded) -> None:
        """Alert at once for a new lot that already expires within `expiry_days`."""
        vence = date.fromisoformat(added.lote["fecha_vencimiento"])
        days = (vence - self._today()).days
        if days <= self._expiry_days:
            lot = {**added.lote, "producto_nombre": added.producto_nombre, "dias_restantes": days}
            self._announce(f"vencimiento:{lot['lote_id']}", payloads.proximo_vencer(lot))

    async def run_every(self, interval: float) -> None:
        """Check now and then every `interval` seconds until cancelled."""
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("periodic alert check failed")
            await asyncio.sleep(interval)

    def _announce(self, key: str, event: dict[str, Any]) -> None:
        self._throttle.mark(key)
        self._publisher.publish(event)


def _stock_bajo(product: dict[str, Any]) -> dict[str, Any]:
    return payloads.stock_bajo(
        product["producto_id"], product["nombre"], product["stock"], product["umbral_min"]
    )
