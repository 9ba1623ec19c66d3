"""Exactness of shared limits across sidecar replicas: one Redis vs a 3-master Redis Cluster.

    python bench/scaling.py                       # 4 replicas x 2 workers, 4,000 decisions each
    python bench/scaling.py --decisions 100000    # the figure in bench/README.md
    python bench/scaling.py --replicas 8 --users 100

N sidecar processes (`server.workers` 2 each: `--workers`) share one redis-server, then a
real 3-master Redis Cluster (`storage.redis_cluster_nodes`). A load generator sends a
bounded number of requests, round-robin over the replicas, for `--users` signed-in users
(HS256 tokens the replicas verify) whose role allows `--limit` requests per hour; each user
sends more than that. Counted per topology:

- over-admissions: requests admitted beyond a user's limit (sum over users; must be 0);
- under-admissions: a user admitted fewer than min(limit, sent) (0 unless Redis failed and
  the memory fallback, stricter per replica, decided);
- other statuses (any 5xx is a failure of the contract);
- fallbacks: times a replica's decisions went to its memory fallback (a Redis batch slower
  than `storage.timeout`, 1 s here): the only source of over-admissions by design;
- decisions/s through the sidecars, and the ratio cluster / one server, in the same run.

Pinning: the replicas, Redis and the upstream (nginx) share core 0, the load generator runs
on core 1 (bench/common.py), so decisions/s measures the sidecars' CPU on one core far
more than Redis; the ratio says what the cluster's client (redis-py's cluster pipeline,
which routes each batch by slot) costs against the single-server client (one RESP write per
batch). On a bigger machine, give the replicas cores of their own to see Redis's share.
Workers are measured by `bench/scaling_workers.py` (`--workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import jwt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import LOAD_CORE, NGINX_UPSTREAM, Nginx, ensure_tools, free_port
from bench.forwarding import BENCH_SECRET, FULL_PATH, sidecar_policy, start_sidecar
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer


def tokens(users: int) -> list[str]:
    now = int(time.time())
    return [
        jwt.encode(
            {"sub": f"scale-{i}", "role": "viewer", "iat": now, "exp": now + 3600},
            BENCH_SECRET,
            algorithm="HS256",
        )
        for i in range(users)
    ]


def start_replicas(  # type: ignore[no-untyped-def]
    count: int, workers: int, upstream_port: int, storage: dict[str, object], limit: int
):
    replicas = []
    for _ in range(count):
        port = free_port()
        policy = sidecar_policy(
            port,
            upstream_port,
            storage={"backend": "redis", "timeout": "1s", "expected_replicas": count, **storage},
            auth=FULL_PATH["auth"],  # the tokens are verified: limits are per user
            rate_limits={"roles": {"viewer": f"{limit}/60min"}},
        )
        policy["server"] = {**policy["server"], "workers": workers}  # type: ignore[dict-item]
        replicas.append((start_sidecar(policy), port))
    return replicas


def fallback_count(proc) -> int:  # type: ignore[no-untyped-def]
    """Times a replica's decisions went to its memory fallback (Redis failed or was slower
    than storage.timeout): while it lasts a replica admits limit / replicas on its own, so
    an over-admission can only come from there."""
    log = Path(proc.args[-1]).parent / "err.log"  # where start_sidecar puts stderr
    return log.read_text().count("rate-limit store unavailable")


async def drive(ports: list[int], keys: list[str], decisions: int, concurrency: int) -> dict:
    """`decisions` requests, user i % users on replica i % replicas; statuses per user."""
    admitted: Counter[int] = Counter()
    sent: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    counter = iter(range(decisions))
    headers = [{"Authorization": f"Bearer {key}"} for key in keys]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            for i in counter:
                user = i % len(keys)
                url = f"http://127.0.0.1:{ports[i % len(ports)]}/items"
                async with http.get(url, headers=headers[user]) as resp:
                    await resp.read()
                    status = resp.status
                sent[user] += 1
                statuses[status] += 1
                admitted[user] += status == 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"admitted": admitted, "sent": sent, "statuses": statuses, "wall_s": wall}


def run_topology(
    name: str, storage: dict[str, object], args: argparse.Namespace, upstream: int
) -> dict:
    replicas = start_replicas(args.replicas, args.workers, upstream, storage, args.limit)
    try:
        result = asyncio.run(
            drive(
                [port for _, port in replicas], tokens(args.users), args.decisions, args.concurrency
            )
        )
    finally:
        for proc, _ in replicas:
            proc.terminate()
            proc.wait(10)
    fallbacks = sum(fallback_count(proc) for proc, _ in replicas)
    admitted, sent = result["admitted"], result["sent"]
    over = sum(max(0, admitted[u] - args.limit) for u in sent)
    under = sum(max(0, min(args.limit, sent[u]) - admitted[u]) for u in sent)
    statuses = dict(sorted(result["statuses"].items()))
    return {
        "topology": name,
        "decisions": sum(sent.values()),
        "over_admissions": over,
        "under_admissions": under,
        "statuses": statuses,
        "server_errors": sum(n for status, n in statuses.items() if status >= 500),
        "fallbacks": fallbacks,
        "decisions_per_s": round(sum(sent.values()) / result["wall_s"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="server.workers of each replica")
    parser.add_argument("--decisions", type=int, default=4000)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        help="per user and hour (default: 60%% of what each user sends)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.limit <= 0:
        args.limit = max(1, int(args.decisions / args.users * 0.6))
    ensure_tools("nginx")
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    workdir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    upstream_port = free_port()
    nginx = Nginx(NGINX_UPSTREAM, port=upstream_port)
    (workdir / "redis").mkdir()
    single = RedisServer(workdir / "redis")
    cluster = RedisCluster(workdir / "cluster")
    rows = []
    try:
        single.start()
        rows.append(
            run_topology("one redis-server", {"redis_url": single.url}, args, upstream_port)
        )
        single.stop()
        cluster.start()
        nodes = {"redis_cluster_nodes": cluster.addresses}
        rows.append(run_topology("3-master cluster", nodes, args, upstream_port))
    finally:
        cluster.stop()
        single.stop()
        nginx.stop()
    ratio = rows[1]["decisions_per_s"] / max(rows[0]["decisions_per_s"], 1e-9)
    report = {"replicas": args.replicas, "workers": args.workers, "users": args.users,
              "limit_per_user": args.limit, "rows": rows,
              "cluster_vs_single_decisions_per_s": round(ratio, 2)}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{args.replicas} replicas x {args.workers} workers, {args.users} users, "
        f"limit {args.limit}/hour each"
    )
    print(
        f"{'topology':<18} {'decisions':>9} {'over':>5} {'under':>6} {'5xx':>4} "
        f"{'fallbacks':>9} {'decisions/s':>12}"
    )
    for row in rows:
        print(
            f"{row['topology']:<18} {row['decisions']:>9} {row['over_admissions']:>5} "
            f"{row['under_admissions']:>6} {row['server_errors']:>4} {row['fallbacks']:>9} "
            f"{row['decisions_per_s']:>12}"
        )
    print(f"cluster / one server, decisions/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
