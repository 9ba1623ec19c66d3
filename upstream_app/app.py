"""Builds the aiohttp application and owns the lifecycle of its background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from upstream_app.alerts import AlertChecker, AnnounceThrottle
from upstream_app.chaos import ChaosState, chaos_middleware
from upstream_app.config import Settings
from upstream_app.db import Database
from upstream_app.errors import error_middleware
from upstream_app.events import EventPublisher
from upstream_app.handlers import alertas, auth, health, lotes, productos, reportes, ventas
from upstream_app.handlers import chaos as chaos_switch
from upstream_app.idempotency import idempotency_middleware
from upstream_app.keys import CHAOS, CHECKER, DATABASE, PUBLISHER, SETTINGS
from upstream_app.logs import request_id_middleware

_ROUTE_MODULES = (health, auth, productos, lotes, ventas, reportes, alertas, chaos_switch)


def build_app(settings: Settings) -> web.Application:
    """Wire the app for `settings`; the database must already exist (see `seed`)."""
    chaos_state = ChaosState()
    database = Database(settings.db_path)
    # Errors outermost, so injected chaos and handler failures share one JSON shape;
    # idempotency inside chaos, so a failure injected after the commit is never stored.
    app = web.Application(
        middlewares=[
            request_id_middleware,
            error_middleware,
            chaos_middleware(chaos_state),
            idempotency_middleware(database),
        ]
    )
    publisher = EventPublisher(
        settings.events_url, settings.events_token, database, outbox_max=settings.outbox_max
    )
    app[SETTINGS] = settings
    app[DATABASE] = database
    app[PUBLISHER] = publisher
    app[CHAOS] = chaos_state
    app[CHECKER] = AlertChecker(
        database,
        publisher,
        expiry_days=settings.expiry_days,
        throttle=AnnounceThrottle(settings.realert_interval),
    )
    for module in _ROUTE_MODULES:
        app.add_routes(module.routes)
    app.cleanup_ctx.append(_background_tasks)
    return app


async def _background_tasks(app: web.Application) -> AsyncIterator[None]:
    """Run the event sender and the periodic alert check for the app's lifetime."""
    publisher = app[PUBLISHER]
    await publisher.start()
    checks = asyncio.create_task(app[CHECKER].run_every(app[SETTINGS].check_interval))
    yield
    checks.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await checks
    await publisher.stop()
