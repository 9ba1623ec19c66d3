"""WebSocket fan-out: delivery latency, CPU and memory at 1,000 / 5,000 / 10,000 sockets.

    python bench/fanout.py [--clients 1000 5000 10000] [--seconds 10] [--rate 10] [--rounds 3]

For each N, a server process (pinned to core 0) runs either the hub behind the same tiny
upgrade server the tests use, or a bare baseline (hand-made handshake, one
`transport.write` of the same frame per socket per event: no sessions, no flow control).
This process (core 1) opens N sockets with a minimal WebSocket client (raw handshake and
frame parsing), then POSTs `/api/v1/events` at `--rate`/s with the send time in `data`.
Modes alternate within each round; the table gives the median over rounds.

Columns: client-observed latency p50/p99/max over every (client, event); the time until
the last client had each event (p50/max over events); the server's own fan-out time, from
the ingest request's arrival to the write to the last socket (p99/max); server CPU per
delivery; server RSS per 1,000 sockets (VmRSS after connecting minus before); loopback
drops (`/proc/net/softnet_stat`) and TCP retransmits during the run, which explain tails
on a busy 2-core box.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, cast

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import LOAD_CORE, cpu_seconds, free_port, pinned, python, server_frame_at

TOKEN = "bench-token"
CHANNEL_PATHS = {b"/api/v1/ws/notifications": "notifications", b"/api/v1/ws/alerts": "alerts"}
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B19"


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def network_losses() -> tuple[int, int]:
    """(packets the loopback backlog dropped, TCP segments retransmitted) so far."""
    softnet = Path("/proc/net/softnet_stat").read_text().splitlines()
    drops = sum(int(line.split()[1], 16) for line in softnet)
    snmp = Path("/proc/net/snmp").read_text().splitlines()
    tcp = [line.split() for line in snmp if line.startswith("Tcp:")]
    return drops, int(tcp[1][tcp[0].index("RetransSegs")])


# -- server side -----------------------------------------------------------------------


class _Front(asyncio.Protocol):
    """One request head: an upgrade is handed over, a POST publishes, GET /stats answers."""

    def __init__(self, server: BenchServer) -> None:
        self._server = server
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        method, path = self._buffer.split(b" ", 2)[:2]
        if path == b"/stats":
            _answer(self._transport, self._server.stats())
        elif method == b"GET":
            self._server.upgrade(self._transport, self._buffer, CHANNEL_PATHS[path])
        else:
            length = int(self._buffer.lower().split(b"content-length:", 1)[1].split(b"\r\n")[0])
            if len(self._buffer) - end - 4 >= length:
                body = self._buffer[end + 4 : end + 4 + length]
                self._server.spawn(self._server.publish(self._transport, body))


def _answer(transport: asyncio.Transport, answer: dict[str, Any]) -> None:
    payload = orjson.dumps(answer)
    transport.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (len(payload), payload)
    )
    transport.close()


class BenchServer:
    """The hub (or the bare baseline) plus when each event arrived and was fully written."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sockets: list[asyncio.Transport] = []
        self.next_id = 0
        self.accepted_at: list[float] = []
        self.written_at: list[float] = []
        self.open_sockets = 0
        self._tasks: set[asyncio.Task[None]] = set()
        if mode == "hub":
            from policies.model import AlertsPolicy, WebSocketPolicy
            from proxy.hub.hub import Hub
            from proxy.hub.interfaces import NoopObserver

            server = self

            class FanoutClock(NoopObserver):
                def connection_opened(self, channel: str) -> None:
                    server.open_sockets += 1

                def connection_closed(self, channel: str) -> None:
                    server.open_sockets -= 1

                def events_delivered(self, channel: str, count: int) -> None:
                    events = count // max(1, server.open_sockets)
                    server.written_at.extend([time.monotonic()] * events)

            self.hub = Hub(
                WebSocketPolicy(),
                AlertsPolicy(),
                verifier=_NoVerifier(),
                admin_roles=("admin",),
                ingest_token=TOKEN,
                observer=FanoutClock(),
            )

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def upgrade(self, transport: asyncio.Transport, raw: bytes, channel: str) -> None:
        if self.mode == "hub":
            self.hub.upgrade(transport, raw, channel, "127.0.0.1")
            return
        key = raw.lower().split(b"sec-websocket-key:", 1)[1].split(b"\r\n")[0].strip()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.sockets.append(transport)

    async def publish(self, transport: asyncio.Transport, body: bytes) -> None:
        self.accepted_at.append(time.monotonic())
        if self.mode == "hub":
            _status, answer = await self.hub.ingest(body, f"Bearer {TOKEN}".encode())
        else:
            from proxy.hub.events import make_event, parse_event

            accepted = parse_event(body, time.time())
            self.next_id += 1
            frame = make_event(self.next_id, accepted.type, accepted.payload).frame
            for sock in self.sockets:
                if not sock.is_closing():
                    sock.write(frame)
            self.written_at.append(time.monotonic())
            answer = {"id": self.next_id}
        _answer(transport, answer)

    def stats(self) -> dict[str, Any]:
        pairs = zip(self.accepted_at, self.written_at, strict=False)
        return {"fanout_s": [written - accepted for accepted, written in pairs]}


