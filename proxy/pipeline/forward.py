"""Forwarding: one attempt against an upstream, and relaying the chosen answer back.

The attempt streams the request body upstream as it arrives (the first attempt) or resends
the kept copy (a retry). A body that outgrows `max_body_bytes` mid-stream aborts the
upstream connection, so the upstream never sees a complete request with a partial body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from proxy.core.header_rules import HeaderRules
from proxy.core.headers import FRAMING, HOP_BY_HOP, REPLACED_ON_REQUEST, connection_tokens
from proxy.errors import ProxyError, RequestTimeout
from proxy.server.http11 import ClientConnection
from proxy.server.request import Headers, RequestBody, RequestHead
from proxy.upstream.connection import (
    AttemptTimeout,
    HeadWaiter,
    UpstreamConnection,
    UpstreamFailure,
)
from proxy.upstream.head import ResponseHead
from proxy.upstream.pool import UpstreamPool

_DROP_ON_REQUEST: Final = HOP_BY_HOP | REPLACED_ON_REQUEST | FRAMING | {b"expect"}


def upstream_head(
    head: RequestHead,
    target: bytes,
    forwarded_for: bytes,
    forwarded_proto: bytes,
    identity_headers: Headers,
    trace_lines: bytes,
) -> bytes:
    """The request head sent upstream: client headers minus hop-by-hop, plus ours.

    Written as `%` with a literal format and bytes operands, which mypyc compiles into one
    copy of each part (other ways of building bytes cost a call per part).
    """
    named = connection_tokens(head.headers) if head.connection is not None else ()
    kept = b"".join(
        [
            b"%s: %s\r\n" % (name, value)
            for name, value in head.headers
            if name not in _DROP_ON_REQUEST and name not in named
        ]
    )
    ours = b"".join([b"%s: %s\r\n" % (name, value) for name, value in identity_headers])
    if head.chunked:
        framing = b"transfer-encoding: chunked\r\n"
    elif head.content_length is not None:
        framing = b"content-length: %d\r\n" % head.content_length
    else:
        framing = b""
    return (
        b"%s %s HTTP/1.1\r\n%sx-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n"
        b"x-request-id: %s\r\n%s%s%s\r\n"
    ) % (
        head.method, target, kept, forwarded_for, forwarded_proto, head.request_id, trace_lines,
        ours, framing,
    )  # fmt: skip


def _frame(chunk: bytes, chunked: bool) -> bytes:
    return b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk


def _upload_kept(conn: UpstreamConnection, body: RequestBody, chunked: bool) -> None:
    """A retry: resend the kept copy of the (complete) body."""
    for chunk in body.kept:
        conn.write(_frame(chunk, chunked))
    if chunked:
        conn.write(b"0\r\n\r\n")


class Attempt:
    """One try against the upstream; holds the connection until relayed or dropped."""

    __slots__ = ("awaiting_client", "conn", "held", "pool", "response", "uploader")

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.held = False
        self.awaiting_client = False
        """The upload waits for the client's next body bytes (not for the upstream)."""
        self.conn: UpstreamConnection | None = None
        self.response: ResponseHead | None = None
        self.uploader: asyncio.Task[None] | None = None

    async def send(
        self,
        head: RequestHead,
        head_bytes: bytes,
        body: RequestBody | None,
        first: bool,
        timeout: float,
    ) -> ResponseHead:
        """Raises UpstreamFailure (connect, reset, timeout) or the body's own error."""
        conn = await self.pool.acquire()
        self.conn = conn
        waiter = HeadWaiter()
        if head.websocket:
            conn.upgrade = True
        conn.begin(head.method == b"HEAD", time.monotonic() + timeout, waiter)
        if body is not None and body.error is not None:
            conn.abort()
            raise body.error
        conn.write(head_bytes)
        if body is not None:
            if first:
                self.uploader = asyncio.get_running_loop().create_task(
                    self._upload_streaming(conn, body, head.chunked)
                )
            else:
                _upload_kept(conn, body, head.chunked)
        try:
            self.response = await waiter.future
            if head.websocket and self.response.status != 101:
                conn.upgrade = False  # refused: the connection may serve plain requests again
        except UpstreamFailure as failure:
            conn.abort()
            if body is not None:
                if isinstance(failure, AttemptTimeout) and self.awaiting_client:
                    # The upstream cannot answer a body the client holds back: the
                    # client's fault (408), not an upstream timeout (CONTRACT 14).
                    body.fail(RequestTimeout("request body not received in time"))
                if body.error is not None:
                    raise body.error from None
            raise
        except asyncio.CancelledError:
            conn.abandon()
            raise
        return self.response

    async def _upload_streaming(
        self, conn: UpstreamConnection, body: RequestBody, chunked: bool
    ) -> None:
        """First attempt: send the body as it arrives; abort the upstream request on error
        (a body too large, or a client that stalls it past `client_body_timeout`)."""
        try:
            while True:
                self.awaiting_client = True
                chunk = await body.next_chunk()
                self.awaiting_client = False
                if chunk is None:
                    break
                conn.write(_frame(chunk, chunked))
                await conn.drain()
        except ProxyError:
            conn.abort()
            return
        if chunked:
            conn.write(b"0\r\n\r\n")

    def hold(self) -> None:
        """Keep this answer while a retry is prepared; it may still be the one returned."""
        if self.conn is not None:
            self.held = True
            self.conn.pause_reading()

    def drop(self) -> None:
        """Give up on this attempt's answer (a retry follows): the socket can't be reused."""
        if self.uploader is not None:
            self.uploader.cancel()
        if self.conn is not None:
            self.conn.abandon()

    async def consume(self) -> int:
        """Read the answer to its end and give the connection back; its status."""
        conn, resp = self.conn, self.response
        assert conn is not None and resp is not None
        ended: asyncio.Future[UpstreamFailure | None] = asyncio.get_running_loop().create_future()
        conn.pipe(None, ended.set_result)
        conn.resume_reading()
        if await ended is not None:
            conn.abort()
        else:
            self.pool.release(conn, resp.keep_alive)
        return resp.status

    async def relay(
        self,
        client: ClientConnection,
        head: RequestHead,
        extra: bytes,
        rules: HeaderRules | None = None,
    ) -> None:
        """Stream the answer to the client (see `Relay`), waiting until it has ended."""
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_end() -> None:
            if not ended.done():
                ended.set_result(None)

        relay = Relay(self, client, on_end)
        relay.start(head, extra, rules)
        try:
            await ended
        except asyncio.CancelledError:
            relay.cancel()
            raise


