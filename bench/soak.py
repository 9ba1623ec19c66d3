"""Soak: the demo's traffic through the sidecar for N minutes, its memory and fds sampled.

    pip install -e .[bench]                       # Locust
    .venv/bin/python -m bench.soak --minutes 30 --users 20

Starts what `scripts/demo.sh` starts (the email receiver, the sidecar with memory storage
on the demo policy, upstream_app publishing its events to the sidecar) on free ports, then
Locust headless (`bench/soak/locustfile.py`: logins, browsing, keyed sales, lots,
reports) with a bounded user count, and a separate asyncio process of WebSocket listeners
(`bench/soak/listeners.py`). The sidecar's RSS and open fds are sampled every
`--sample-seconds`; the table shows the start, every 5 minutes and the end, then Locust's
request and failure counts. A leak shows as a curve that keeps climbing after the first
minutes; a bounded process levels off.

The demo's limits are per user and there are three seeded users, so they are multiplied by
`--limit-scale` (rules and keys unchanged): the limiter still decides every request, and
each simulated user's client address, new at every sign-in, keeps creating per-IP keys.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO, children, free_port, python, wait_http

SECRET = "soak-secret-0123456789abcdef0123456789"
EVENTS_TOKEN = "soak-events-token"
PASSWORD = "soak-password"
LOCUSTFILE = REPO / "bench" / "soak" / "locustfile.py"
LISTENERS = REPO / "bench" / "soak" / "listeners.py"
TABLE_EVERY_S = 300


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    rss_mib: float
    fds: int


def process_tree(pid: int) -> list[int]:
    return [pid, *children(pid)]


def sample(pids: list[int], elapsed_s: float, proc: Path = Path("/proc")) -> Sample:
    """RSS (VmRSS) and open fds summed over the processes."""
    rss_kib = fds = 0
    for pid in pids:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kib += int(line.split()[1])
        fds += len(os.listdir(proc / str(pid) / "fd"))
    return Sample(elapsed_s, rss_kib / 1024, fds)


def table_rows(samples: list[Sample], every_s: float = TABLE_EVERY_S) -> list[Sample]:
    """The first sample, the first one at or past each `every_s` mark, and the last."""
    if not samples:
        return []
    rows, mark = [samples[0]], every_s
    for s in samples[1:]:
        if s.elapsed_s >= mark:
            rows.append(s)
            while mark <= s.elapsed_s:
                mark += every_s
    if rows[-1] is not samples[-1]:
        rows.append(samples[-1])
    return rows


def format_table(samples: list[Sample]) -> str:
    base = samples[0]
    lines = ["| minute | RSS MiB | vs start | open fds |", "|---|---|---|---|"]
    for s in table_rows(samples):
        lines.append(
            f"| {s.elapsed_s / 60:.1f} | {s.rss_mib:.1f} | {s.rss_mib - base.rss_mib:+.1f} | "
            f"{s.fds} |"
        )
    return "\n".join(lines)


def scale_rate(rate: str, factor: int) -> str:
    """`100/min` x 20 -> `2000/min` (the window is kept)."""
    match = re.fullmatch(r"(\d+)/(.+)", rate)
    if match is None:
        raise ValueError(f"not a rate: {rate!r}")
    return f"{int(match.group(1)) * factor}/{match.group(2)}"


def soak_policy(demo: dict[str, Any], ports: dict[str, int], limit_scale: int) -> dict[str, Any]:
    """The demo policy on the given ports, memory storage, limits multiplied."""
    policy = json.loads(json.dumps(demo))  # a deep copy of plain YAML data
    policy["server"]["listen"] = f"127.0.0.1:{ports['sidecar']}"
    policy["admin"]["listen"] = f"127.0.0.1:{ports['admin']}"
    policy["storage"]["backend"] = "memory"
    ups = policy["upstreams"]
    ups["inventory"]["url"] = f"http://127.0.0.1:{ports['app']}"
    ups["email_service"]["url"] = f"http://127.0.0.1:{ports['email']}"
    limits = policy["rate_limits"]
    limits["roles"] = {role: scale_rate(r, limit_scale) for role, r in limits["roles"].items()}
    for rule in limits["endpoints"]:
        rule["limit"] = scale_rate(rule["limit"], limit_scale)
    return policy


def locust_totals(stats_csv: Path) -> dict[str, float]:
    """The Aggregated row of Locust's `--csv` stats: requests, failures, req/s, p50, p99."""
    with stats_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                return {
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "rps": float(row["Requests/s"]),
                    "p50_ms": float(row["50%"]),
                    "p99_ms": float(row["99%"]),
                }
    raise ValueError(f"no Aggregated row in {stats_csv}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long Locust runs")
    parser.add_argument("--users", type=int, default=20, help="simulated users (bounded)")
    parser.add_argument("--spawn-rate", type=float, default=2.0, help="users started per second")
    parser.add_argument("--listeners", type=int, default=20, help="WebSocket listeners")
    parser.add_argument("--sample-seconds", type=float, default=30.0)
    parser.add_argument("--limit-scale", type=int, default=20, help="multiplies the demo limits")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or not 0 < args.users <= 500 or args.sample_seconds <= 0:
        parser.error("--minutes and --sample-seconds must be > 0, --users within 1..500")
    return args


