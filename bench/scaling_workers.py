"""Workers scaling: N workers vs 1 on this machine, in the same run, and the supervisor's
CPU share.

    python bench/scaling_workers.py [--workers 1,2] [--seconds 5] [--rounds 2]
                                    [--connections 64]

Pinning: the sidecar (supervisor and workers) and the upstream nginx may run on every core
(`taskset -c 0-(N-1)`), since more workers only help if they get more cores; wrk (one
thread) is pinned to the last core, so on a 2-core box the load generator shares a core
with one worker. On a bigger machine (`--workers 1,2,4,8,16`) wrk still takes one core
and the servers have the rest. Each `--workers` value is measured once per round, the
values alternating, so drift in the machine hits all of them. The first value is the
baseline of the ratios. Needs redis-server (workers > 1 need `storage.backend: redis`)
plus nginx and wrk (installed when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    NGINX_UPSTREAM,
    REPO,
    Nginx,
    children,
    cpu_seconds,
    ensure_tools,
    free_port,
    pinned,
    python,
    wait_http,
    wrk,
)
from bench.forwarding import BENCH_SECRET

CORES = os.cpu_count() or 1
ALL_CORES = f"0-{CORES - 1}"
PATH = "/api/v1/productos"


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc, f"redis://127.0.0.1:{port}/0"


def start_sidecar(workers: int, upstream_port: int, redis_url: str, workdir: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    policy = {
        "version": 1,
        "server": {"listen": f"127.0.0.1:{port}", "max_in_flight": 4096, "workers": workers},
        "storage": {"backend": "redis", "redis_url": redis_url},
        "upstreams": {"inventory": {"url": f"http://127.0.0.1:{upstream_port}"}},
        "routes": [{"name": "inventory", "path_prefix": "/", "upstream": "inventory"}],
    }
    config = workdir / f"policy-{workers}.yaml"
    config.write_text(yaml.safe_dump(policy))
    proc = pinned(
        [python(), "-m", "proxy", "run", "--config", str(config)], ALL_CORES,
        cwd=REPO, env={**os.environ, "JWT_SECRET": BENCH_SECRET},
        stdout=subprocess.DEVNULL, stderr=open(workdir / f"err-{workers}.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/healthz")
    end = time.monotonic() + 30
    while workers > 1 and len(children(proc.pid)) < workers and time.monotonic() < end:
        time.sleep(0.05)
    return proc, port


def measure(workers: int, port: int, pid: int, seconds: int, connections: int) -> dict[str, float]:
    """One bounded wrk run; CPU of the supervisor and of the workers read around it."""
    supervisor = [pid] if workers > 1 else []
    serving = children(pid) if workers > 1 else [pid]
    sup_before, work_before = cpu_seconds(supervisor), cpu_seconds(serving)
    result = wrk(f"http://127.0.0.1:{port}{PATH}", [], connections, seconds, threads=1)
    sup_cpu = cpu_seconds(supervisor) - sup_before
    work_cpu = cpu_seconds(serving) - work_before
    total = sup_cpu + work_cpu
    return {
        "rps": result.rps,
        "p99_ms": result.p99_ms,
        "non_2xx": result.non_2xx,
        "cpu_us_per_request": total / max(result.requests, 1) * 1e6,
        "supervisor_cpu_share": sup_cpu / total if total else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2", help="comma-separated, first = baseline")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    ensure_tools("nginx", "wrk", "redis-server")

    workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    redis, redis_url = start_redis(workdir)
    up_port = free_port()
    upstream = Nginx(NGINX_UPSTREAM, core=ALL_CORES, port=up_port)
    wait_http(f"http://127.0.0.1:{up_port}/")
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    try:
        for _ in range(args.rounds):
            for n in counts:
                proc, port = start_sidecar(n, up_port, redis_url, workdir)
                try:
                    wrk(f"http://127.0.0.1:{port}{PATH}", [], args.connections, 1, threads=1)
                    runs[n].append(measure(n, port, proc.pid, args.seconds, args.connections))
                finally:
                    proc.terminate()
                    proc.wait(30)
    finally:
        upstream.stop()
        redis.terminate()
        redis.wait(10)

    base = statistics.median(r["rps"] for r in runs[counts[0]])
    table = {}
    print(f"{CORES} cores; wrk (1 thread) pinned to core {CORES - 1}; servers on {ALL_CORES}")
    print(
        f"{'workers':>8}{'req/s':>10}{'x base':>8}{'p99 ms':>9}{'CPU us/req':>12}{'sup. CPU':>10}"
    )
    for n, rows in runs.items():
        row = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        row["ratio"] = row["rps"] / base
        table[n] = row
        print(
            f"{n:>8}{row['rps']:>10.0f}{row['ratio']:>7.2f}x{row['p99_ms']:>9.2f}"
            f"{row['cpu_us_per_request']:>12.1f}{row['supervisor_cpu_share']:>10.2%}"
        )
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "scaling_workers.json").write_text(
        json.dumps({"cores": CORES, "table": table}, indent=2)
    )


if __name__ == "__main__":
    main()
