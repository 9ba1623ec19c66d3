"""The per-route 5-minute series: figures from differences of sampled cumulative counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.console.series import RouteHistory, quantile_ms, route_totals
from proxy.metrics import LATENCY_BUCKETS, RouteSeries


def observe(series: RouteSeries, n: int, code: int, seconds: float) -> None:
    for _ in range(n):
        series.observe(code, seconds)


def test_figures_are_the_requests_since_the_oldest_sample() -> None:
    get, post = RouteSeries(("api", "GET")), RouteSeries(("api", "POST"))
    history = RouteHistory(interval_s=2, span_s=10)
    history.sample(100.0, 1000.0, route_totals([get, post]))
    observe(get, 16, 200, 0.003)
    observe(post, 2, 404, 0.003)
    observe(post, 2, 503, 2.0)
    figures = history.summary(104.0, route_totals([get, post]), ["api", "idle"])
    assert figures["api"]["rps"] == 5.0
    assert figures["api"]["share_4xx"] == 0.1
    assert figures["api"]["share_5xx"] == 0.1
    assert 2.5 <= figures["api"]["p50_ms"] <= 5.0
    assert 1000.0 <= figures["api"]["p99_ms"] <= 2500.0
    assert figures["idle"] == {"rps": 0.0, "share_4xx": 0.0, "share_5xx": 0.0,
                               "p50_ms": None, "p99_ms": None, "requests": 0}  # fmt: skip


def test_old_traffic_leaves_the_window_and_memory_stays_bounded() -> None:
    series = RouteSeries(("api", "GET"))
    history = RouteHistory(interval_s=2, span_s=10)
    history.sample(0.0, 0.0, route_totals([series]))
    observe(series, 50, 200, 0.001)
    history.sample(2.0, 2.0, route_totals([series]))
    size = history.memory_bytes()
    for i in range(2, 500):
        history.sample(2.0 * i, 2.0 * i, route_totals([series]))
    assert history.samples == history.slots == 6
    assert history.memory_bytes() == size
    now = 2.0 * 499
    assert history.summary(now, route_totals([series]), [])["api"]["rps"] == 0.0
    observe(series, 10, 500, 0.001)
    assert history.summary(now + 1, route_totals([series]), [])["api"]["share_5xx"] == 1.0


def test_charts_have_one_point_per_interval_and_a_route_that_appears_late() -> None:
    early, late = RouteSeries(("early", "GET")), RouteSeries(("late", "GET"))
    history = RouteHistory(interval_s=2, span_s=10)
    history.sample(0.0, 50.0, route_totals([early]))
    observe(early, 4, 200, 0.001)
    history.sample(2.0, 52.0, route_totals([early]))
    observe(late, 6, 500, 0.001)
    history.sample(4.0, 54.0, route_totals([early, late]))
    charts = history.charts()
    assert charts["early"]["t"] == [52.0, 54.0]
    assert charts["early"]["rps"] == [2.0, 0.0]
    assert charts["early"]["p50_ms"][1] is None
    assert charts["late"]["rps"] == [0.0, 3.0]
    assert charts["late"]["share_5xx"] == [0.0, 1.0]
    assert history.charts() is charts  # kept until the next sample


def test_quantiles_interpolate_within_a_bucket_and_stop_at_the_last_bound() -> None:
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[0] = 10
    assert quantile_ms(buckets, 10, 0.5) == pytest.approx(0.25)
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[-1] = 3
    assert quantile_ms(buckets, 3, 0.99) == LATENCY_BUCKETS[-1] * 1000
    assert quantile_ms(buckets, 0, 0.5) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([200, 201, 302, 404, 429, 500, 503]),
                  st.floats(min_value=0.0, max_value=40.0)),
        min_size=1, max_size=200,
    )
)  # fmt: skip
def test_figures_stay_in_their_ranges(observations: list[tuple[int, float]]) -> None:
    series = RouteSeries(("r", "GET"))
    history = RouteHistory(interval_s=2, span_s=10)
    history.sample(0.0, 0.0, route_totals([series]))
    for code, seconds in observations:
        series.observe(code, seconds)
    figures = history.summary(2.0, route_totals([series]), [])["r"]
    assert figures["requests"] == len(observations)
    assert 0.0 <= figures["share_4xx"] <= 1.0 and 0.0 <= figures["share_5xx"] <= 1.0
    assert figures["share_4xx"] + figures["share_5xx"] <= 1.0 + 1e-9
    assert 0.0 <= figures["p50_ms"] <= figures["p99_ms"] <= LATENCY_BUCKETS[-1] * 1000
