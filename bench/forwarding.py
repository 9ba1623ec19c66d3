"""Forwarding overhead: direct upstream vs nginx vs the sidecar, in the same run.

Two sidecars: `sidecar` forwards plainly (the route, the breaker, the metrics), `full`
also verifies an HS256 token and checks two memory rate limits on every request
(`FULL_PATH`); both are compared with nginx's plain forwarding.

    python bench/forwarding.py [--seconds 8] [--rounds 3] [--connections 64]

Servers (upstream, nginx, sidecar) run pinned to core 0, wrk to core 1. nginx and the
sidecar runs alternate so drift in the machine hits both. CPU per request is read from
/proc/PID/stat before and after each run. Prints req/s, p50/p99, CPU us/request and the
ratios `bench/README.md` states targets for.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import jwt
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    NGINX_PROXY,
    NGINX_UPSTREAM,
    REPO,
    SERVER_CORE,
    Nginx,
    WrkResult,
    ensure_tools,
    free_port,
    pinned,
    python,
    wait_http,
    wrk,
)

BENCH_SECRET = "bench-only-secret-0123456789abcdef0123456789"


def sidecar_policy(port: int, upstream_port: int, **extra: object) -> dict[str, object]:
    return {
        "version": 1,
        "server": {"listen": f"127.0.0.1:{port}", "max_in_flight": 2048},
        "upstreams": {"inventory": {"url": f"http://127.0.0.1:{upstream_port}"}},
        "routes": [{"name": "inventory", "path_prefix": "/", "upstream": "inventory"}],
        **extra,
    }


FULL_PATH = {
    "auth": {"jwt": {"algorithms": ["HS256"], "secret_env": "JWT_SECRET"}},
    "rate_limits": {
        "roles": {"viewer": "100000000/min"},
        "endpoints": [{"name": "productos", "path_prefix": "/api/v1/productos",
                       "limit": "100000000/min", "key": "user"}],
    },
}  # fmt: skip
"""The full path: a verified HS256 token, two memory rules (role and endpoint), the breaker
and the metrics every request passes anyway."""


def bearer() -> str:
    claims = {"sub": "bench-user", "role": "viewer", "exp": int(time.time()) + 3600}
    return "Authorization: Bearer " + jwt.encode(claims, BENCH_SECRET, algorithm="HS256")


def start_sidecar(policy: dict[str, object], env: dict[str, str] | None = None, wait: bool = True):  # type: ignore[no-untyped-def]
    config = Path(tempfile.mkdtemp(prefix="bench-sidecar-")) / "policy.yaml"
    config.write_text(yaml.safe_dump(policy))
    env = {**os.environ, "JWT_SECRET": BENCH_SECRET, **(env or {})}
    proc = pinned(
        [python(), "-m", "proxy", "run", "--config", str(config)],
        cwd=REPO, env=env, stderr=open(config.parent / "err.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    port = policy["server"]["listen"].rsplit(":", 1)[1]  # type: ignore[index]
    if wait:  # (a TLS listener is waited for by its caller)
        wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc


def own_latency(port: int, since: dict[str, float] | None = None) -> dict[str, float]:
    """`request_duration_seconds` buckets of the proxied route: counts, or with `since`
    the share of the requests since then under each bound (time spent in the sidecar)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts = {
        bound: float(value)
        for bound, value in re.findall(
            r'request_duration_seconds_bucket\{le="([^"]+)",method="GET",route="inventory"\} (\S+)',
            text,
        )
    }
    if since is None:
        return counts
    total = counts["+Inf"] - since.get("+Inf", 0.0)
    return {
        bound: (counts[bound] - since.get(bound, 0.0)) / max(total, 1.0)
        for bound in ("0.01", "0.025", "0.1", "0.5")
    }


