"""What the console reads: the route history, its sampler, and the overview document.

`GET /api/v1/resilience/overview` answers `overview()` (CONTRACT 13). Everything in it is
read from state kept anyway (breakers, the metrics' route counters, the hub's registry)
when it is asked for; the only thing running in the background is the 2 s sampler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from proxy.clock import SYSTEM_CLOCK, Clock
from proxy.console.series import RouteHistory, route_totals
from proxy.core.breaker import CircuitBreaker, iso_utc
from proxy.metrics import Metrics
from proxy.periodic import Periodic

log = logging.getLogger("proxy.console")


class ConsoleFeed:
    """The sampler task and the figures it keeps, for the overview endpoint."""

    def __init__(
        self,
        metrics: Metrics,
        in_flight: Callable[[], int],
        clock: Clock = SYSTEM_CLOCK,
        history: RouteHistory | None = None,
    ) -> None:
        self._metrics = metrics
        self._in_flight = in_flight
        self._clock = clock
        self.history = history or RouteHistory()
        self._sampling = Periodic(self.sample, self.history.interval_s, "console sampler", log)

    def sample(self) -> None:
        totals = route_totals(self._metrics.hot.series.values())
        self.history.sample(self._clock.monotonic(), self._clock.wall(), totals)

    def start(self) -> None:
        self.sample()  # the zero row: figures count from the start
        self._sampling.start()

    async def stop(self) -> None:
        await self._sampling.stop()

    def overview(
        self,
        breakers: dict[str, CircuitBreaker],
        route_names: Iterable[str],
        websocket_connections: int,
        policy: dict[str, Any],
    ) -> dict[str, Any]:
        totals = route_totals(self._metrics.hot.series.values())
        routes = self.history.summary(self._clock.monotonic(), totals, route_names)
        charts = self.history.charts()
        for name, figures in routes.items():
            figures["series"] = charts.get(name)
        return {
            "breakers": {name: b.stats() for name, b in sorted(breakers.items())},
            "routes": routes,
            "in_flight": self._in_flight(),
            "websocket_connections": websocket_connections,
            "policy": policy,
            "interval_s": self.history.interval_s,
            "server_time": iso_utc(self._clock.wall()),
        }
