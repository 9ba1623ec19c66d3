"""Fault injection for demos and tests, switched at run time through `/api/v1/_chaos`.

`error_rate` and `latency_ms` act before the handler, so an injected error wrote nothing.
`fail_after_commit_rate` lets the handler run (and commit) and then answers `status`
anyway: the case where a naive retry duplicates a sale. `/healthz` and `/api/v1/_chaos`
are never affected, so chaos can always be observed and switched off.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from upstream_app import validation
from upstream_app.errors import bad_request
from upstream_app.responses import error_response

EXEMPT_PATHS = frozenset({"/healthz", "/api/v1/_chaos"})
MAX_LATENCY_MS = 60_000


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    """The active faults; the defaults mean no chaos."""

    error_rate: float = 0.0
    status: int = 503
    latency_ms: float = 0.0
    fail_after_commit_rate: float = 0.0

    @property
    def active(self) -> bool:
        """True when any fault can happen."""
        return bool(self.error_rate or self.latency_ms or self.fail_after_commit_rate)

    def to_dict(self) -> dict[str, Any]:
        """The settings as the chaos endpoint answers them."""
        return asdict(self)


def parse_settings(body: dict[str, Any]) -> ChaosSettings:
    """Validate a chaos request body; absent keys take their defaults (`{}` = off)."""
    unknown = set(body) - set(ChaosSettings.__dataclass_fields__)
    if unknown:
        raise bad_request(f"unknown chaos settings: {', '.join(sorted(unknown))}")
    defaults = ChaosSettings()
    return ChaosSettings(
        error_rate=_rate(body, "error_rate"),
        status=(
            validation.integer(body, "status", minimum=400, maximum=599)
            if "status" in body
            else defaults.status
        ),
        latency_ms=(
            validation.number(body, "latency_ms", minimum=0, maximum=MAX_LATENCY_MS)
            if "latency_ms" in body
            else defaults.latency_ms
        ),
        fail_after_commit_rate=_rate(body, "fail_after_commit_rate"),
    )


def _rate(body: dict[str, Any], key: str) -> float:
    return validation.number(body, key, minimum=0, maximum=1) if key in body else 0.0


class ChaosState:
    """The settings in force (replaced whole on each change) and the dice."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.settings = ChaosSettings()
        self._rng = rng or random.Random()

    def roll(self, rate: float) -> bool:
        """True with probability `rate`."""
        return rate > 0 and self._rng.random() < rate


def chaos_middleware(state: ChaosState) -> Middleware:
    """Build the middleware that applies `state.settings` to every non-exempt request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        settings = state.settings
        if not settings.active or request.path in EXEMPT_PATHS:
            return await handler(request)
        if settings.latency_ms:
            await asyncio.sleep(settings.latency_ms / 1000)
        if state.roll(settings.error_rate):
            return _injected(settings.status, "before", "injected failure, nothing was done")
        response = await handler(request)
        if state.roll(settings.fail_after_commit_rate):
            return _injected(
                settings.status, "after-commit", "injected failure after the request was done"
            )
        return response

    return middleware


def _injected(status: int, stage: str, message: str) -> web.Response:
    return error_response(status, "chaos_injected", f"chaos: {message}", {"X-Chaos": stage})
