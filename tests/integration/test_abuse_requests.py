"""Attacks by one request (CONTRACT 14): each answered by the sidecar, none reaching the app
as something the client did not mean. Raw sockets, so the bytes are exactly these."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from tests.support.raw_http import exchange, status_codes
from tests.support.tokens import token


def get(target: str, *headers: str) -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers)
    return f"GET {target} HTTP/1.1\r\nHost: t\r\n{lines}\r\n".encode()


def bodies(raw: bytes) -> list[dict]:
    """The JSON bodies of the responses in a raw stream (each sent with Content-Length)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")[1:]
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines)}
        length = int(fields[b"content-length"])
        found.append(json.loads(rest[:length]))
        raw = rest[length:]
    return found


async def test_percent_encoded_login_path_hits_the_login_limit(upstream, sidecar_factory) -> None:
    login = {"name": "login", "path": "/api/v1/auth/login", "limit": "5/min", "key": "ip"}
    sidecar = sidecar_factory(upstream.url, rate_limits={"endpoints": [login]})
    spellings = [
        "/api/v1/auth/%6cogin",
        "/api/v1/auth/%6Cogin",
        "/api/v1/x/../auth/login",
        "/api/v1/auth/./login",
        "/api/v1/auth/%6c%6f%67%69%6e",
    ]
    close = "Connection: close"
    for target in spellings:
        raw = await exchange(sidecar.port, get(target, close))
        assert status_codes(raw) == [200], raw
        assert bodies(raw)[0]["raw_target"] == "/api/v1/auth/login"
    raw = await exchange(sidecar.port, get("/api/v1/auth/%6cogin", close))
    assert status_codes(raw) == [429]
    assert bodies(raw)[0]["rule"] == "login"
    assert len(upstream.hits("/api/v1/auth/login")) == 5


async def test_percent_encoded_reports_path_hits_the_reports_limit(
    upstream, sidecar_factory
) -> None:
    reports = {"path_prefix": "/api/v1/reportes/", "limit": "3/min", "key": "user"}
    sidecar = sidecar_factory(upstream.url, rate_limits={"endpoints": [reports]})
    auth = f"Authorization: Bearer {token('5', 'vendedor')}"
    statuses = []
    for _ in range(4):
        raw = await exchange(
            sidecar.port, get("/api/v1/%72eportes/ventas", auth, "Connection: close")
        )
        statuses.extend(status_codes(raw))
    assert statuses == [200, 200, 200, 429]
    assert [s.target for s in upstream.seen] == ["/api/v1/reportes/ventas"] * 3


async def test_the_upstream_receives_the_normalised_path_and_the_query_as_sent(
    upstream, sidecar
) -> None:
    raw = await exchange(
        sidecar.port, get("/echo/%7euser/a%2fb/./c/../d//e?q=%41%2f", "Connection: close")
    )
    assert status_codes(raw) == [200]
    assert bodies(raw)[0]["raw_target"] == "/echo/~user/a%2Fb/d//e?q=%41%2f"


@pytest.mark.parametrize(
    "target", ["/../etc/passwd", "/echo/../../etc", "/%2e%2e/etc", "/echo/%zz", "/echo%2"]
)
async def test_path_climbing_above_root_or_badly_escaped_is_400(upstream, sidecar, target) -> None:
    raw = await exchange(sidecar.port, get(target))
    assert status_codes(raw) == [400], raw
    assert bodies(raw)[0]["error"] == "bad_request"
    assert upstream.seen == []


@pytest.mark.parametrize(
    "payload",
    [
        b"GET /echo/f1 HTTP/1.1\r\n\r\n",
        b"GET /echo/f2 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /echo/f3 HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        b"POST /echo/f4 HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"GET /echo/f5\r\nHost: t\r\n\r\n",
        b"GET /echo/f6#frag HTTP/1.1\r\nHost: t\r\n\r\n",
    ],
    ids=["http11-without-host", "two-hosts", "two-hosts-http10", "chunked-on-http10",
         "no-version", "fragment"],
)  # fmt: skip
async def test_bad_framing_gets_400_and_never_reaches_the_upstream(
    upstream, sidecar, payload
) -> None:
    raw = await exchange(sidecar.port, payload)
    assert status_codes(raw) == [400], raw
    assert bodies(raw)[0]["error"] == "bad_request"
    assert upstream.seen == []


async def test_http10_without_host_is_still_served(upstream, sidecar) -> None:
    raw = await exchange(sidecar.port, b"GET /echo/old HTTP/1.0\r\n\r\n")
    assert status_codes(raw) == [200]


