"""Fail fast and retry safely: an open breaker's latency, and retries against a flaky upstream.

    python bench/failfast.py [--quick] [--requests 2000] [--flaky-requests 3000]
                             [--concurrency 16] [--flaky-rounds 2]

Servers (the sidecar, the test upstream) run pinned to core 0; this process, the load
generator (a raw asyncio HTTP/1.1 client, keep-alive, one connection per concurrent
worker), on core 1.

1. Hanging upstream (accepts, reads, never answers). Sidecar: upstream timeout 2s, retry
   max_attempts 1, breaker failure_threshold 5, recovery_timeout 60s. Requests are sent
   one by one until the breaker answers (at most 10, ~2 s each); then `--requests` requests
   sequentially and again with `--concurrency` workers while it is open. Baselines in the
   same run, alternating in chunks with it: the same client against nginx returning a
   fixed body (core 0: the machine's own floor) and against the sidecar's /healthz; then
   wrk (a C client) against all three, to leave the Python client's jitter out. The
   sidecar's own request_duration_seconds histogram gives its side of the story.
2. Flaky upstream (503 on a seeded random 20 % of requests, else 200). The same
   `--flaky-requests` GETs with `--concurrency` workers, retries on (max_attempts 3,
   base_delay 10ms) vs off (max_attempts 1), alternating, a fresh sidecar and upstream
   (same seed) per run, so every run starts with an empty retry budget. The breaker's
   threshold is raised out of reach here (20 % failures do make 5 in a row now and then,
   and an open breaker would measure the breaker, not the retries). Reported: error rate
   seen by the client, upstream requests / client requests, and the budget's allowance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    LOAD_CORE,
    NGINX_UPSTREAM,
    REPO,
    SERVER_CORE,
    Nginx,
    _ms,
    ensure_tools,
    free_port,
    pinned,
    python,
    wait_http,
)
from bench.forwarding import sidecar_policy, start_sidecar

SECRET = "bench-failfast-secret-0123456789-abcdefghijklmnop"
TIMEOUT_S = 2.0
OPEN_P99_AIM_MS = 2.0
ERROR_REDUCTION_AIM = 0.95
FAIL_RATE = 0.2
SEED = 20240601
BUDGET = {"ratio": 0.2, "min_per_second": 10, "window": "10s"}
BUDGET_WINDOW_S = 10.0


# -- the test upstream (a child process) -----------------------------------------------


class _Upstream(asyncio.Protocol):
    """hang: read and never answer; flaky: 503 for a seeded FAIL_RATE share, else 200."""

    def __init__(self, state: dict) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state["connections"] += 1

    def data_received(self, data: bytes) -> None:
        if self.state["mode"] == "hang":
            self.state["bytes"] += len(data)
            return
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            if b"content-length:" in head:
                length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.state["requests"] += 1
            if self.state["rng"].random() < self.state["fail_rate"]:
                self.state["failed"] += 1
                body, status = b'{"error":"transient"}', b"503 Service Unavailable"
            else:
                body, status = b'{"items":[],"total":0}', b"200 OK"
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (status, len(body), body)
            )


class _Control(asyncio.Protocol):
    """Any request on the control port: the upstream's counters as JSON, then close."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" not in data:
            return
        keys = ("connections", "requests", "failed", "bytes")
        body = json.dumps({k: self.state[k] for k in keys}).encode()
        self.transport.write(  # type: ignore[attr-defined]
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        self.transport.close()


def serve_upstream(args: argparse.Namespace) -> None:
    import uvloop

    state = {
        "mode": args.serve, "connections": 0, "requests": 0, "failed": 0, "bytes": 0,
        "rng": random.Random(args.seed), "fail_rate": args.fail_rate,
    }  # fmt: skip

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: _Upstream(state), "127.0.0.1", args.port, backlog=1024)
        await loop.create_server(lambda: _Control(state), "127.0.0.1", args.control_port)
        await asyncio.sleep(600)  # bounded: the parent terminates it long before

    uvloop.run(main())


