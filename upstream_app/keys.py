"""Typed application keys for the objects handlers share."""

from __future__ import annotations

from aiohttp import web

from upstream_app.alerts import AlertChecker
from upstream_app.chaos import ChaosState
from upstream_app.config import Settings
from upstream_app.db import Database
from upstream_app.events import EventPublisher

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
PUBLISHER = web.AppKey("publisher", EventPublisher)
CHECKER = web.AppKey("checker", AlertChecker)
CHAOS = web.AppKey("chaos", ChaosState)
