"""Memory attacks against the sidecar (CONTRACT 14), with a well-behaved client alongside.

    .venv/bin/python -m bench.abuse                 # each attack 10 s
    .venv/bin/python -m bench.abuse --seconds 30 --slow-consumers 3000
    .venv/bin/python -m bench.abuse --mixed-minutes 10    # the attacks below, rotating

For each attack: the sidecar's RSS before, at its peak and after the attacker left, and a
well-behaved client's p50/p99 latency (sequential GETs through the sidecar to the app)
against the same client on a quiet sidecar measured first in the same run. Attacks:
- pipeline: one connection pipelining GETs and never reading the answers;
- ping: one WebSocket flooding protocol pings and never reading the pongs;
- slow-consumers: N WebSockets that never read while 1 KB events are published;
- stalled-bodies: connections that announce a body, send 10 bytes of it and stall;
- limit-dodges: logins at percent-encoded and dot-segment spellings of the login path,
  which a 5/min per-IP rule must still count (the admitted ones are reported);
- idle: connections that send nothing.
`--mixed-minutes M` runs the quiet phase, then all six in turn, `--mixed-slot` seconds each,
for M minutes, the good client running throughout. Every loop is bounded by `--seconds`
or `--mixed-minutes`; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.common import REPO, free_port, wait_http

SECRET = "bench-secret-0123456789abcdef0123456789"
EVENTS_TOKEN = "bench-events-token"
LOGIN = "/api/v1/auth/login"
DODGES = ("/api/v1/auth/%6cogin", "/api/v1/auth/%6C%6F%67%69%6E", "/api/v1/auth/./login",
          "/api/v1/x/../auth/login", "/api/v1/%61uth/login")  # fmt: skip
Attack = Callable[[int, float], Coroutine[Any, Any, None]]  # (port, end) -> runs until end
MIXED_CONNECTIONS = 300  # per stalled-bodies and idle batch


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def policy(port: int, app_port: int) -> dict[str, object]:
    generous = "1000000/min"
    return {
        "version": 1,
        "server": {"listen": f"127.0.0.1:{port}"},
        "upstreams": {"inventory": {"url": f"http://127.0.0.1:{app_port}"}},
        "routes": [{"name": "inventory", "path_prefix": "/", "upstream": "inventory"}],
        "rate_limits": {
            "roles": {r: generous for r in ("admin", "viewer", "anonymous")},
            "endpoints": [{"name": "login", "path": LOGIN, "limit": "5/min", "key": "ip"}],
        },
    }


async def good_client(url: str, seconds: float) -> list[float]:
    """Sequential GETs for `seconds`: their latencies in ms."""
    latencies = []
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < end:
            started = time.perf_counter()
            async with http.get(url) as resp:
                await resp.read()
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")


async def raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def websocket(port: int) -> asyncio.StreamWriter:
    reader, writer = await raw(port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /api/v1/ws/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )  # fmt: skip
    await reader.readuntil(b"\r\n\r\n")
    return writer


async def keep_writing(writer: asyncio.StreamWriter, burst: bytes, end: float) -> None:
    with contextlib.suppress(OSError):
        while time.monotonic() < end:
            writer.write(burst)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.drain(), 0.5)


async def pipeline(port: int, end: float) -> None:
    _, writer = await raw(port)
    await keep_writing(writer, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" * 1000, end)
    writer.close()


async def ping(port: int, end: float) -> None:
    writer = await websocket(port)
    frame = bytes([0x89, 0x80 | 125]) + b"\x00\x00\x00\x00" + b"p" * 125
    await keep_writing(writer, frame * 1000, end)
    writer.close()


def slow_consumers(count: int) -> Attack:
    async def attack(port: int, end: float) -> None:
        writers = [await websocket(port) for _ in range(count)]
        headers = {"Authorization": f"Bearer {EVENTS_TOKEN}"}
        event = {"type": "bulk", "pad": "x" * 1000}
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < end:
                url = f"http://127.0.0.1:{port}/api/v1/events"
                async with http.post(url, json=event, headers=headers) as resp:
                    await resp.read()
                await asyncio.sleep(0.01)
        for writer in writers:
            writer.close()

    return attack


async def reopening(port: int, end: float, opening: bytes, hold_s: float) -> None:
    """Batches of connections that send `opening` and then nothing, reopened every `hold_s`."""
    while time.monotonic() < end:
        conns = await asyncio.gather(*(raw(port) for _ in range(MIXED_CONNECTIONS)))
        for _, writer in conns:
            writer.write(opening)
        await asyncio.sleep(max(min(hold_s, end - time.monotonic()), 0))
        for _, writer in conns:
            writer.close()


async def stalled_bodies(port: int, end: float) -> None:
    head = b"POST /api/v1/ventas HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
    await reopening(port, end, head + b"0123456789", 12)


async def idle(port: int, end: float) -> None:
    await reopening(port, end, b"", 12)


async def status_of(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await reader.read()  # the request says Connection: close
    writer.close()
    return int(answer.split(b" ", 2)[1]) if answer else 0


class LimitDodges:
    """Logins at other spellings of the login path; counts how many were not limited."""

    def __init__(self) -> None:
        self.sent = self.admitted = 0

    async def __call__(self, port: int, end: float) -> None:
        body = b'{"username":"admin","password":"wrong"}'
        while time.monotonic() < end:
            path = DODGES[self.sent % len(DODGES)].encode()
            request = (b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                       b"Content-Type: application/json\r\nContent-Length: "
                       + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
            status = await status_of(port, request)
            self.sent += 1
            self.admitted += status != 429
            await asyncio.sleep(0.002)


def rotating(attacks: dict[str, Attack], slot_s: float, pid: int) -> Attack:
    """One attack after another, `slot_s` seconds each (restarted when the sidecar closes
    it sooner, as the pipelining and ping attackers are), until the end."""

    async def attack(port: int, end: float) -> None:
        started = time.monotonic()
        for name in itertools.cycle(attacks):
            if time.monotonic() >= end:
                return
            minute = (time.monotonic() - started) / 60
            print(f"  {minute:4.1f} min  RSS {rss_mib(pid):.0f} MiB  -> {name}", flush=True)
            slot_end = min(time.monotonic() + slot_s, end)
            while time.monotonic() < slot_end:  # again if the sidecar closed it early
                await attacks[name](port, slot_end)

    return attack


async def measure(
    name: str, attack: Attack, port: int, pid: int, seconds: float
) -> dict[str, float]:
    before = rss_mib(pid)
    end = time.monotonic() + seconds
    peak = before

    async def sample() -> None:
        nonlocal peak
        while time.monotonic() < end + 1:
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.2)

    url = f"http://127.0.0.1:{port}/api/v1/productos?limit=5"
    sampler = asyncio.create_task(sample())
    attacker = asyncio.create_task(attack(port, end))
    latencies = await good_client(url, seconds)
    await attacker
    await sampler
    await asyncio.sleep(2)  # the attacker's sockets close and their buffers go
    return {
        "before": before,
        "peak": peak,
        "after": rss_mib(pid),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def report(name: str, r: dict[str, float], q50: float, q99: float) -> None:
    print(
        f"{name:15} RSS before {r['before']:.0f} MiB, peak {r['peak']:.0f}, "
        f"after {r['after']:.0f}; good client p50 {r['p50']:.2f} ms "
        f"({r['p50'] / q50:.1f}x quiet), p99 {r['p99']:.2f} ms ({r['p99'] / q99:.1f}x)"
    )


async def main(seconds: float, consumers: int, mixed_minutes: float, slot_s: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="abuse-"))
    env = dict(os.environ, JWT_SECRET=SECRET, PROXY_EVENTS_TOKEN=EVENTS_TOKEN)
    env["UPSTREAM_SEED_PASSWORD"] = "bench"
    app_port, port = free_port(), free_port()
    config = workdir / "policy.yaml"
    config.write_text(yaml.safe_dump(policy(port, app_port)))
    app = subprocess.Popen(
        [sys.executable, "-m", "upstream_app", "--host", "127.0.0.1", "--port", str(app_port),
         "--db", str(workdir / "inv.db")],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--config", str(config)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{app_port}/healthz")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        quiet = await good_client(f"http://127.0.0.1:{port}/api/v1/productos?limit=5", seconds)
        q50, q99 = percentile(quiet, 50), percentile(quiet, 99)
        print(f"quiet: p50 {q50:.2f} ms, p99 {q99:.2f} ms, RSS {rss_mib(sidecar.pid):.0f} MiB")
        attacks = {"pipeline": pipeline, "ping": ping, "slow-consumers": slow_consumers(consumers)}
        if not mixed_minutes:
            for name, attack in attacks.items():
                report(name, await measure(name, attack, port, sidecar.pid, seconds), q50, q99)
            return
        dodges = LimitDodges()
        attacks |= {"stalled-bodies": stalled_bodies, "limit-dodges": dodges, "idle": idle}
        mixed = rotating(attacks, slot_s, sidecar.pid)
        report("mixed", await measure("mixed", mixed, port, sidecar.pid, mixed_minutes * 60),
               q50, q99)  # fmt: skip
        bound = 5 * (int(mixed_minutes) + 1)
        print(f"limit-dodges: {dodges.admitted} of {dodges.sent} logins not limited "
              f"(the rule admits 5/min: at most {bound} in the run)")  # fmt: skip
    finally:
        for proc in (sidecar, app):
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--slow-consumers", type=int, default=300, help="WebSockets never read")
    parser.add_argument("--mixed-minutes", type=float, default=0.0, help="rotating attacks")
    parser.add_argument("--mixed-slot", type=float, default=30.0, help="seconds per attack")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.slow_consumers, args.mixed_minutes, args.mixed_slot))
