"""A sidecar of `server.workers: 2` in tests: start it, read its totals, and hold
connections on a chosen worker.

The kernel spreads new connections over the workers (SO_REUSEPORT), so a test that must
say which worker serves a request opens connections until each worker holds the number
it needs (the worker is read from /proc: the process among the workers whose descriptors
include the server side of the connection), then keeps them alive.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.support.processes import Process, start_sidecar

WORKERS = "resilience_proxy_workers"
COUNTER_TYPES = ("counter", "histogram")


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


async def until(check: Callable[[], Awaitable[Any]], deadline_s: float = 10.0) -> Any:
    """Poll `check` until it answers something true or the deadline passes."""
    end = time.monotonic() + deadline_s
    while True:
        value = await check()
        if value or time.monotonic() > end:
            return value
        await asyncio.sleep(0.05)


async def fresh(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    """One request on a connection of its own (the kernel picks the worker)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.request(method, url, **kwargs) as resp:
            return resp.status, await _body(resp)


async def _body(resp: aiohttp.ClientResponse) -> Any:
    if resp.content_type == "application/json":
        return await resp.json()
    return await resp.text()


def sample(text: str, series: str) -> float:
    match = re.search("^" + re.escape(series) + r" (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not in the scrape"
    return float(match.group(1))


async def scrape(base: str) -> str:
    status, text = await fresh("GET", f"{base}/metrics")
    assert status == 200
    return str(text)


def counters(text: str) -> dict[str, float]:
    """Every sample of the scrape's counters and histograms, by its full series name."""
    families = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE)
    counted = tuple(name for name, kind in families if kind in COUNTER_TYPES)
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and line.startswith(counted):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


def start_workers(config: Path, port: int) -> tuple[Process, str]:
    """The sidecar, once both workers serve (its `/metrics` says so)."""
    proc = start_sidecar(config, port)
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 10
    try:
        while time.monotonic() < end:
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
                if sample(resp.read().decode(), WORKERS) == 2:
                    return proc, base
            time.sleep(0.05)
        raise AssertionError("both workers should be serving")
    except BaseException:
        proc.stop()  # no sidecar left behind by a failed start
        raise


def holder(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the server side of the loopback connection from `client_port`."""
    inode = None
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (server_port, client_port):
            inode = fields[9]
    target = f"socket:[{inode}]"
    for pid in pids:
        with suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
    return None


class Pinned:
    """HTTP/1.1 requests on one keep-alive connection, so on one worker (answers must carry
    a Content-Length, as the sidecar's and the test upstream's do)."""

    def __init__(self, base: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.base = base
        self.reader = reader
        self.writer = writer
        self.port = int(writer.get_extra_info("sockname")[1])
        self._turn = asyncio.Lock()
        """One request at a time on the connection (no pipelining)."""

    @classmethod
    async def open(cls, base: str) -> Pinned:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        return cls(base, *await asyncio.open_connection(host, int(port)))

    async def request(
        self, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        body = b"" if json is None else orjson.dumps(json)
        lines = [f"{method} {path} HTTP/1.1", "Host: sidecar", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if json is not None:
            lines.append("Content-Type: application/json")
        async with self._turn:
            self.writer.write("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
            head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            fields = dict(
                line.lower().split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line
            )
            answer = await self.reader.readexactly(int(fields["content-length"]))
        status = int(head.split(" ", 2)[1])
        if fields.get("content-type", "").startswith("application/json"):
            return status, orjson.loads(answer)
        return status, answer.decode()

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()


Opened = tuple[Any, int, Callable[[], Awaitable[object]]]
"""What an opener gives: the client, its local port, and how to close it."""


@asynccontextmanager
async def on_each_worker(
    base: str, pids: list[int], per_worker: int, opener: Callable[[], Awaitable[Opened]]
) -> AsyncIterator[dict[int, list[Any]]]:
    """`per_worker` clients held by each worker, closed at the end (bounded: 40 tries per
    client wanted)."""
    port = int(base.rsplit(":", 1)[1])
    held: dict[int, list[Any]] = {pid: [] for pid in pids}
    kept: list[Callable[[], Awaitable[object]]] = []
    try:

        def short() -> bool:
            return any(len(clients) < per_worker for clients in held.values())

        tries = 40 * per_worker * len(pids)
        while tries and short():
            tries -= 1
            client, client_port, close = await opener()
            pid = holder(port, client_port, pids)
            if pid is not None and len(held[pid]) < per_worker:
                held[pid].append(client)
                kept.append(close)
            else:
                await close()
        assert not short(), f"could not open {per_worker} connection(s) on every worker"
        yield held
    finally:
        for close in kept:
            await close()


def pinned_http(
    base: str, pids: list[int], per_worker: int = 1
) -> AbstractAsyncContextManager[dict[int, list[Pinned]]]:
    """Keep-alive HTTP clients held by each worker."""

    async def opener() -> Opened:
        client = await Pinned.open(base)
        assert (await client.request("GET", "/healthz"))[0] == 200  # accepted by now
        return client, client.port, client.close

    return on_each_worker(base, pids, per_worker, opener)
