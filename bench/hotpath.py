"""The sidecar's own cost per request, without sockets: a figure this VM's noise can't move.

    python bench/hotpath.py [--case plain|identity|memory|access-log|sampled] [--requests N]
    python bench/hotpath.py --case memory --instructions     # needs valgrind

`plain` carries W3C trace context (unsampled, as every request does); `access-log` adds a
JSON access line per request (written to /dev/null); `sampled` records every request as
spans for an OTLP exporter (queued; the encoding and the POST happen off the request path
and are measured by bench/tracing.py).

The real protocol objects (client connection, pipeline, upstream connection) are driven
in-process by the tests' harness (`tests/support/inprocess.py`): a request's bytes go into
the client connection, the upstream's canned answer goes into the pooled upstream
connection, and fake transports take what the sidecar writes. What remains is the Python
(and C extension) work of a forwarded request, without the kernel's. Timed, it is the best
of 7 runs; with `--instructions` it is the number of instructions per request that
cachegrind counts between a short and a long run, which does not depend on steal time or
clock speed: the figure to compare two versions of the code by.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jwt
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ensure_tools
from tests.support.inprocess import Harness

SECRET = "bench-hotpath-secret-0123456789abcdefghijklmnop"
HUGE = "100000000/min"
REQUEST = b"GET /api/v1/productos HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 23\r\nConnection: keep-alive\r\n"
    b'\r\n{"items":[],"total":0}\n'
)
CASES = ("plain", "identity", "memory", "access-log", "sampled")
WARM_UP = 1000
"""Requests before timing: caches filled, the token verified once."""


def policy(case: str) -> dict[str, object]:
    doc: dict[str, object] = {
        "version": 1,
        "server": {"listen": "127.0.0.1:1", "max_in_flight": 2048},
        "upstreams": {"inventory": {"url": "http://127.0.0.1:2"}},
        "routes": [{"name": "inventory", "path_prefix": "/", "upstream": "inventory"}],
    }
    if case == "access-log":
        doc["server"] = {"listen": "127.0.0.1:1", "max_in_flight": 2048, "access_log": True}
    if case == "sampled":
        doc["tracing"] = {"otlp_endpoint": "http://127.0.0.1:9/v1/traces", "sample_ratio": 1.0}
    if case == "memory":
        doc["auth"] = {"jwt": {"algorithms": ["HS256"], "secret_env": "JWT_SECRET"}}
        doc["rate_limits"] = {
            "roles": {"viewer": HUGE},
            "endpoints": [{"name": "productos", "path_prefix": "/api/v1/productos",
                           "limit": HUGE, "key": "user"}],
        }  # fmt: skip
    return doc


def request(case: str) -> bytes:
    if case in ("plain", "access-log", "sampled"):
        return REQUEST
    claims = {"sub": "user-1", "role": "viewer", "exp": int(time.time()) + 3600}
    token = jwt.encode(claims, SECRET, algorithm="HS256").encode()
    return REQUEST[:-2] + b"Authorization: Bearer " + token + b"\r\n\r\n"


async def run(case: str, requests: int, repeats: int) -> list[float]:
    """Microseconds per request of each repeat (one warm-up round first)."""
    harness = Harness(policy(case), keep=False)
    harness.sidecar.access_lines.sink = len  # access lines are made, then dropped
    harness.idle_upstream()
    client, upstream = harness.client, harness.upstreams[0][0]
    data = request(case)

    def one() -> None:
        client.data_received(data)
        upstream.data_received(ANSWER)

    for _ in range(WARM_UP):
        one()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(requests):
            one()
        timings.append((time.perf_counter() - started) / requests * 1e6)
    answered = WARM_UP + repeats * requests
    if harness.client_transport.writes != answered:
        raise RuntimeError(f"{harness.client_transport.writes} answers for {answered} requests")
    return timings


def instructions(case: str, short: int, long: int) -> float:
    """Instructions per request: cachegrind's total for `long` minus `short` requests."""

    def total(requests: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
             sys.executable, __file__, "--case", case, "--requests", str(requests),
             "--repeats", "1"],
            capture_output=True, text=True, check=True,
        ).stderr  # fmt: skip
        match = re.search(r"I\s+refs:\s+([\d,]+)", out)
        if match is None:
            raise RuntimeError("no instruction count in valgrind's output")
        return int(match.group(1).replace(",", ""))

    return (total(long) - total(short)) / (long - short)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=CASES, default="plain")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--instructions", action="store_true")
    args = parser.parse_args()
    os.environ["JWT_SECRET"] = SECRET
    if args.instructions:
        ensure_tools("valgrind")
        per_request = instructions(args.case, 1000, 3000)
        print(f"{args.case}: {per_request:,.0f} instructions per request")
        return
    timings = sorted(uvloop.run(run(args.case, args.requests, args.repeats)))
    median = timings[len(timings) // 2]
    print(f"{args.case}: best {timings[0]:.2f} us per request, median {median:.2f}")


if __name__ == "__main__":
    main()