class Relay:
    """Streams an attempt's answer to the client by callbacks, with flow control both ways.

    When the client's socket is full the upstream socket stops being read, so a slow client
    holds back a fast upstream instead of filling memory. `on_end` runs once, when the
    answer has been passed on (or cut off); the upstream connection is then back in its
    pool or closed.
    """

    __slots__ = ("attempt", "client", "has_body", "on_end", "paused")

    def __init__(
        self, attempt: Attempt, client: ClientConnection, on_end: Callable[[], object]
    ) -> None:
        self.attempt = attempt
        self.client = client
        self.on_end = on_end
        self.has_body = False
        self.paused = False

    def start(self, head: RequestHead, extra: bytes, rules: HeaderRules | None = None) -> None:
        """Send the head (plus `extra`, rendered header lines; minus the names a route's
        `response_headers` rule drops) and pipe the body."""
        conn, resp = self.attempt.conn, self.attempt.response
        assert conn is not None and resp is not None
        length = resp.content_length if not resp.chunked else None
        lines = resp.passed_lines()
        if rules is not None:
            lines = rules.filter_lines(lines)
        if extra:
            lines.append(extra)
        self.has_body = self.client.response.send_head_lines(head, resp.status, lines, length)
        if self.attempt.held:
            conn.resume_reading()
        conn.pipe(self._sink if self.has_body else None, self._ended)

    def _sink(self, chunk: bytes) -> None:
        client = self.client
        client.response.send_body(chunk)
        flow = client.flow
        if flow.write_paused and not self.paused:
            self.paused = True
            conn = self.attempt.conn
            assert conn is not None
            conn.pause_reading()
            flow.on_resume_writing(self._resume)

    def _resume(self) -> None:
        self.paused = False
        conn = self.attempt.conn
        if conn is not None:
            conn.resume_reading()

    def _ended(self, failure: UpstreamFailure | None) -> None:
        attempt = self.attempt
        conn, resp = attempt.conn, attempt.response
        assert conn is not None and resp is not None
        finished = failure is None
        if finished:
            if self.has_body:
                self.client.response.end_body()
        else:
            self.client.abort()
        uploader = attempt.uploader
        if uploader is not None and not uploader.done():
            # The upstream answered before reading the whole body: don't reuse it.
            uploader.cancel()
            finished = False
        if finished:
            attempt.pool.release(conn, resp.keep_alive)
        else:
            conn.abort()
        self.on_end()

    def cancel(self) -> None:
        """The client is gone: the answer is dropped half-way."""
        self.attempt.drop()
