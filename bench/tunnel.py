"""WebSocket tunnel: messages per second through the sidecar vs straight to the upstream.

    python bench/tunnel.py [--messages 20000] [--size 128] [--window 64] [--rounds 3]

The upstream is an aiohttp echo WebSocket server in its own process; the sidecar runs in
its own process too (both pinned to the server core). The client keeps `window` messages
in flight on one connection and counts echoes per second. Rounds alternate direct and
through the sidecar so drift in the machine hits both; the figure is the ratio of the two
rates in the same run (the sidecar's relay adds one hop of reads and writes).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import free_port, pinned, python, wait_http
from bench.forwarding import sidecar_policy, start_sidecar


def serve(port: int) -> None:
    """The echo upstream (run as `python bench/tunnel.py --serve PORT`)."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_bytes(msg.data)
        return ws

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def rate(url: str, messages: int, size: int, window: int) -> float:
    """Echoed messages per second on one connection with `window` in flight."""
    payload = b"m" * size
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        sent = received = 0
        started = time.perf_counter()
        while received < messages:
            while sent < messages and sent - received < window:
                await ws.send_bytes(payload)
                sent += 1
            msg = await ws.receive(timeout=30)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            received += 1
        return messages / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", type=int)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    upstream_port, sidecar_port = free_port(), free_port()
    upstream = pinned([python(), str(Path(__file__).resolve()), "--serve", str(upstream_port)])
    sidecar = None
    try:
        wait_http(f"http://127.0.0.1:{upstream_port}/healthz")
        sidecar = start_sidecar(sidecar_policy(sidecar_port, upstream_port))
        direct: list[float] = []
        through: list[float] = []
        for _ in range(args.rounds):
            for port, rates in ((upstream_port, direct), (sidecar_port, through)):
                url = f"ws://127.0.0.1:{port}/ws"
                rates.append(asyncio.run(rate(url, args.messages, args.size, args.window)))
        best_direct, best_through = max(direct), max(through)
        print(f"messages of {args.size} B, {args.window} in flight, best of {args.rounds}:")
        print(f"  direct:      {best_direct:,.0f} msg/s (median {statistics.median(direct):,.0f})")
        print(
            f"  via sidecar: {best_through:,.0f} msg/s (median {statistics.median(through):,.0f})"
        )
        print(f"  ratio (sidecar / direct): {best_through / best_direct:.2f}")
    finally:
        for proc in (sidecar, upstream):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
