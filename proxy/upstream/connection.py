"""One keep-alive connection to an upstream, as an asyncio protocol parsing with llhttp.

An exchange is: `begin()`, write the request, await `head`, then either `pipe()` the body to
the client (callbacks, no await per chunk) or `discard()` it. Failures become the outcome
exceptions below; `proxy.errors` is chosen by the forwarding layer, which knows whether a
retry follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import httptools

from proxy.core.headers import HOP_BY_HOP, Headers


class UpstreamFailure(Exception):
    """An attempt that got no usable answer."""

    kind = "reset"


class ConnectFailure(UpstreamFailure):
    """The TCP connection could not be made: the request never left."""

    kind = "connect-failure"


class ResetBeforeResponse(UpstreamFailure):
    """The connection broke after the request was (maybe) sent, before a response head."""

    kind = "reset"


class AttemptTimeout(UpstreamFailure):
    """No response head within the upstream's `timeout`."""

    kind = "timeout"


class BrokenResponse(UpstreamFailure):
    """The response head arrived, then the body broke off."""

    kind = "reset"


# Never passed back to the client: hop-by-hop, framing (re-made by the server), and the
# request id (the client gets the one the upstream received).
DROP_ON_RESPONSE = HOP_BY_HOP | {b"content-length", b"x-request-id"}
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b""})


class ResponseHead:
    __slots__ = (
        "chunked",
        "content_length",
        "headers",
        "keep_alive",
        "lines",
        "names_hop_headers",
        "status",
    )

    def __init__(
        self,
        status: int,
        headers: Headers,
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        lines: list[bytes] | None = None,
        names_hop_headers: bool = False,
    ) -> None:
        self.status = status
        self.headers = headers
        self.lines = lines if lines is not None else []
        """Headers to pass back, rendered, minus DROP_ON_RESPONSE (original case kept)."""
        self.names_hop_headers = names_hop_headers
        """`Connection` lists extra hop-by-hop names: `lines` must be filtered again."""
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_buffered",
        "_headers",
        "_lines",
        "_loop",
        "_named_hop",
        "_no_body",
        "_on_lost",
        "_parser",
        "_reset_parser",
        "_sink",
        "_timer",
        "_write_waiter",
        "complete",
        "done",
        "failure",
        "head",
        "lost",
        "received_any",
        "transport",
    )

    def __init__(self, on_lost: Callable[[UpstreamConnection], None]) -> None:
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.head: asyncio.Future[ResponseHead] | None = None
        self.done: asyncio.Future[None] | None = None
        self._headers: Headers = []
        self._lines: list[bytes] = []
        self._named_hop = False
        self._sink: Callable[[bytes], None] | None = None
        self._buffered: list[bytes] = []
        self._no_body = False
        self._reset_parser = False
        self._timer: asyncio.TimerHandle | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self.failure: UpstreamFailure | None = None
        self.complete = False
        self.lost = False
        self.received_any = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._cancel_timer()
        if self.head is not None and not self.head.done():
            self.head.set_exception(ResetBeforeResponse("upstream closed the connection"))
        elif not self.complete:
            try:
                # A close-delimited body ends with the connection.
                self._parser.feed_data(b"")
            except httptools.HttpParserError:
                pass
            if not self.complete:
                self._fail_body(BrokenResponse("upstream closed during the body"))
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)
        self._on_lost(self)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            failure = BrokenResponse(f"bad response from upstream: {error}")
            if self.head is not None and not self.head.done():
                self.head.set_exception(failure)
            elif not self.complete:
                self._fail_body(failure)
            self.abort()
            return
        if self._reset_parser:
            self._reset_parser = False
            self._parser = httptools.HttpResponseParser(self)

    def pause_writing(self) -> None:
        self._write_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._lines = []
        self._named_hop = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        self._headers.append((lower, value))
        if lower not in DROP_ON_RESPONSE:
            self._lines.append(name + b": " + value + b"\r\n")
        elif lower == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            self._named_hop = self._named_hop or not tokens <= _PLAIN_CONNECTION

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # 1xx: informational, the real answer follows
        self._cancel_timer()
        content_length: int | None = None
        chunked = False
        for name, value in self._headers:
            if name == b"content-length":
                content_length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        head = ResponseHead(
            status,
            self._headers,
            content_length,
            chunked,
            self._parser.should_keep_alive(),
            self._lines,
            self._named_hop,
        )
        if self._no_body or status in (204, 304):
            # llhttp cannot be told a response answers HEAD: finish it here and start a
            # fresh parser for the next exchange.
            self._reset_parser = self._no_body
            self._finish()
        if self.head is not None and not self.head.done():
            self.head.set_result(head)

    def on_body(self, chunk: bytes) -> None:
        if self.complete:
            return
        if self._sink is not None:
            self._sink(chunk)
        else:
            self._buffered.append(chunk)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200 or self.complete:
            return
        self._finish()

    def _finish(self) -> None:
        self.complete = True
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _fail_body(self, failure: UpstreamFailure) -> None:
        self.failure = failure
        if self.done is not None and not self.done.done():
            self.done.set_exception(failure)

    async def wait_done(self) -> None:
        """Until the response body has been fully received (no wait if it already has)."""
        if self.complete:
            return
        if self.failure is not None:
            raise self.failure
        self.done = asyncio.get_running_loop().create_future()
        await self.done

    # -- exchange API ------------------------------------------------------------------------
    def begin(self, no_body: bool, timeout: float) -> None:
        """Start an exchange; `timeout` bounds the wait for the response head."""
        loop = self._loop
        self.head = loop.create_future()
        self.done = None
        self.failure = None
        self._sink = None
        self._buffered = []
        self._no_body = no_body
        self.complete = False
        self.received_any = False
        self._timer = loop.call_later(timeout, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        if self.head is not None and not self.head.done():
            self.head.set_exception(AttemptTimeout("upstream did not answer in time"))
            self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        waiter = self._write_waiter
        if waiter is not None:
            await waiter

    def pipe(self, sink: Callable[[bytes], None]) -> None:
        """Send the body (what came already, then each chunk as it arrives) to `sink`."""
        buffered, self._buffered = self._buffered, []
        for chunk in buffered:
            sink(chunk)
        self._sink = sink

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.lost
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def abort(self) -> None:
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
