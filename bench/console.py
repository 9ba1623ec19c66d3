"""The console's cost on the sidecar: CPU per overview request, memory of the route series.

    python bench/console.py [--requests 2000] [--routes 10] [--chunk 250]

1. A sidecar (pinned to core 0) with `--routes` routes, each given traffic first so every
   route has its series. Then `--requests` sequential `GET /api/v1/resilience/overview`
   with an admin token over one keep-alive connection (this process, on core 1), and as
   many `GET /healthz` as the baseline, alternating in chunks of `--chunk` so drift hits
   both. CPU is the sidecar's utime + stime from /proc before and after each chunk. Charts
   are rebuilt once per 2 s sample, so a loop this fast mostly reads them cached; the cold
   cost (one console refresh right after a sample) is measured in step 2.
2. In-process: a `RouteHistory` with `--routes` routes after a full 5 minutes of samples:
   its bytes per route (the arrays' own count, and tracemalloc's), the CPU of one sample
   (every 2 s), of one cold `charts()` and of one `summary()`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

import jwt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import LOAD_CORE, cpu_seconds, free_port
from bench.forwarding import BENCH_SECRET, start_sidecar
from proxy.console.series import RouteHistory, route_totals
from proxy.metrics import RouteSeries


def policy(port: int, routes: int) -> dict[str, object]:
    dead = free_port()  # nothing listens: each proxied request is a quick 502
    return {
        "version": 1,
        "server": {"listen": f"127.0.0.1:{port}"},
        "upstreams": {"app": {"url": f"http://127.0.0.1:{dead}", "retry": {"max_attempts": 1},
                              "circuit_breaker": {"failure_threshold": 1000000}}},
        "routes": [{"name": f"r{i}", "path_prefix": f"/r{i}/", "upstream": "app"}
                   for i in range(routes)],
        "rate_limits": {"roles": {"admin": "1000000/min", "anonymous": "1000000/min"}},
    }  # fmt: skip


def loop(conn: http.client.HTTPConnection, path: str, n: int, headers: dict[str, str]) -> int:
    size = 0
    for _ in range(n):
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body[:200])
        size = len(body)
    return size


def over_http(requests: int, routes: int, chunk: int) -> dict[str, float]:
    port = free_port()
    proc = start_sidecar(policy(port, routes))
    try:
        token = jwt.encode({"sub": "1", "role": "admin", "exp": int(time.time()) + 3600},
                           BENCH_SECRET, algorithm="HS256")  # fmt: skip
        admin = {"Authorization": f"Bearer {token}"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(routes):  # traffic on every route: each gets its ring
            for _ in range(5):
                conn.request("GET", f"/r{i}/x")
                conn.getresponse().read()
        time.sleep(2.5)  # at least one sample holds every route
        cpu = {"overview": 0.0, "healthz": 0.0}
        done = 0
        size = 0
        while done < requests:
            n = min(chunk, requests - done)
            for name, path, headers in (("overview", "/api/v1/resilience/overview", admin),
                                        ("healthz", "/healthz", {})):  # fmt: skip
                before = cpu_seconds([proc.pid])
                got = loop(conn, path, n, headers)
                cpu[name] += cpu_seconds([proc.pid]) - before
                if name == "overview":
                    size = got
            done += n
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
    overview_us = cpu["overview"] / requests * 1e6
    healthz_us = cpu["healthz"] / requests * 1e6
    return {
        "requests": requests,
        "overview_cpu_us_per_request": round(overview_us, 1),
        "healthz_cpu_us_per_request": round(healthz_us, 1),
        "ratio_to_healthz": round(overview_us / healthz_us, 2) if healthz_us else float("nan"),
        "overview_bytes": size,
    }


def in_process(routes: int) -> dict[str, float]:
    series = [RouteSeries((f"r{i}", "GET")) for i in range(routes)]
    tracemalloc.start()
    start = tracemalloc.take_snapshot()
    history = RouteHistory()
    sample_cpu = 0.0
    for step in range(history.slots * 2):  # twice round the ring
        for i, one in enumerate(series):
            for _ in range(1 + (step + i) % 7):
                one.observe(200 if step % 5 else 503, 0.001 * (1 + i))
        totals_started = time.process_time()
        history.sample(2.0 * step, 2.0 * step, route_totals(series))
        sample_cpu += time.process_time() - totals_started
    grown = tracemalloc.take_snapshot().compare_to(start, "filename")
    traced = sum(stat.size_diff for stat in grown if "series.py" in str(stat.traceback))
    tracemalloc.stop()
    rounds = 50
    started = time.process_time()
    for _ in range(rounds):
        history._charts = None  # cold: as right after a sample
        history.charts()
    charts_ms = (time.process_time() - started) / rounds * 1e3
    started = time.process_time()
    for _ in range(rounds):
        history.summary(2.0 * history.slots * 2, route_totals(series), [])
    summary_ms = (time.process_time() - started) / rounds * 1e3
    return {
        "routes": routes,
        "series_bytes_per_route": round(history.memory_bytes() / routes),
        "traced_bytes_per_route": round(traced / routes),
        "sample_ms": round(sample_cpu / (history.slots * 2) * 1e3, 3),
        "cold_charts_ms": round(charts_ms, 2),
        "summary_ms": round(summary_ms, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--routes", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=250)
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    result = {
        "http": over_http(args.requests, args.routes, args.chunk),
        "in_process": in_process(args.routes),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
