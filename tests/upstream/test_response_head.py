"""The upstream response head is read from the raw bytes llhttp accepted (no per-header
callback): what the client gets back must be exactly the upstream's header lines minus the
ones the sidecar drops, however the bytes arrive."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.upstream.connection import (
    MAX_RESPONSE_HEAD,
    HeadTimeouts,
    UpstreamConnection,
    UpstreamFailure,
)
from proxy.upstream.head import DROP_ON_RESPONSE, ResponseHead
from tests.support.inprocess import FakeTransport

OWS = st.sampled_from(["", " ", "  ", "\t", " \t"])
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN = st.text(alphabet=LETTERS + "0123456789-", min_size=1, max_size=24)
VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
LOOKED_AT = [
    "connection", "keep-alive", "proxy-authenticate", "te", "trailer", "x-request-id",
    "retry-after", "content-type", "content-language", "trailers", "date", "server",
]  # fmt: skip
CONNECTION_VALUES = ["keep-alive", "close", "Keep-Alive", "CLOSE", "x-hop, close", "X-Hop", ""]


@st.composite
def any_case(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))


@st.composite
def header(draw: st.DrawFn) -> tuple[str, str]:
    if draw(st.booleans()):
        name = draw(st.sampled_from(LOOKED_AT).flatmap(any_case))
    else:
        name = draw(TOKEN)
    if name.lower() in ("content-length", "transfer-encoding", "upgrade"):
        name = "x-" + name  # framing is drawn on its own
    if name.lower() == "connection":
        value = draw(st.sampled_from(CONNECTION_VALUES))
    else:
        value = draw(VALUE)
    return name, value


@st.composite
def response(draw: st.DrawFn) -> tuple[list[str], bytes, bytes]:
    """(header lines as sent, with Content-Length; the raw response; its body)."""
    headers = draw(st.lists(header(), max_size=12))
    body = draw(st.binary(max_size=40))
    length_line = draw(st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH"]))
    lines = [f"{name}:{draw(OWS)}{value}{draw(OWS)}" for name, value in headers]
    at = draw(st.integers(min_value=0, max_value=len(lines)))
    lines.insert(at, f"{length_line}:{draw(OWS)}{len(body)}{draw(OWS)}")
    raw = "HTTP/1.1 200 OK\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n"
    return lines, raw.encode() + body, body


class Listener:
    def __init__(self) -> None:
        self.heads: list[ResponseHead] = []
        self.failures: list[UpstreamFailure] = []

    def response_head(self, head: ResponseHead) -> None:
        self.heads.append(head)

    def response_failed(self, failure: UpstreamFailure) -> None:
        self.failures.append(failure)


def exchange(pieces: list[bytes], no_body: bool = False) -> tuple[Listener, UpstreamConnection]:
    conn = UpstreamConnection(lambda _conn: None, HeadTimeouts())
    conn.connection_made(FakeTransport(None, keep=False))
    listener = Listener()
    conn.begin(no_body, 1e12, listener)
    for piece in pieces:
        conn.data_received(piece)
    return listener, conn


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(raw)) for cut in cuts})
    edges = [0, *points, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(edges) if a < b]


def expected(lines: list[str]) -> tuple[list[bytes], set[bytes], bytes | None]:
    """The lines passed back, the extra hop-by-hop names, the last Retry-After."""
    kept, hop, retry_after = [], set(), None
    for line in lines:
        name, _, value = line.partition(":")
        lower = name.lower()
        if lower == "connection" and value.strip().lower() not in ("keep-alive", "close", ""):
            tokens = {t.strip().lower().encode() for t in value.split(",")}
            hop |= tokens - {b"keep-alive", b"close", b""}
        if lower == "retry-after":
            retry_after = value.strip(" \t").encode()
        if lower.encode() not in DROP_ON_RESPONSE:
            kept.append(line.encode() + b"\r\n")
    return kept, hop, retry_after


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(response(), st.lists(st.integers(min_value=1, max_value=400), max_size=4))
async def test_passed_lines_are_the_upstreams_minus_the_dropped(
    drawn: tuple[list[str], bytes, bytes], cuts: list[int]
) -> None:
    lines, raw, body = drawn
    listener, conn = exchange(split(raw, cuts))
    assert not listener.failures
    (head,) = listener.heads
    kept, hop, retry_after = expected(lines)
    assert b"".join(head.lines) == b"".join(kept)
    assert head.content_length == len(body)
    assert head.retry_after == retry_after
    assert head.hop_names == hop
    passed = [line for line in kept if line.split(b":")[0].lower() not in hop]
    assert b"".join(head.passed_lines()) == b"".join(passed)
    received: list[bytes] = []
    ended: list[UpstreamFailure | None] = []
    conn.pipe(received.append, ended.append)
    assert b"".join(received) == body
    assert ended == [None]


async def test_informational_heads_before_the_answer_are_skipped() -> None:
    raw = (
        b"\r\nHTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 2\r\n\r\nok"
    )
    for cuts in ([], [3], [30, 31], [70], [len(raw) - 3]):
        listener, _ = exchange(split(raw, cuts))
        (head,) = listener.heads
        assert head.status == 201
        assert head.lines == [b"Location: /x\r\n"]


async def test_chunked_answer_and_its_trailers() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        b"2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    listener, conn = exchange([raw])
    (head,) = listener.heads
    assert head.chunked and head.content_length is None
    assert head.lines == [b"X-A: 1\r\n"]
    received: list[bytes] = []
    ended: list[UpstreamFailure | None] = []
    conn.pipe(received.append, ended.append)
    assert received == [b"ok"] and ended == [None]


async def test_an_answer_to_head_then_the_next_exchange() -> None:
    listener, conn = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-A: 1\r\n\r\n"], True)
    assert listener.heads[0].content_length == 9
    assert conn.complete
    second = Listener()
    conn.begin(False, 1e12, second)
    conn.data_received(b"HTTP/1.1 200 OK\r\nX-B: 2\r\nContent-Length: 1\r\n\r\nz")
    assert second.heads[0].lines == [b"X-B: 2\r\n"]


async def test_a_head_too_large_fails_the_attempt() -> None:
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    pieces = [b"HTTP/1.1 200 OK\r\n"] + [filler] * (MAX_RESPONSE_HEAD // len(filler) + 1)
    listener, conn = exchange(pieces)
    assert not listener.heads
    assert len(listener.failures) == 1
    assert "too large" in str(listener.failures[0])
    assert conn.transport is not None and conn.transport.is_closing()


async def test_a_large_body_in_the_first_read_is_not_a_large_head() -> None:
    body = b"x" * (MAX_RESPONSE_HEAD * 2)
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    listener, conn = exchange([raw])
    assert listener.heads and not listener.failures
    received: list[bytes] = []
    conn.pipe(received.append, lambda _failure: None)
    assert b"".join(received) == body


def test_common_connection_values_name_no_extra_headers() -> None:
    head = ResponseHead()
    head.read_headers(b"HTTP/1.1 200 OK\r\nServer: x\r\nConnection: Keep-Alive \r\n")
    assert head.lines == [b"Server: x\r\n"]
    assert head.hop_names == frozenset()
    head.read_headers(b"HTTP/1.1 200 OK\r\nConnection: keep-alive-ish\r\n")
    assert head.hop_names == frozenset({b"keep-alive-ish"})
