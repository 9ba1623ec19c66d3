"""Per-route series of the last 5 minutes, read from counters the request path keeps anyway.

The request path already counts every answer by route and status code, and its latency in
histogram buckets (`proxy.metrics.RouteSeries`). A sampler copies those cumulative counts
every `interval` seconds into a fixed ring per route (one `array('q')` of `slots` rows, so
memory is bounded: 151 rows x 19 counters x 8 bytes = 23 KiB per route, plus 6 KiB of
chart points); requests/s, 4xx/5xx shares and p50/p99 are differences of two rows: each
interval's once, when its sample is taken (the charts), and the whole window's when
someone reads it. Nothing is added to the request path.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from typing import Any

from proxy.metrics import LATENCY_BUCKETS, RouteSeries

INTERVAL_S = 2.0
SPAN_S = 300.0
BUCKETS = len(LATENCY_BUCKETS) + 1
"""Latency buckets per row: the finite bounds, then +Inf."""
TOTAL, CLIENT_ERRORS, SERVER_ERRORS, FIRST_BUCKET = 0, 1, 2, 3
ROW = FIRST_BUCKET + BUCKETS
CHART_KEYS = ("rps", "share_4xx", "share_5xx", "p50_ms", "p99_ms")
_NO_POINT = [0.0, 0.0, 0.0, math.nan, math.nan]
"""An interval before a route was first seen: no requests."""


def route_totals(series: Iterable[RouteSeries]) -> dict[str, list[int]]:
    """Cumulative counts per route (all methods): total, 4xx, 5xx, then latency buckets."""
    totals: dict[str, list[int]] = {}
    for one in series:
        route = one.labels[0]
        row = totals.get(route)
        if row is None:
            row = totals[route] = [0] * ROW
        for code, count in list(one.codes.items()):
            row[TOTAL] += count
            if 400 <= code < 500:
                row[CLIENT_ERRORS] += count
            elif code >= 500:
                row[SERVER_ERRORS] += count
        for i, count in enumerate(list(one.counts)):
            row[FIRST_BUCKET + i] += count
    return totals


def quantile_ms(buckets: list[int], total: int, q: float) -> float | None:
    """The q-quantile of one interval's latency histogram, in ms, interpolated linearly in
    its bucket (as Prometheus' histogram_quantile); past the last bound, that bound."""
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for i, count in enumerate(buckets):
        upper = LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else LATENCY_BUCKETS[-1]
        if count and seen + count >= rank:
            if i >= len(LATENCY_BUCKETS):
                return round(upper * 1000, 3)
            return round((lower + (upper - lower) * (rank - seen) / count) * 1000, 3)
        seen += count
        lower = upper
    return round(LATENCY_BUCKETS[-1] * 1000, 3)


def interval_figures(newer: list[int], older: list[int], seconds: float) -> dict[str, Any]:
    """rps, shares and percentiles of the requests between two cumulative rows."""
    delta = [a - b for a, b in zip(newer, older, strict=True)]
    total = delta[TOTAL]
    buckets = delta[FIRST_BUCKET:]
    return {
        "rps": round(total / seconds, 3) if seconds > 0 else 0.0,
        "share_4xx": round(delta[CLIENT_ERRORS] / total, 4) if total else 0.0,
        "share_5xx": round(delta[SERVER_ERRORS] / total, 4) if total else 0.0,
        "p50_ms": quantile_ms(buckets, total, 0.5),
        "p99_ms": quantile_ms(buckets, total, 0.99),
        "requests": total,
    }


class RouteHistory:
    """Rings of cumulative per-route rows, one row per `sample()`; see the module doc."""

    def __init__(self, interval_s: float = INTERVAL_S, span_s: float = SPAN_S) -> None:
        self.interval_s = interval_s
        self.slots = math.ceil(span_s / interval_s) + 1
        self._mono = array("d", [0.0] * self.slots)
        self._wall = array("d", [0.0] * self.slots)
        self._rings: dict[str, array[int]] = {}
        self._points: dict[str, array[float]] = {}
        """Per route, each interval's figures (CHART_KEYS, NaN for no latency), computed
        once when its sample is taken, so a reader copies them and never recomputes."""
        self._head = -1
        self._count = 0
        self._charts: dict[str, dict[str, list[Any]]] | None = None

    @property
    def samples(self) -> int:
        return self._count

    def sample(self, mono: float, wall: float, totals: dict[str, list[int]]) -> None:
        """Keep `totals` (from `route_totals`) as the newest row; the oldest falls out."""
        previous = self._head
        head = self._head = (self._head + 1) % self.slots
        self._count = min(self._count + 1, self.slots)
        self._mono[head] = mono
        self._wall[head] = wall
        start = head * ROW
        for route, kept in self._rings.items():
            if route not in totals and previous >= 0:  # counts never go back: repeat the row
                kept[start : start + ROW] = kept[previous * ROW : previous * ROW + ROW]
        for route, row in totals.items():
            ring = self._rings.get(route)
            if ring is None:  # a new route counted nothing before: zeros are its past
                ring = self._rings[route] = array("q", bytes(8 * ROW * self.slots))
                self._points[route] = array("d", _NO_POINT * self.slots)
            ring[start : start + ROW] = array("q", row)
        if previous >= 0:
            seconds = mono - self._mono[previous]
            for route in self._rings:
                figures = interval_figures(
                    self._row(route, head), self._row(route, previous), seconds
                )
                values = [figures[k] for k in CHART_KEYS]
                at = head * len(CHART_KEYS)
                self._points[route][at : at + len(CHART_KEYS)] = array(
                    "d", [math.nan if v is None else v for v in values]
                )
        self._charts = None

    def _row(self, route: str, slot: int) -> list[int]:
        ring = self._rings.get(route)
        if ring is None:
            return [0] * ROW
        return ring[slot * ROW : slot * ROW + ROW].tolist()

    def _oldest(self) -> int:
        return (self._head - self._count + 1) % self.slots

    def summary(
        self, mono: float, totals: dict[str, list[int]], routes: Iterable[str]
    ) -> dict[str, dict[str, Any]]:
        """Per route, the figures from the oldest row kept to the live `totals`: the last
        5 minutes (or since the first sample), the requests of the last 2 s included."""
        names = dict.fromkeys(routes)
        names.update(dict.fromkeys(r for r in totals if r not in names))
        out: dict[str, dict[str, Any]] = {}
        if self._count == 0:
            return {name: interval_figures([0] * ROW, [0] * ROW, 0.0) for name in names}
        oldest = self._oldest()
        seconds = mono - self._mono[oldest]
        for name in names:
            now_row = totals.get(name, [0] * ROW)
            out[name] = interval_figures(now_row, self._row(name, oldest), seconds)
        return out

    def charts(self) -> dict[str, dict[str, list[Any]]]:
        """Per route, one point per sampled interval (oldest first), for the console's charts.

        Copied from the points kept at each sample, and kept until the next sample.
        """
        if self._charts is not None:
            return self._charts
        slots = [(self._oldest() + i) % self.slots for i in range(1, self._count)]
        times = [round(self._wall[slot], 3) for slot in slots]
        width = len(CHART_KEYS)
        charts: dict[str, dict[str, list[Any]]] = {}
        for route, points in self._points.items():
            chart: dict[str, list[Any]] = {"t": times}
            for k, key in enumerate(CHART_KEYS):
                values = [points[slot * width + k] for slot in slots]
                chart[key] = [None if v != v else v for v in values]  # NaN: no latency
            charts[route] = chart
        self._charts = charts
        return charts

    def memory_bytes(self) -> int:
        """Bytes held by the rings and the time arrays (what the bound above promises)."""
        rings = sum(a.buffer_info()[1] * a.itemsize for a in self._rings.values())
        points = sum(a.buffer_info()[1] * a.itemsize for a in self._points.values())
        return rings + points + 2 * self.slots * 8