class Upstream:
    def __init__(self, mode: str, seed: int = SEED) -> None:
        self.port, self.control = free_port(), free_port()
        self.proc = pinned(
            [python(), str(Path(__file__).resolve()), "--serve", mode, "--port", str(self.port),
             "--control-port", str(self.control), "--seed", str(seed),
             "--fail-rate", str(FAIL_RATE)],
            SERVER_CORE, cwd=REPO,
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{self.control}/")

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/", timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        stop(self.proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the client -------------------------------------------------------------------------


@dataclass
class Sample:
    status: int
    latency_s: float
    error: str | None


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0

    def latencies_ms(self) -> list[float]:
        return sorted(s.latency_s * 1000 for s in self.samples)

    def summary(self) -> dict:
        lat = self.latencies_ms()
        codes: dict[str, int] = {}
        for s in self.samples:
            key = str(s.status) if s.error is None else f"{s.status} {s.error}"
            codes[key] = codes.get(key, 0) + 1
        return {
            "requests": len(lat),
            "p50_ms": percentile(lat, 0.50),
            "p99_ms": percentile(lat, 0.99),
            "max_ms": lat[-1] if lat else 0.0,
            "wall_s": self.wall_s,
            "codes": codes,
        }


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Client:
    """One keep-alive HTTP/1.1 connection; GETs only; reconnects if the server closed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, timeout: float) -> Sample:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
                assert self.reader is not None
                self.writer.write(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
                head = await self.reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                lower = head.lower()
                length = 0
                if b"content-length:" in lower:
                    length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                body = await self.reader.readexactly(length)
                if b"connection: close" in lower:
                    self.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            self.close()
            return Sample(0, time.perf_counter() - started, type(exc).__name__)
        elapsed = time.perf_counter() - started
        error = None
        if status >= 400:
            try:
                error = orjson.loads(body).get("error", "?")
            except orjson.JSONDecodeError:
                error = "upstream"
        return Sample(status, elapsed, error)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(port: int, path: str, total: int, concurrency: int, timeout: float) -> Load:
    """`total` GETs from `concurrency` workers, each on its own keep-alive connection."""
    result = Load()
    next_index = iter(range(total))

    async def worker() -> None:
        client = Client(port)
        try:
            for _ in next_index:
                result.samples.append(await client.get(path, timeout))
        finally:
            client.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    return result


def metric_sum(port: int, name: str, **labels: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"resilience_proxy_{name}") and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- 1. the open breaker ----------------------------------------------------------------


def hang_policy(port: int, upstream_port: int) -> dict:
    policy = sidecar_policy(port, upstream_port)
    policy["upstreams"]["inventory"].update(  # type: ignore[index]
        {
            "timeout": f"{TIMEOUT_S:g}s",
            "retry": {"max_attempts": 1},
            "circuit_breaker": {"failure_threshold": 5, "recovery_timeout": "60s"},
        }
    )
    return policy


async def breaker_phase(
    port: int,
    upstream: Upstream,
    nginx_port: int,
    requests: int,
    concurrency: int,
    wrk_seconds: int,
) -> dict:
    path = "/api/v1/productos"
    before = upstream.stats()
    opening: list[Sample] = []
    client = Client(port)
    try:
        for _ in range(10):  # bounded: 5 timeouts open it
            sample = await client.get(path, TIMEOUT_S + 5)
            opening.append(sample)
            if sample.error == "circuit_open":
                break
    finally:
        client.close()
    if not opening or opening[-1].error != "circuit_open":
        raise RuntimeError(f"the breaker did not open: {opening}")
    opened = upstream.stats()
    # nginx (a C server: the machine's floor), the sidecar's /healthz and the open breaker
    # alternate in chunks, so machine noise hits all three alike
    targets = (("nginx", nginx_port, "/"), ("healthz", port, "/healthz"), ("open", port, path))
    chunks = 4
    runs = {}
    for mode, conc in (("sequential", 1), ("concurrent", concurrency)):
        merged = {name: Load() for name, _, _ in targets}
        for _, target_port, target in targets:
            await load(target_port, target, min(200, requests), conc, 5.0)  # warm-up
        for _ in range(chunks):
            for name, target_port, target in targets:
                part = await load(target_port, target, requests // chunks, conc, 5.0)
                merged[name].samples += part.samples
                merged[name].wall_s += part.wall_s
        for name, result in merged.items():
            runs[f"{name} {mode}"] = result.summary()
    # the same with wrk (C client): the Python client's own jitter left out
    wrk_runs = {}
    for conc in (1, concurrency):
        for name, target_port, target in targets:
            url = f"http://127.0.0.1:{target_port}{target}"
            wrk_runs[f"{name} c={conc}"] = wrk_latency(url, conc, wrk_seconds)
    after = upstream.stats()
    # the sidecar's own view: request_duration_seconds of the route, the 5 timeouts left out
    buckets = {
        le: metric_sum(port, "request_duration_seconds_bucket", route="inventory", le=le)
        for le in ("0.0005", "0.001", "0.0025", "1.0")
    }
    answered = buckets.pop("1.0")
    server_side = {f"share_within_{le}s": n / answered for le, n in buckets.items()}
    server_side["answers"] = answered
    return {
        "server_side_open": server_side,
        "wrk": wrk_runs,
        "upstream_connections_opening": opened["connections"] - before["connections"],
        "upstream_connections_while_open": after["connections"] - opened["connections"],
        "upstream_bytes_while_open": after["bytes"] - opened["bytes"],
        "opening": [
            {"status": s.status, "error": s.error, "latency_ms": s.latency_s * 1000}
            for s in opening
        ],
        "runs": runs,
    }


def part_breaker(requests: int, concurrency: int, wrk_seconds: int) -> dict:
    nginx_port = free_port()
    nginx = Nginx(NGINX_UPSTREAM, port=nginx_port)
    upstream = sidecar = None
    try:
        wait_http(f"http://127.0.0.1:{nginx_port}/")
        upstream = Upstream("hang")
        port = free_port()
        sidecar = start_sidecar(hang_policy(port, upstream.port), sidecar_env())
        return asyncio.run(
            breaker_phase(port, upstream, nginx_port, requests, concurrency, wrk_seconds)
        )
    finally:
        if sidecar is not None:
            stop(sidecar)
        if upstream is not None:
            upstream.stop()
        nginx.stop()


def wrk_latency(url: str, connections: int, seconds: int) -> dict:
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "--latency", "-t1", f"-c{connections}",
         f"-d{seconds}s", "--timeout", "5s", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout  # fmt: skip

    def find(pattern: str) -> str:
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"wrk output not understood:\n{out}")
        return match.group(1)

    return {
        "requests": int(find(r"(\d+) requests in")),
        "p50_ms": _ms(find(r"(?m)^\s+50%\s+(\S+)")),
        "p99_ms": _ms(find(r"(?m)^\s+99%\s+(\S+)")),
    }


# -- 2. retries against a flaky upstream ------------------------------------------------


def flaky_policy(port: int, upstream_port: int, retries: bool) -> dict:
    policy = sidecar_policy(port, upstream_port)
    policy["upstreams"]["inventory"].update(  # type: ignore[index]
        {
            "retry": {
                "max_attempts": 3 if retries else 1,
                "base_delay": "10ms",
                "budget": BUDGET,
            },
            # out of reach: this part measures retries, not the breaker
            "circuit_breaker": {"failure_threshold": 1_000_000},
        }
    )
    return policy


def flaky_run(retries: bool, requests: int, concurrency: int) -> dict:
    upstream = Upstream("flaky")
    port = free_port()
    sidecar = start_sidecar(flaky_policy(port, upstream.port, retries), sidecar_env())
    try:
        result = asyncio.run(load(port, "/api/v1/productos", requests, concurrency, 10.0))
        seen = upstream.stats()
        retried = metric_sum(port, "retries_total", upstream="inventory")
        refused = metric_sum(port, "retry_budget_exhausted_total", upstream="inventory")
    finally:
        stop(sidecar)
        upstream.stop()
    summary = result.summary()
    errors = sum(1 for s in result.samples if s.status != 200)
    allowance = BUDGET["ratio"] * requests + BUDGET["min_per_second"] * max(
        result.wall_s, BUDGET_WINDOW_S
    )
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests,
        "upstream_requests": seen["requests"],
        "upstream_failures": seen["failed"],
        "upstream_per_client_request": seen["requests"] / requests,
        "retries": retried,
        "retries_refused_by_budget": refused,
        "budget_allowance": allowance,
        "within_budget": seen["requests"] - requests <= allowance,
        "wall_s": result.wall_s,
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "codes": summary["codes"],
    }


def part_flaky(requests: int, concurrency: int, rounds: int) -> dict:
    runs: dict[str, list[dict]] = {"retries on": [], "retries off": []}
    for _ in range(rounds):
        runs["retries on"].append(flaky_run(True, requests, concurrency))
        runs["retries off"].append(flaky_run(False, requests, concurrency))
    on = sum(r["errors"] for r in runs["retries on"])
    off = sum(r["errors"] for r in runs["retries off"])
    return {
        "runs": runs,
        "errors_on": on,
        "errors_off": off,
        "error_reduction": 1 - on / off if off else 0.0,
    }


# -- main --------------------------------------------------------------------------------


def sidecar_env() -> dict[str, str]:
    return {**os.environ, "JWT_SECRET": SECRET}


def report(breaker: dict, flaky: dict, args: argparse.Namespace) -> None:
    print("\n1. Hanging upstream, timeout 2s, breaker opens after 5 failures")
    for i, s in enumerate(breaker["opening"], 1):
        print(f"   request {i}: {s['status']} {s['error']} in {s['latency_ms']:.0f} ms")
    print(f"   {'':22}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  codes")
    for name, row in breaker["runs"].items():
        print(
            f"   {name:22}{row['requests']:>9}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
            f"{row['max_ms']:>9.3f}  {row['codes']}"
        )
    print(f"   wrk (C client) in the same run: {'':4}{'p50 ms':>9}{'p99 ms':>9}")
    for name, row in breaker["wrk"].items():
        print(f"   {'':13}{name:22}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}")
    runs = breaker["runs"]
    for mode in ("sequential", "concurrent"):
        p99, floor = runs[f"open {mode}"]["p99_ms"], runs[f"nginx {mode}"]["p99_ms"]
        verdict = "met" if p99 <= OPEN_P99_AIM_MS else "NOT met"
        p50 = runs[f"open {mode}"]["p50_ms"]
        print(
            f"   headline, {mode}: {TIMEOUT_S:g} s -> p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms (aim <= {OPEN_P99_AIM_MS:g} ms: {verdict}; "
            f"nginx in the same run: p99 {floor:.2f} ms)"
        )
    server = breaker["server_side_open"]
    print(
        f"   sidecar's own histogram, {server['answers']:.0f} open-breaker answers: "
        f"{server['share_within_0.0005s']:.1%} within 0.5 ms, "
        f"{server['share_within_0.001s']:.1%} within 1 ms, "
        f"{server['share_within_0.0025s']:.1%} within 2.5 ms"
    )
    print(
        f"   upstream connections: {breaker['upstream_connections_opening']} while opening, "
        f"{breaker['upstream_connections_while_open']} while open"
    )
    print(
        f"\n2. Upstream failing {FAIL_RATE:.0%} (503, seeded), {args.flaky_requests} GETs, "
        f"concurrency {args.concurrency}, {args.flaky_rounds} rounds each"
    )
    print(
        f"   {'':13}{'errors':>8}{'rate':>8}{'upstream/client':>16}{'retries':>9}"
        f"{'refused':>9}{'allowance':>10}{'wall s':>8}{'p99 ms':>8}"
    )
    for name, runs in flaky["runs"].items():
        for r in runs:
            print(
                f"   {name:13}{r['errors']:>8}{r['error_rate']:>8.2%}"
                f"{r['upstream_per_client_request']:>16.3f}{r['retries']:>9.0f}"
                f"{r['retries_refused_by_budget']:>9.0f}{r['budget_allowance']:>10.0f}"
                f"{r['wall_s']:>8.1f}{r['p99_ms']:>8.1f}"
            )
    verdict = "met" if flaky["error_reduction"] >= ERROR_REDUCTION_AIM else "NOT met"
    within = all(r["within_budget"] for r in flaky["runs"]["retries on"])
    print(
        f"   errors: {flaky['errors_off']} without retries -> {flaky['errors_on']} with: "
        f"{flaky['error_reduction']:.1%} fewer (aim >= {ERROR_REDUCTION_AIM:.0%}: {verdict}); "
        f"extra upstream load within the budget's allowance: {within}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--flaky-requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--flaky-rounds", type=int, default=2)
    parser.add_argument("--serve", choices=["hang", "flaky"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--control-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    parser.add_argument("--fail-rate", type=float, default=FAIL_RATE, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_upstream(args)
        return
    if args.quick:
        args.requests, args.flaky_requests, args.flaky_rounds = 500, 1000, 1
    ensure_tools("nginx", "wrk")
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(LOAD_CORE)})  # children are pinned by taskset explicitly
    try:
        breaker = part_breaker(args.requests, args.concurrency, 2 if args.quick else 3)
        flaky = part_flaky(args.flaky_requests, args.concurrency, args.flaky_rounds)
    finally:
        os.sched_setaffinity(0, affinity)
    report(breaker, flaky, args)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "failfast.json").write_text(
        json.dumps({"args": vars(args), "breaker": breaker, "flaky": flaky}, indent=2)
    )


if __name__ == "__main__":
    main()
