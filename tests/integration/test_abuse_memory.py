"""Attacks on memory and descriptors (CONTRACT 14), each against the real sidecar process:
what one client makes the sidecar hold stays bounded, and the sidecar goes on serving."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
import sys
import time
from pathlib import Path

import aiohttp

from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import Process, base_env, free_port, wait_http

RSS_GROWTH_BOUND_KB = 64 * 1024
"""Generous on purpose: the bound is against growth without limit (hundreds of MB)."""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def raw_connection(
    port: int, receive_buffer: int = 4096
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client socket with a small receive buffer: a client that does not read fills it fast."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=1 << 22)


async def flood(
    writer: asyncio.StreamWriter, burst: bytes, pid: int, max_bytes: int = 200 * 1024 * 1024
) -> tuple[int, int]:
    """Write `burst` again and again, never reading, until the sidecar stops taking it (a
    drain that does not finish in 2 s) or `max_bytes`; the bytes sent and the sidecar's
    peak RSS. (The kernel buffers between the two hold tens of MB first.)"""
    sent = 0
    peak = rss_kb(pid)
    deadline = time.monotonic() + 60
    while sent < max_bytes and time.monotonic() < deadline:
        writer.write(burst)
        try:
            await asyncio.wait_for(writer.drain(), 2.0)
        except TimeoutError:
            break  # the sidecar stopped reading: the bound holds
        sent += len(burst)
        peak = max(peak, rss_kb(pid))
    peak = max(peak, rss_kb(pid))
    return sent, peak


async def test_pipelined_requests_never_read_stop_the_reading(upstream, sidecar) -> None:
    pid = sidecar.proc.pid
    before = rss_kb(pid)
    _, writer = await raw_connection(sidecar.port)
    burst = b"GET /echo/flood HTTP/1.1\r\nHost: t\r\n\r\n" * 1000
    sent, peak = await flood(writer, burst, pid)
    writer.close()
    assert sent < 200 * 1024 * 1024, "the sidecar read every request however little was read"
    assert peak - before < RSS_GROWTH_BOUND_KB, f"RSS grew by {peak - before} KiB"
    async with aiohttp.ClientSession() as http, http.get(f"{sidecar.url}/echo/after") as resp:
        assert resp.status == 200


def websocket_upgrade(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /api/v1/ws/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def close_code(data: bytes) -> int | None:
    """The code of the first close frame in a stream of server frames (unmasked)."""
    offset = 0
    while offset + 2 <= len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        offset += 2
        if length == 126:
            length = int.from_bytes(data[offset : offset + 2], "big")
            offset += 2
        elif length == 127:
            length = int.from_bytes(data[offset : offset + 8], "big")
            offset += 8
        if opcode == 0x8:
            return int.from_bytes(data[offset : offset + 2], "big")
        offset += length
    return None


async def read_to_the_end(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    try:
        async with asyncio.timeout(30):
            while chunk := await reader.read(1 << 20):
                data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


async def slow_consumer_disconnects(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    line = 'resilience_proxy_websocket_slow_consumer_disconnects_total{channel="notifications"}'
    found = re.search(re.escape(line) + r" (\S+)", text)
    assert found is not None
    return float(found.group(1))


async def test_websocket_ping_flood_never_read_is_closed_1013(upstream, sidecar) -> None:
    pid = sidecar.proc.pid
    before = peak = rss_kb(pid)
    reader, writer = await raw_connection(sidecar.port)
    writer.write(websocket_upgrade(sidecar.port))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    ping = bytes([0x89, 0x80 | 125]) + b"\x00\x00\x00\x00" + b"p" * 125  # masked, zero key
    async with aiohttp.ClientSession() as http:
        # Flood, never reading, until the sidecar says it closed this client. (Before the
        # budget is reached, the kernel buffers on both sides hold some MB of pongs.)
        deadline = time.monotonic() + 120
        while await slow_consumer_disconnects(http, sidecar.url) == 0:
            assert time.monotonic() < deadline, "never closed as a slow consumer"
            writer.write(ping * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.drain(), 1.0)
            peak = max(peak, rss_kb(pid))
    data = await read_to_the_end(reader)
    writer.close()
    assert close_code(data) == 1013
    assert peak - before < RSS_GROWTH_BOUND_KB, f"RSS grew by {peak - before} KiB"


async def test_connections_beyond_max_connections_are_closed_at_once(
    upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(upstream.url, server={"max_connections": 4, "header_timeout": "30s"})
    async with aiohttp.ClientSession() as http, http.get(f"{sidecar.url}/metrics") as resp:
        assert "resilience_proxy_connections_refused_total 0.0" in await resp.text()
    held = [await asyncio.open_connection("127.0.0.1", sidecar.port) for _ in range(4)]
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    try:
        async with asyncio.timeout(5):
            refused = await reader.read(100)  # EOF (or a reset) at once: nothing is served
    except ConnectionResetError:
        refused = b""
    writer.close()
    assert refused == b""
    for _, held_writer in held:
        held_writer.close()
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 10
        while True:  # the held ones are seen closed soon after
            try:
                async with http.get(f"{sidecar.url}/metrics") as resp:
                    text = await resp.text()
                break
            except aiohttp.ClientError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    found = re.search(r"^resilience_proxy_connections_refused_total (\S+)$", text, re.M)
    assert found is not None and float(found.group(1)) >= 1


async def test_a_connection_that_sends_nothing_is_closed_after_header_timeout(
    upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(
        upstream.url, server={"header_timeout": "500ms", "keepalive_timeout": "75s"}
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    async with asyncio.timeout(10):  # far below keepalive_timeout
        assert await reader.read(100) == b""
    writer.close()


async def test_out_of_file_descriptors_is_logged_once_per_streak(upstream, tmp_path) -> None:
    port = free_port()
    policy = make_policy(port, upstream.url, server={"header_timeout": "60s"})
    config = write_policy(tmp_path / "policy.yaml", policy)
    command = f"ulimit -n 64 && exec {sys.executable} -m proxy run --config {config}"
    proc = Process(["sh", "-c", command], base_env())
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc.popen)
        clients = []
        for _ in range(120):
            try:
                clients.append(await asyncio.open_connection("127.0.0.1", port))
            except OSError:
                break
        deadline = time.monotonic() + 10
        while "cannot accept connections" not in proc.output():
            assert time.monotonic() < deadline, proc.output()
            await asyncio.sleep(0.05)
        for _, client in clients:
            client.close()
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 15
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, proc.output()
                await asyncio.sleep(0.1)
        assert proc.output().count("cannot accept connections") == 1, proc.output()
    finally:
        proc.stop()