class Stack:
    """The demo's processes on free ports, stopped together."""

    def __init__(self, workdir: Path, limit_scale: int) -> None:
        self.ports = {name: free_port() for name in ("sidecar", "admin", "app", "email")}
        self.env = dict(os.environ, JWT_SECRET=SECRET, PROXY_EVENTS_TOKEN=EVENTS_TOKEN,
                        UPSTREAM_SEED_PASSWORD=PASSWORD, SOAK_PASSWORD=PASSWORD)  # fmt: skip
        demo = yaml.safe_load((REPO / "policies.yaml").read_text())
        config = workdir / "policy.yaml"
        config.write_text(yaml.safe_dump(soak_policy(demo, self.ports, limit_scale)))
        self.logs = workdir
        self.config = config
        self.procs: list[subprocess.Popen[bytes]] = []

    def up(self) -> None:
        self.start("email", "scripts/email_receiver.py", str(self.ports["email"]))
        self.sidecar = self.start("sidecar", "-m", "proxy", "run", "--config", str(self.config))
        wait_http(f"http://127.0.0.1:{self.ports['admin']}/healthz")
        self.start("app", "-m", "upstream_app", "--host", "127.0.0.1",
                   "--port", str(self.ports["app"]), "--db", str(self.logs / "inventory.db"),
                   "--events-url", f"http://127.0.0.1:{self.ports['sidecar']}")  # fmt: skip
        wait_http(f"http://127.0.0.1:{self.ports['app']}/healthz")

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen([python(), *args], cwd=REPO, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    seconds = args.minutes * 60
    stack = Stack(workdir, args.limit_scale)
    try:
        stack.up()
        listeners = stack.start("listeners", str(LISTENERS), "--port",
                                str(stack.ports["sidecar"]), "--count", str(args.listeners),
                                "--seconds", str(seconds))  # fmt: skip
        stack.env["SOAK_STATUS_FILE"] = str(workdir / "statuses.json")
        locust = stack.start("locust", "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                             "-u", str(args.users), "-r", str(args.spawn_rate),
                             "--run-time", f"{int(seconds)}s", "--stop-timeout", "10",
                             "--host", f"http://127.0.0.1:{stack.ports['sidecar']}",
                             "--csv", str(workdir / "locust"), "--only-summary")  # fmt: skip
        print(f"soak: {args.users} users, {args.listeners} WebSocket listeners, "
              f"{args.minutes:g} min; logs in {workdir}", flush=True)  # fmt: skip
        started = time.monotonic()
        samples = [sample(process_tree(stack.sidecar.pid), 0.0)]
        deadline = started + seconds + 60  # Locust stops itself; this bounds the loop anyway
        while locust.poll() is None and time.monotonic() < deadline:
            time.sleep(min(args.sample_seconds, max(deadline - time.monotonic(), 0)))
            samples.append(sample(process_tree(stack.sidecar.pid), time.monotonic() - started))
            last = samples[-1]
            print(
                f"  {last.elapsed_s / 60:5.1f} min  RSS {last.rss_mib:.1f} MiB  fds {last.fds}",
                flush=True,
            )
        listeners.wait(90)
        print(format_table(samples))
        totals = locust_totals(workdir / "locust_stats.csv")
        print("locust: {requests:.0f} requests, {failures:.0f} failures, {rps:.1f} req/s, "
              "p50 {p50_ms:.0f} ms, p99 {p99_ms:.0f} ms".format(**totals))  # fmt: skip
        print("statuses:", (workdir / "statuses.json").read_text())
        print("listeners:", (workdir / "listeners.log").read_text().strip().splitlines()[-1])
    finally:
        stack.stop()


if __name__ == "__main__":
    run(parse_args())
