"""Forwarding through the real sidecar process: headers, bodies, errors, shedding."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.support.processes import free_port
from tests.support.raw_http import exchange, status_codes

NO_RETRY = {"retry": {"max_attempts": 1}}


def single_upstream(**settings: object) -> dict[str, object]:
    return {"upstreams": {"inventory": settings}}


async def test_get_passes_through_with_request_id(upstream, sidecar) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{sidecar.url}/echo?x=1") as resp:
        assert resp.status == 200
        body = await resp.json()
        request_id = resp.headers["X-Request-Id"]
    assert body["target"] == "/echo?x=1"
    assert body["headers"]["x-request-id"] == request_id
    assert body["headers"]["x-forwarded-proto"] == "http"


async def test_request_id_is_kept_when_sent(upstream, sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/echo", headers={"X-Request-Id": "abc-123"}) as resp:
            assert resp.headers["X-Request-Id"] == "abc-123"
            assert (await resp.json())["headers"]["x-request-id"] == "abc-123"


async def test_forwarded_for_from_trusted_peer_is_appended(upstream, sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/echo", headers={"X-Forwarded-For": "203.0.113.9"}) as r:
            headers = (await r.json())["headers"]
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


async def test_forwarded_for_from_untrusted_peer_is_replaced(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, server={"trusted_proxies": []})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/echo", headers={"X-Forwarded-For": "203.0.113.9"}) as r:
            headers = (await r.json())["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"


async def test_hop_by_hop_headers_are_never_forwarded(upstream, sidecar) -> None:
    raw = (
        b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, X-Custom-Hop\r\n"
        b"X-Custom-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
        b"Proxy-Authorization: Basic c2VjcmV0\r\nTrailer: X-T\r\nX-User-Id: 42\r\n"
        b"X-User-Role: admin\r\nX-Kept: yes\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert b"x-upstream-hop" not in head.lower()
    received = upstream.hits("/echo")[-1].headers
    for name in ("x-custom-hop", "keep-alive", "te", "proxy-authorization", "trailer"):
        assert name not in received, name
    assert "x-user-id" not in received and "x-user-role" not in received
    assert received["x-kept"] == "yes"


async def test_body_over_limit_by_content_length_is_413_and_never_forwarded(
    upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(upstream.url, server={"max_body_bytes": 1000})
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/echo/big", data=b"x" * 5000) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"] == "body_too_large"
    assert upstream.hits("/echo/big") == []


async def test_chunked_body_outgrowing_limit_aborts_the_upstream_request(
    upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(upstream.url, server={"max_body_bytes": 100_000})

    async def body():
        for _ in range(40):
            yield b"y" * 10_000
            await asyncio.sleep(0.005)

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/echo/stream", data=body()) as resp:
            assert resp.status == 413
    await asyncio.sleep(0.2)
    assert upstream.hits("/echo/stream") == []


async def test_chunked_request_and_response_bodies(upstream, sidecar) -> None:
    async def body():
        for _ in range(10):
            yield b"z" * 1000

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/echo/chunked", data=body()) as resp:
            assert (await resp.json())["body_size"] == 10_000
        async with http.get(f"{sidecar.url}/bytes?n=300000") as resp:
            assert resp.headers.get("Transfer-Encoding") == "chunked"
            assert len(await resp.read()) == 300_000


async def test_refused_upstream_is_502_json(sidecar_factory) -> None:
    sidecar = sidecar_factory(f"http://127.0.0.1:{free_port()}", **single_upstream(**NO_RETRY))
    async with aiohttp.ClientSession() as http, http.get(f"{sidecar.url}/anything") as resp:
        assert resp.status == 502
        assert (await resp.json())["error"] == "upstream_unavailable"
        assert "X-Request-Id" in resp.headers


async def test_slow_upstream_is_504_json(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **single_upstream(timeout="300ms", **NO_RETRY))
    async with aiohttp.ClientSession() as http, http.get(f"{sidecar.url}/slow?ms=2000") as resp:
        assert resp.status == 504
        assert (await resp.json())["error"] == "upstream_timeout"


async def test_no_route_is_404(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(
        upstream.url, routes=[{"path_prefix": "/api/", "upstream": "inventory"}]
    )
    async with aiohttp.ClientSession() as http, http.get(f"{sidecar.url}/elsewhere") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "no_route"


async def test_upstream_max_in_flight_sheds_at_once(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **single_upstream(max_in_flight=1, **NO_RETRY))
    async with aiohttp.ClientSession() as http:
        slow = asyncio.ensure_future(http.get(f"{sidecar.url}/slow?ms=800"))
        await asyncio.sleep(0.2)
        async with http.get(f"{sidecar.url}/echo") as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
            assert (await resp.json())["error"] == "overloaded"
        first = await slow
        assert first.status == 200
        first.release()


async def test_head_204_304(upstream, sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.head(f"{sidecar.url}/echo") as resp:
            assert resp.status == 200
            assert await resp.read() == b""
        for code in (204, 304):
            async with http.get(f"{sidecar.url}/nobody/{code}") as resp:
                assert resp.status == code
        async with http.get(f"{sidecar.url}/echo") as resp:
            assert resp.status == 200  # the keep-alive connection survived them


async def test_upstream_closing_keepalive_connections(upstream, sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(20):
            async with http.get(f"{sidecar.url}/close") as resp:
                assert resp.status == 200
                assert await resp.json() == {"closing": True}


async def test_large_download_is_streamed_with_bounded_memory(upstream, sidecar) -> None:
    def rss_kb() -> int:
        for line in Path(f"/proc/{sidecar.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    before = rss_kb()
    received = 0
    peak = before
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/bytes?n={50 * 1024 * 1024}") as resp:
            async for chunk in resp.content.iter_chunked(1 << 20):
                received += len(chunk)
                peak = max(peak, rss_kb())
                await asyncio.sleep(0.001)  # a slowish reader: backpressure must hold
    assert received == 50 * 1024 * 1024
    assert peak - before < 20 * 1024, f"sidecar RSS grew by {peak - before} KiB"


@pytest.mark.parametrize(
    "payload",
    [
        b"POST /echo/s1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /echo/s2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /echo/s3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"POST /echo/s4 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"GET /echo/s5 HTTP/1.1\r\nHost: t\r\n X-Folded: a\r\n\r\n",
    ],
    ids=["cl-and-te", "conflicting-cl", "bad-chunk-size", "te-not-chunked", "obs-fold"],
)
async def test_smuggling_shapes_get_400_and_never_reach_upstream(
    upstream, sidecar, payload
) -> None:
    raw = await exchange(sidecar.port, payload)
    assert status_codes(raw) == [400], raw
    await asyncio.sleep(0.1)
    assert [s for s in upstream.seen if s.target.startswith("/echo/s")] == []


async def test_oversized_head_is_431(upstream, sidecar) -> None:
    raw = await exchange(
        sidecar.port, b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    )
    assert status_codes(raw) == [431]


async def test_slow_headers_get_408(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, server={"header_timeout": "500ms"})
    raw = await exchange(sidecar.port, b"GET /echo HTTP/1.1\r\nHost: t\r\n", read_timeout=5)
    assert status_codes(raw) == [408]


async def test_pipelined_requests_are_answered_in_order(upstream, sidecar) -> None:
    payload = (
        b"GET /slow?ms=200 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /nobody/204 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    raw = await exchange(sidecar.port, payload)
    assert status_codes(raw) == [200, 204, 200]
    assert raw.index(b'"slow"') < raw.index(b'"target"')


async def test_expect_100_continue(upstream, sidecar) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(
        b"POST /echo/expect HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"hello")
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert final.startswith(b"HTTP/1.1 200")
    assert upstream.hits("/echo/expect")[0].body == b"hello"
    assert "expect" not in upstream.hits("/echo/expect")[0].headers


async def test_idle_keepalive_connection_is_closed(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, server={"keepalive_timeout": "500ms"})
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    rest = await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the server closed it
    writer.close()
    assert b"target" in rest


async def test_sigterm_lets_in_flight_requests_finish(upstream, sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        pending = [asyncio.ensure_future(http.get(f"{sidecar.url}/slow?ms=700")) for _ in range(10)]
        await asyncio.sleep(0.3)
        sidecar.proc.signal(signal.SIGTERM)
        responses = await asyncio.gather(*pending)
        assert [r.status for r in responses] == [200] * 10
        for response in responses:
            response.release()
    assert await asyncio.to_thread(sidecar.proc.wait, 15) == 0
