"""One scrape from many workers' snapshots: what is summed, what is taken as it is."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from proxy.workers.totals import Table, merge, retire, shared_families, snapshot

P = "resilience_proxy_"


def worker(requests: int, connections: int, hash_: str) -> list:
    registry = CollectorRegistry()
    Counter(P + "requests_total", "r", ["route"], registry=registry).labels("a").inc(requests)
    Gauge(P + "websocket_connections", "w", ["channel"], registry=registry).labels("n").set(
        connections
    )
    Gauge(P + "policy_info", "p", ["hash"], registry=registry).labels(hash_).set(1)
    return snapshot(registry)


def test_counters_and_connection_gauges_are_summed_other_gauges_are_the_scrapers() -> None:
    one, two = worker(3, 1, "h1"), worker(4, 2, "h2")
    text = merge([one, two], one, Table(), shared_families({"x": "open"}, {}, 0, 2), ["x"])
    body = text.decode()
    assert f'{P}requests_total{{route="a"}} 7.0' in body
    assert f'{P}websocket_connections{{channel="n"}} 3.0' in body
    assert f'{P}policy_info{{hash="h1"}} 1.0' in body and "h2" not in body
    assert f'{P}circuit_breaker_state{{breaker="x",state="open"}} 1.0' in body
    assert f"{P}worker_restarts_total 0.0" in body


def test_a_dead_workers_counters_stay_in_the_totals() -> None:
    one, two = worker(3, 1, "h"), worker(4, 2, "h")
    retired = Table()
    retire(retired, two, [])
    body = merge([one], one, retired, [], []).decode()
    assert f'{P}requests_total{{route="a"}} 7.0' in body
    assert f'{P}websocket_connections{{channel="n"}} 1.0' in body  # its gauges left with it


def fallback(active: int) -> list:
    registry = CollectorRegistry()
    gauge = Gauge(P + "storage_fallback_active", "f", ["backend"], registry=registry)
    gauge.labels("redis").set(active)
    return snapshot(registry)


def test_the_store_fallback_shows_while_any_worker_is_on_it() -> None:
    on, off = fallback(1), fallback(0)
    for scraper in (on, off):
        body = merge([on, off], scraper, Table(), [], []).decode()
        assert f'{P}storage_fallback_active{{backend="redis"}} 1.0' in body
    body = merge([off, off], off, Table(), [], []).decode()
    assert f'{P}storage_fallback_active{{backend="redis"}} 0.0' in body
