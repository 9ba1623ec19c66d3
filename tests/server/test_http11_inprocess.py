"""The client connection in-process: parsing, pipelining, the 408/431/400 refusals, and
flow control of a relayed answer, with fake transports (tests/support/inprocess.py)."""

from __future__ import annotations

import time

import pytest

from tests.support.inprocess import Harness, policy_doc, settle

GET = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "http11-test-secret-0123456789abcdefghijklmnop")


async def test_pipelined_requests_are_answered_in_order() -> None:
    h = Harness(policy_doc())
    _, upstream = h.idle_upstream()
    h.send(GET + b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n")
    assert upstream.take().startswith(b"GET /a ")  # the second waits for the first
    h.answer(ok(b"first"))
    await settle()
    assert upstream.take().startswith(b"GET /b ")
    h.answer(ok(b"second"))
    await settle()
    out = h.written()
    assert out.index(b"first") < out.index(b"second")
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert h.in_flight == 0 and not h.client.busy


async def test_a_head_over_max_header_bytes_is_431_and_closes() -> None:
    h = Harness(policy_doc(server={"max_header_bytes": 1024}))
    h.send(b"GET /a HTTP/1.1\r\nHost: t\r\nX-Big: " + b"x" * 2000 + b"\r\n\r\n")
    assert h.written().startswith(b"HTTP/1.1 431 ")
    assert h.client_transport.closed


async def test_headers_not_received_in_time_are_408() -> None:
    h = Harness(policy_doc(server={"header_timeout": "2s"}))
    h.send(b"GET /a HTTP/1.1\r\nHost:")
    h.client.sweep(time.monotonic() + 1)
    assert h.written() == b""
    h.client.sweep(time.monotonic() + 3)
    assert h.written().startswith(b"HTTP/1.1 408 ")
    assert h.client_transport.closed


async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout() -> None:
    h = Harness(policy_doc(server={"keepalive_timeout": "5s"}))
    h.idle_upstream()
    h.send(GET)
    h.answer(ok(b"x"))
    assert h.written().startswith(b"HTTP/1.1 200 ")
    h.client.sweep(time.monotonic() + 4)
    assert not h.client_transport.closed
    h.client.sweep(time.monotonic() + 6)
    assert h.client_transport.closed and h.written() == b""


async def test_a_smuggling_shape_is_400() -> None:
    h = Harness(policy_doc())
    h.send(
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert h.written().startswith(b"HTTP/1.1 400 ")
    assert h.client_transport.closed


async def test_a_full_client_socket_pauses_the_upstream_until_it_drains() -> None:
    h = Harness(policy_doc())
    _, upstream = h.idle_upstream()
    h.send(GET)
    upstream.take()
    h.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    h.client_transport.push_back()
    h.answer(b"wor")
    assert not upstream.reading  # the client is full: the upstream is not read
    h.client_transport.drained()
    await settle()
    assert upstream.reading
    h.answer(b"ld")
    out = h.written()
    assert out.endswith(b"helloworld") and h.in_flight == 0
