"""`upstreams.X.body_timeout`: a body that stalls after its head is cut, never padded."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from tests.support.raw_http import exchange


def body_timeout(value: str) -> dict[str, object]:
    return {"upstreams": {"inventory": {"body_timeout": value, "retry": {"max_attempts": 1}}}}


async def timeouts_counted(base: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    pattern = r'resilience_proxy_upstream_attempts_total\{(?=[^}]*outcome="timeout")[^}]*\} (\S+)'
    return sum(float(value) for value in re.findall(pattern, text))


async def test_a_stalled_body_is_cut_and_counted(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **body_timeout("300ms"))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/stall?ms=8000") as resp:
            assert resp.status == 200  # the head was relayed before the stall
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert await timeouts_counted(sidecar.url) == 1


async def test_the_cut_answer_is_incomplete_never_padded(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **body_timeout("300ms"))
    raw = await exchange(
        sidecar.port, b"GET /stall?ms=8000 HTTP/1.1\r\nHost: t\r\n\r\n", read_timeout=20
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"first " in body
    assert b"last" not in body
    assert not body.endswith(b"0\r\n\r\n")  # no terminating chunk: the client knows it broke


async def test_a_slow_body_within_the_timeout_is_passed_whole(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **body_timeout("5s"))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/stall?ms=300") as resp:
            assert await resp.read() == b"first last"
    assert await timeouts_counted(sidecar.url) == 0


async def test_a_slow_client_holding_the_body_back_is_not_a_stall(
    upstream, sidecar_factory
) -> None:
    """The sidecar stops reading the upstream while the client does not read: that silence
    is the sidecar's own flow control, not the upstream stalling."""
    sidecar = sidecar_factory(upstream.url, **body_timeout("300ms"))
    size = 32 * 1024 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    try:
        writer.write(f"GET /bytes?n={size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(1.5)  # not reading: every buffer on the way fills up
        received = 0
        while True:
            line = await asyncio.wait_for(reader.readline(), 20)
            length = int(line.strip(), 16)
            if length == 0:
                break
            received += len(await asyncio.wait_for(reader.readexactly(length + 2), 20)) - 2
    finally:
        writer.close()
    assert received == size
    assert await timeouts_counted(sidecar.url) == 0