async def test_content_length_over_the_limit_is_413_at_once_without_100_continue(
    upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(upstream.url, server={"max_body_bytes": 1000})
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(
        b"POST /echo/big HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), 5)  # the sidecar answers and closes
    writer.close()
    assert status_codes(answer) == [413]
    assert b" 100 " not in answer
    assert bodies(answer)[0]["error"] == "body_too_large"
    assert upstream.seen == []


SMUGGLED = b"GET /echo/smuggled HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
    ],
    ids=["content-length", "chunked"],
)
@pytest.mark.parametrize("connection", [b"Connection: Upgrade\r\n", b""], ids=["upgrade", "plain"])
async def test_upgrade_with_a_body_is_one_request_not_two(
    upstream, sidecar, framing, connection
) -> None:
    payload = (
        b"POST /echo/upgrade HTTP/1.1\r\nHost: t\r\nUpgrade: foo\r\n" + connection + framing
        + b"GET /echo/last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )  # fmt: skip
    raw = await exchange(sidecar.port, payload)
    assert status_codes(raw) == [200, 200], raw
    first, last = bodies(raw)
    assert first["target"] == "/echo/upgrade" and first["body_size"] == len(SMUGGLED)
    assert "upgrade" not in first["headers"]
    assert last["target"] == "/echo/last"
    assert upstream.hits("/echo/smuggled") == []
    assert upstream.hits("/echo/upgrade")[0].body == SMUGGLED


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "1\r\nX-Injected: yes"},
        {"role": "viewer\r\nX-Injected: yes"},
        {"sub": "1\x00"},
        {"sub": "u" * 257},
    ],
    ids=["crlf-in-sub", "crlf-in-role", "nul", "too-long"],
)
async def test_header_injection_through_claims_is_401(upstream, sidecar, claims) -> None:
    signed = token(**{"sub": "1", "role": "viewer", **claims})
    raw = await exchange(
        sidecar.port, get("/echo/claims", f"Authorization: Bearer {signed}", "Connection: close")
    )
    assert status_codes(raw) == [401], raw
    assert bodies(raw)[0]["error"] == "invalid_token"
    assert upstream.seen == []


async def test_a_body_announced_and_never_sent_is_408_and_trips_no_breaker(
    upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(
        upstream.url,
        server={"client_body_timeout": "500ms"},
        upstreams={"inventory": {"circuit_breaker": {"failure_threshold": 1}}},
    )
    stalled = b"POST /echo/stalled HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhalf!"
    for _ in range(3):
        raw = await exchange(sidecar.port, stalled)
        assert status_codes(raw) == [408], raw
        assert bodies(raw)[0]["error"] == "request_timeout"
    assert upstream.seen == []
    admin = f"Authorization: Bearer {token('1', 'admin')}"
    raw = await exchange(
        sidecar.port,
        get("/api/v1/resilience/circuit-breakers/inventory", admin, "Connection: close"),
    )
    stats = bodies(raw)[0]
    assert (stats["state"], stats["total_calls"], stats["total_failures"]) == ("closed", 0, 0)


async def test_a_small_body_sent_slowly_is_read_whole_then_forwarded(upstream, sidecar) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(b"POST /echo/slow-body HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nabc")
    await writer.drain()
    await asyncio.sleep(0.3)  # the rest comes later, within client_body_timeout
    assert upstream.seen == []  # nothing goes upstream before the body is whole
    writer.write(b"def")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert upstream.hits("/echo/slow-body")[0].body == b"abcdef"


@pytest.mark.parametrize(
    ("client_body_timeout", "attempt_timeout"),
    [("300ms", "5s"), ("10s", "300ms")],
    ids=["client-body-timeout-first", "attempt-timeout-first"],
)
async def test_stalled_large_body_does_not_open_breaker(
    upstream, sidecar_factory, client_body_timeout, attempt_timeout
) -> None:
    """A body above `request_buffer_bytes` streams; its client stalling mid-stream is the
    client's fault, whichever timer fires first: 408 (or a closed connection), never an
    upstream failure."""
    sidecar = sidecar_factory(
        upstream.url,
        server={"request_buffer_bytes": 1024, "client_body_timeout": client_body_timeout},
        upstreams={
            "inventory": {"timeout": attempt_timeout, "circuit_breaker": {"failure_threshold": 2}}
        },
    )
    stalled = (
        b"POST /echo/stalled-large HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
        + b"x" * 4096
    )
    for _ in range(3):
        raw = await exchange(sidecar.port, stalled, read_timeout=10)
        assert status_codes(raw) in ([408], []), raw
    assert len(upstream.hits("/echo/stalled-large")) == 0  # never completed upstream
    admin = f"Authorization: Bearer {token('1', 'admin')}"
    raw = await exchange(
        sidecar.port,
        get("/api/v1/resilience/circuit-breakers/inventory", admin, "Connection: close"),
    )
    stats = bodies(raw)[0]
    assert (stats["state"], stats["total_failures"]) == ("closed", 0), stats
    raw = await exchange(sidecar.port, get("/metrics", "Connection: close"))
    attempts = re.findall(
        rb'resilience_proxy_upstream_attempts_total\{outcome="(\w+)",upstream="inventory"\} (\S+)',
        raw,
    )
    failed = {outcome: float(n) for outcome, n in attempts if outcome != b"success"}
    assert failed and not any(failed.values()), failed