class _NoVerifier:
    def verify(self, authorization_value: bytes | str | None) -> NoReturn:
        from proxy.errors import InvalidToken

        raise InvalidToken()


async def serve(port: int, mode: str) -> None:
    server = BenchServer(mode)
    if mode == "hub":
        await server.hub.start()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: _Front(server), "127.0.0.1", port, backlog=4096)
    async with listener:
        await listener.serve_forever()


# -- client side -----------------------------------------------------------------------


class Deliveries:
    """Every (client, event) arrival: latency samples and the last arrival per event."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.last_arrival: dict[int, float] = {}
        self.sent_at: dict[int, float] = {}
        self._decoded: dict[bytes, tuple[int, float]] = {}

    def record(self, payload: bytes, now: float) -> None:
        known = self._decoded.get(payload)
        if known is None:
            message = orjson.loads(payload)
            if "id" not in message:
                return
            known = self._decoded[payload] = (message["id"], message["data"]["sent_at"])
        event_id, sent = known
        self.latencies.append(now - sent)
        self.sent_at[event_id] = sent
        if now > self.last_arrival.get(event_id, 0.0):
            self.last_arrival[event_id] = now


class MiniClient(asyncio.Protocol):
    """Handshake by hand, then parse server frames (unmasked); answer pings."""

    def __init__(self, deliveries: Deliveries, ready: asyncio.Future[None]) -> None:
        self._deliveries = deliveries
        self._ready = ready
        self._buffer = b""
        self._open = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        key = base64.b64encode(os.urandom(16))
        self._transport.write(
            b"GET /api/v1/ws/notifications HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self._buffer + data
        if not self._open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            self._open = True
            if not self._ready.done():
                self._ready.set_result(None)
            buffer = buffer[end + 4 :]
        offset = 0
        while (frame := server_frame_at(buffer, offset)) is not None:
            opcode, start, end = frame
            if opcode == 0x1:
                self._deliveries.record(buffer[start:end], now)
            elif opcode == 0x9 and self._transport is not None:
                self._transport.write(b"\x8a\x80\x00\x00\x00\x00")  # masked empty pong
            offset = end
        self._buffer = buffer[offset:]


async def open_clients(port: int, count: int, deliveries: Deliveries) -> list[asyncio.Transport]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(256)

    async def one() -> asyncio.Transport:
        async with gate:
            ready: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: MiniClient(deliveries, ready), "127.0.0.1", port
            )
            await asyncio.wait_for(ready, 30)
            return transport

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def request(port: int, head: bytes, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b"Host: bench\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    answer = await reader.read()
    writer.close()
    return answer


async def measure(port: int, server_pid: int, clients: int, seconds: float, rate: float) -> dict:
    deliveries = Deliveries()
    before = rss_kib(server_pid)
    started = time.monotonic()
    transports = await open_clients(port, clients, deliveries)
    connect_s = time.monotonic() - started
    after = rss_kib(server_pid)
    events = int(seconds * rate)
    cpu_before, losses_before = cpu_seconds([server_pid]), network_losses()
    tick = time.monotonic()
    for n in range(events):
        body = orjson.dumps({"type": "bench_tick", "n": n, "data": {"sent_at": time.time()}})
        answer = await request(port, b"POST /api/v1/events HTTP/1.1\r\n", body)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        tick += 1 / rate
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    deadline = time.monotonic() + 10
    while len(deliveries.latencies) < clients * events and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    cpu = cpu_seconds([server_pid]) - cpu_before
    drops, retransmits = (b - a for a, b in zip(losses_before, network_losses(), strict=True))
    stats = await request(port, b"GET /stats HTTP/1.1\r\n")
    fanout = sorted(orjson.loads(stats.split(b"\r\n\r\n", 1)[1])["fanout_s"])
    for transport in transports:
        transport.abort()
    latencies = sorted(deliveries.latencies)
    spreads = sorted(deliveries.last_arrival[i] - deliveries.sent_at[i] for i in deliveries.sent_at)
    return {
        "delivered": len(latencies) / (clients * events),
        "p50_ms": _pct(latencies, 0.50) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
        "max_ms": latencies[-1] * 1000,
        "last_p50_ms": statistics.median(spreads) * 1000,
        "last_max_ms": spreads[-1] * 1000,
        "fanout_p99_ms": _pct(fanout, 0.99) * 1000,
        "fanout_max_ms": fanout[-1] * 1000,
        "cpu_us_per_delivery": cpu / max(1, len(latencies)) * 1e6,
        "rss_mib_per_1000": (after - before) / 1024 / clients * 1000,
        "connect_s": connect_s,
        "drops": drops,
        "retransmits": retransmits,
    }


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def start_server(mode: str) -> tuple[subprocess.Popen[bytes], int]:
    """The server process and its port; a port taken meanwhile by another process: retry."""
    for _attempt in range(3):
        port = free_port()
        args = [python(), str(Path(__file__).resolve()), "serve", "--port", str(port)]
        server = pinned([*args, "--mode", mode])
        deadline = time.monotonic() + 15
        while server.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return server, port
            except OSError:
                time.sleep(0.05)
        server.kill()
        server.wait(10)
    raise RuntimeError("bench server did not start")


def run_one(mode: str, clients: int, seconds: float, rate: float) -> dict:
    server, port = start_server(mode)
    try:
        return asyncio.run(measure(port, server.pid, clients, seconds, rate))
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


COLUMNS = [
    ("delivered", "{:.2%}"),
    ("p50_ms", "{:.0f}"),
    ("p99_ms", "{:.0f}"),
    ("max_ms", "{:.0f}"),
    ("last_p50_ms", "{:.0f}"),
    ("last_max_ms", "{:.0f}"),
    ("fanout_p99_ms", "{:.0f}"),
    ("fanout_max_ms", "{:.0f}"),
    ("cpu_us_per_delivery", "{:.2f}"),
    ("rss_mib_per_1000", "{:.2f}"),
    ("connect_s", "{:.1f}"),
    ("drops", "{:.0f}"),
    ("retransmits", "{:.0f}"),
]
RATIOS = {"fanout_p99_ms", "cpu_us_per_delivery", "rss_mib_per_1000", "p50_ms", "p99_ms"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "serve"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="hub", choices=["hub", "bare"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit()
    import uvloop

    if args.command == "serve":
        uvloop.run(serve(args.port, args.mode))
        return
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print("| server | N | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for clients in args.clients:
        print(f"<!-- N={clients}: load average before: {os.getloadavg()[0]:.2f} -->", flush=True)
        runs: dict[str, list[dict]] = {"bare": [], "hub": []}
        for round_no in range(args.rounds):
            order = ("bare", "hub") if round_no % 2 == 0 else ("hub", "bare")
            for mode in order:
                runs[mode].append(run_one(mode, clients, args.seconds, args.rate))
        medians = {
            m: {k: statistics.median(r[k] for r in rs) for k, _ in COLUMNS}
            for m, rs in runs.items()
        }
        for mode, values in medians.items():
            cells = " | ".join(fmt.format(values[name]) for name, fmt in COLUMNS)
            print(f"| {mode} | {clients} | {cells} |", flush=True)
        ratios = " | ".join(
            f"{medians['hub'][n] / medians['bare'][n]:.2f}x" if n in RATIOS else ""
            for n, _ in COLUMNS
        )
        print(f"| hub/bare | {clients} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
