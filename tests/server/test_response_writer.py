"""The response writer's framing: Content-Length, chunked to HTTP/1.1, close-delimited to
HTTP/1.0, no body for HEAD/204/304, and `Connection: close` when the connection ends."""

from __future__ import annotations

from proxy.server.http11 import ServerLimits, ServerState
from proxy.server.request import RequestHead
from proxy.server.writer import ResponseWriter
from tests.support.inprocess import FakeTransport


async def _nothing(*_args: object) -> None:
    return None


def writer(draining: bool = False) -> tuple[ResponseWriter, FakeTransport]:
    state = ServerState(_nothing, ServerLimits())
    state.draining = draining
    response = ResponseWriter(state)
    transport = FakeTransport()
    response.transport = transport
    return response, transport


def head(method: bytes = b"GET", version: str = "1.1", keep_alive: bool = True) -> RequestHead:
    request = RequestHead(method, b"/", [], version, keep_alive, "127.0.0.1", 0.0)
    request.request_id = b"r1"
    return request


def test_a_known_length_is_sent_with_the_head_in_one_write() -> None:
    response, transport = writer()
    response.begin(True)
    assert response.send_head(head(), 200, [(b"A", b"1")], 5)
    response.send_body(b"hello")
    response.end_body()
    assert transport.writes == 1
    assert transport.take() == (
        b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 5\r\nX-Request-Id: r1\r\n\r\nhello"
    )
    assert not response.closing_after


def test_an_unknown_length_is_chunked_to_http11_and_close_delimited_to_http10() -> None:
    response, transport = writer()
    response.begin(True)
    response.send_head(head(), 200, [], None)
    response.send_body(b"abc")
    response.end_body()
    assert transport.take().endswith(
        b"Transfer-Encoding: chunked\r\nX-Request-Id: r1\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    response.begin(True)
    response.send_head(head(version="1.0"), 200, [], None)
    response.send_body(b"abc")
    out = transport.take()
    assert b"Connection: close\r\n\r\nabc" in out and response.closing_after


def test_head_204_and_304_never_carry_a_body() -> None:
    response, transport = writer()
    for method, status in ((b"HEAD", 200), (b"GET", 204), (b"GET", 304)):
        response.begin(True)
        assert not response.send_head(head(method), status, [], 10)
        out = transport.take()
        assert out.endswith(b"\r\n\r\n")
        assert (b"Content-Length: 10" in out) == (method == b"HEAD")


def test_a_draining_server_closes_after_each_response() -> None:
    response, transport = writer(draining=True)
    response.begin(True)
    response.send_response(head(), 200, [], b"")
    assert b"Connection: close\r\n" in transport.take() and response.closing_after