def summarize(name: str, runs: list[WrkResult]) -> dict[str, float]:
    return {
        "rps": statistics.median(r.rps for r in runs),
        "p50_ms": statistics.median(r.p50_ms for r in runs),
        "p99_ms": statistics.median(r.p99_ms for r in runs),
        "cpu_us": statistics.median(r.cpu_us_per_request for r in runs),
        "timeouts": sum(r.timeouts for r in runs),
        "non_2xx": sum(r.non_2xx for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--upstream-core",
        default=SERVER_CORE,
        help="core of the upstream nginx (default: the servers' core, as in the recorded runs)",
    )
    args = parser.parse_args()
    ensure_tools("nginx", "wrk")

    up_port, nginx_port, sidecar_port = free_port(), free_port(), free_port()
    full_port = free_port()
    upstream = Nginx(NGINX_UPSTREAM, core=args.upstream_core, port=up_port)
    proxy = Nginx(NGINX_PROXY, port=nginx_port, upstream=up_port)
    sidecar = start_sidecar(sidecar_policy(sidecar_port, up_port))
    full = start_sidecar(sidecar_policy(full_port, up_port, **FULL_PATH))
    wait_http(f"http://127.0.0.1:{up_port}/")
    wait_http(f"http://127.0.0.1:{nginx_port}/")
    path = "/api/v1/productos"
    token = ["-H", bearer()]
    results: dict[str, list[WrkResult]] = {"direct": [], "nginx": [], "sidecar": [], "full": []}
    try:
        for port, pids, extra in (
            (nginx_port, proxy.pids, None),
            (sidecar_port, [sidecar.pid], None),
            (full_port, [full.pid], token),
        ):
            wrk(f"http://127.0.0.1:{port}{path}", pids, args.connections, 2, extra=extra)  # warm-up
        for _ in range(args.rounds):
            results["direct"].append(
                wrk(
                    f"http://127.0.0.1:{up_port}{path}",
                    upstream.pids,
                    args.connections,
                    args.seconds,
                )
            )
            results["nginx"].append(
                wrk(
                    f"http://127.0.0.1:{nginx_port}{path}",
                    proxy.pids,
                    args.connections,
                    args.seconds,
                )
            )
            results["sidecar"].append(
                wrk(
                    f"http://127.0.0.1:{sidecar_port}{path}",
                    [sidecar.pid],
                    args.connections,
                    args.seconds,
                )
            )
            results["full"].append(
                wrk(
                    f"http://127.0.0.1:{full_port}{path}",
                    [full.pid],
                    args.connections,
                    args.seconds,
                    extra=token,
                )
            )
        before = own_latency(sidecar_port)
        saturated = wrk(f"http://127.0.0.1:{sidecar_port}{path}", [sidecar.pid], 256, args.seconds)
        inside = own_latency(sidecar_port, before)
    finally:
        for process in (sidecar, full):
            process.terminate()
            process.wait(20)
        proxy.stop()
        upstream.stop()

    table = {name: summarize(name, runs) for name, runs in results.items()}
    print(f"{'':10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}")
    for name, row in table.items():
        print(
            f"{name:10}{row['rps']:>10.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['cpu_us']:>12.1f}"
        )
    cpu_ratio = table["sidecar"]["cpu_us"] / table["nginx"]["cpu_us"]
    rps_ratio = table["sidecar"]["rps"] / table["nginx"]["rps"]
    tail_ratio = saturated.p99_ms / max(saturated.p50_ms, 1e-6)
    full_ratio = table["full"]["cpu_us"] / table["nginx"]["cpu_us"]
    print(f"sidecar CPU per request / nginx's: {cpu_ratio:.2f}x (target <= 1.6x)")
    print(f"sidecar req/s / nginx's:           {rps_ratio:.0%} (target >= 65%)")
    print(
        f"full path CPU per request / nginx's plain forwarding: {full_ratio:.2f}x (target <= 1.8x)"
    )
    print(
        f"256 connections: p50 {saturated.p50_ms:.2f} ms, p99 {saturated.p99_ms:.2f} ms, "
        f"p99/p50 {tail_ratio:.1f}x (target <= 10x), timeouts {saturated.timeouts}, "
        f"non-2xx {saturated.non_2xx}"
    )
    print(
        "  the sidecar's own histogram (head parsed to answer sent) for that run: "
        + ", ".join(f"{share:.2%} <= {bound} s" for bound, share in inside.items())
    )
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "forwarding.json").write_text(
        json.dumps({"table": table, "cpu_ratio": cpu_ratio, "rps_ratio": rps_ratio,
                    "full_ratio": full_ratio,
                    "saturated": saturated.__dict__}, indent=2)
    )  # fmt: skip


if __name__ == "__main__":
    main()
