"""The client side of the sidecar: a strict HTTP/1.1 server as an asyncio protocol.

Why not aiohttp here: measured on this hardware, aiohttp's per-request objects alone cost
more CPU than nginx spends on a whole forwarded request. This protocol parses with llhttp
(httptools), keeps one serving task per connection (not per request), and lets the
forwarding layer write straight to the transport.

Strictness (as nginx/Envoy): llhttp rejects request smuggling shapes (Content-Length with
Transfer-Encoding, duplicate Content-Lengths, bad chunk sizes, whitespace tricks) -> 400;
a head over `max_header_bytes` -> 431; headers not received within `header_timeout` -> 408;
idle keep-alive connections close after `keepalive_timeout`. Pipelined requests are parsed
ahead and answered in order.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, cast

import httptools

from proxy.core.headers import new_request_id
from proxy.errors import (
    BadRequest,
    ExpectationFailed,
    HeadersTooLarge,
    ProxyError,
    RequestTimeout,
)
from proxy.server.flow import FlowControl
from proxy.server.framing import body_framing, check_head
from proxy.server.request import Headers, RequestBody, RequestHead
from proxy.server.responses import error_headers
from proxy.server.writer import ResponseWriter

log = logging.getLogger("proxy.server")

Handler = Callable[["ClientConnection", RequestHead, "RequestBody | None"], Awaitable[None]]
FastHandler = Callable[["ClientConnection", RequestHead], None]
"""Takes a request without a body at once, from the parser's callback; it calls
`request_done()` when the request is over."""
UpgradeHandler = Callable[[asyncio.Transport, bytes, RequestHead], None]

MAX_PIPELINED = 8
"""Requests parsed ahead of the one being answered; past it the rest waits unparsed."""
PARSE_SLICE = 4096
"""Bytes fed to the parser at a time when more arrive at once, so a burst of pipelined
requests is parsed no further than `MAX_PIPELINED` (llhttp cannot be paused midway)."""
_NOTED = frozenset(
    {
        b"authorization",
        b"connection",
        b"content-length",
        b"expect",
        b"idempotency-key",
        b"traceparent",
        b"tracestate",
        b"transfer-encoding",
        b"upgrade",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-request-id",
    }
)
"""Headers `RequestHead` keeps as attributes (see `_note`); most requests have few."""


def _note(head: RequestHead, name: bytes, value: bytes) -> None:
    """Keep a header the stages need; refuse framing and expectations we don't speak."""
    if name == b"content-length":
        head.content_length = int(value)
    elif name == b"transfer-encoding":
        if value.strip().lower() != b"chunked":
            raise _Reject(BadRequest("only Transfer-Encoding: chunked is accepted"))
        head.chunked = True
    elif name == b"expect":
        if value.strip().lower() != b"100-continue":
            raise _Reject(ExpectationFailed("only Expect: 100-continue is supported"))
        head.expect_continue = True
    elif name == b"x-request-id":
        if 0 < len(value) <= 200 and not head.request_id:
            head.request_id = value
    elif name == b"authorization":
        head.authorization = head.authorization or value
    elif name == b"x-forwarded-for":
        head.forwarded_for = head.forwarded_for or value
    elif name == b"x-forwarded-proto":
        head.forwarded_proto = head.forwarded_proto or value
    elif name == b"idempotency-key":
        head.idempotency_key = head.idempotency_key or value
    elif name == b"connection":
        head.connection = head.connection or value
    elif name == b"traceparent":
        head.traceparent = value if head.traceparent is None else b""
    elif name == b"tracestate":
        state = head.tracestate
        head.tracestate = value if state is None else state + b"," + value
    else:
        head.upgrade = head.upgrade or value


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_header_bytes: int = 65_536
    max_body_bytes: int = 1_048_576
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_connections: int = 10_000
    request_buffer_bytes: int = 65_536
    client_body_timeout: float = 10.0


class Cancellable(Protocol):
    """What a connection tells to stop when its client goes away (an exchange, a task)."""

    def cancel(self) -> object: ...


class ServerState:
    """What every connection of one listener shares; `limits` and `handler` swap on reload."""

    def __init__(
        self, handler: Handler, limits: ServerLimits, fast: FastHandler | None = None
    ) -> None:
        self.handler = handler
        self.fast = fast
        self.limits = limits
        self.upgrade: Callable[[RequestHead], UpgradeHandler | None] = lambda head: None
        self.other_connections: Callable[[], int] = lambda: 0
        """Connections this process holds besides `connections` (taken-over WebSockets)."""
        self.on_refused: Callable[[], None] = lambda: None
        """Told of each connection closed at once for `max_connections`."""
        self.connections: set[ClientConnection] = set()
        self.scheme = b"http"
        """`X-Forwarded-Proto` for requests on this listener (`https` when it serves TLS)."""
        self.draining = False
        self._sweeper: asyncio.TimerHandle | None = None

    def start_sweeping(self) -> None:
        """One timer for all connections, rather than one per request, closes slow/idle ones."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        for conn in list(self.connections):
            conn.sweep(now)
        self._sweeper = loop.call_later(0.5, self.start_sweeping)

    def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    def in_flight(self) -> int:
        return sum(1 for c in self.connections if c.busy)

    def close_idle(self) -> None:
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()


class _Reject(Exception):
    def __init__(self, error: ProxyError) -> None:
        self.error = error


class ClientConnection:
    """One client connection: an asyncio protocol (duck-typed: a compiled class cannot
    subclass `asyncio.Protocol`, and the event loop only calls the methods).

    It parses, reads ahead a bounded number of pipelined requests and hands each to the
    pipeline in order; the response being written is `response` (`server/writer.py`) and
    the writing side of flow control is `flow` (`server/flow.py`)."""

    __slots__ = (
        "_begun",
        "_body",
        "_head_size",
        "_head_started",
        "_headers",
        "_last_activity",
        "_loop",
        "_parser",
        "_pending",
        "_read_paused",
        "_resumed_body",
        "_task",
        "_tunnel_held",
        "_unparsed",
        "_upgrade_body",
        "_url",
        "_waiter",
        "active",
        "busy",
        "flow",
        "peer_ip",
        "response",
        "state",
        "transport",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self._parser = httptools.HttpRequestParser(self)
        self._url: list[bytes] = []
        self._headers: Headers = []
        self._head_size = 0
        self._head_started: float | None = None
        self._last_activity = time.monotonic()
        self._begun = False
        self._body: RequestBody | None = None
        self._upgrade_body: RequestBody | None = None
        self._unparsed: bytes | None = None
        self._tunnel_held = False
        """An upgrade waits to become a tunnel: the bytes after it are kept in `_unparsed`
        (reading paused) for the upstream, never parsed."""
        self._resumed_body: RequestBody | None = None
        self._pending: deque[tuple[RequestHead, RequestBody | None]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._read_paused = False
        self.flow = FlowControl()
        self.response = ResponseWriter(state)
        """The response being written (one at a time, in order)."""
        self.busy = False
        self.active: Cancellable | None = None

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        state = self.state
        if len(state.connections) + state.other_connections() >= state.limits.max_connections:
            state.on_refused()
            cast(asyncio.Transport, transport).abort()  # at once: its descriptor is short
            return
        self.transport = self.flow.transport = self.response.transport = cast(
            asyncio.Transport, transport
        )
        self._loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        if self._body is not None and not self._body.done:
            self._body.abort()
        for _, body in self._pending:
            if body is not None and not body.done:
                body.abort()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        active, self.active = self.active, None
        if active is not None:
            active.cancel()
        self._wake()
        self.flow.release_writers()

    def data_received(self, data: bytes) -> None:
        self._last_activity = time.monotonic()
        if self._unparsed is not None:
            self._unparsed += data  # parsing is held back (and reading paused): keep it
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Feed the parser, holding the rest back (reading paused) once `MAX_PIPELINED`
        requests wait or the output is backed up: a client that pipelines without reading
        costs at most that much memory (CONTRACT 14)."""
        start = 0
        end = len(data)
        while start < end:
            if len(self._pending) >= MAX_PIPELINED or self.flow.write_paused:
                self._unparsed = data[start:]
                self._pause_reading()
                return
            stop = end if end - start <= PARSE_SLICE else start + PARSE_SLICE
            try:
                self._parser.feed_data(data if start == 0 and stop == end else data[start:stop])
            except httptools.HttpParserUpgrade as upgrade:
                self._on_upgrade(data[start:], upgrade.args[0])
                return
            except httptools.HttpParserCallbackError as error:
                cause = error.__context__
                if isinstance(cause, _Reject):
                    self._fail(cause.error)
                else:
                    log.exception("request parser callback failed")
                    self._fail(BadRequest("malformed request"))
                return
            except httptools.HttpParserError as error:
                self._fail(BadRequest(f"malformed request: {error}"))
                return
            start = stop

    def pause_writing(self) -> None:
        # The transport's unsent output passed its high-water mark (64 KiB under uvloop and
        # asyncio, within the 256 KiB of CONTRACT 14): read nothing more until it drains.
        self.flow.pause_writing()
        self._pause_reading()

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        self._resume_reading()

    # -- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        self._begun = True
        self._url = []
        self._headers = []
        self._head_size = 0
        self._head_started = self._last_activity

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)
        if self._head_size > self.state.limits.max_header_bytes:
            raise _Reject(HeadersTooLarge("request head is too large"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.state.limits.max_header_bytes:
            raise _Reject(HeadersTooLarge("request head is too large"))
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._head_started = None
        if self._resumed_body is not None:
            # The framing-only head `_on_upgrade` fed: its body belongs to the request before.
            self._body, self._resumed_body = self._resumed_body, None
            return
        parser = self._parser
        keep_alive = parser.should_keep_alive()
        head = RequestHead(
            parser.get_method(), b"".join(self._url), self._headers, "1.1", keep_alive,
            self.peer_ip, self._last_activity,
        )  # fmt: skip
        for name, value in self._headers:
            if name in _NOTED:
                _note(head, name, value)
        if not keep_alive or head.connection is not None:
            # Otherwise llhttp's keep-alive rule says HTTP/1.1, and asking costs a str.format.
            head.http_version = parser.get_http_version()
        if not head.request_id:
            head.request_id = new_request_id()
        refused = check_head(head, self.state.limits.max_body_bytes)
        if refused is not None:
            raise _Reject(refused)
        body: RequestBody | None = None
        if head.chunked or head.content_length:
            limits = self.state.limits
            body = RequestBody(
                limits.max_body_bytes,
                self._pause_reading,
                self._resume_reading,
                limits.client_body_timeout,
            )
            if head.upgrade is not None and parser.should_upgrade():
                # llhttp skips an upgrade's body: it is read after the upgrade point, and
                # the request served as a plain one (see `_on_upgrade`).
                self._upgrade_body = body
        elif head.upgrade is not None and parser.should_upgrade():
            head.websocket = True
        elif not self.busy and not self._pending:
            fast = self.state.fast
            if fast is not None and self.transport is not None and not self.transport.is_closing():
                self._begin_response(head)
                fast(self, head)
                return
        self._body = body
        self._pending.append((head, body))
        if len(self._pending) >= MAX_PIPELINED:
            self._pause_reading()
        if self._task is None:
            self._task = self._loop.create_task(self._serve())
        else:
            self._wake()

    def on_body(self, chunk: bytes) -> None:
        if self._body is not None:
            self._body.feed(chunk)

    def on_message_complete(self) -> None:
        body = self._body
        if body is not None and body is not self._upgrade_body:
            body.finish()
            self._body = None

    # -- serving -------------------------------------------------------------------------
    async def _serve(self) -> None:
        """Answer the parsed requests one by one, in order (pipelining)."""
        while self.transport is not None and not self.transport.is_closing():
            if not self._pending or self.busy:
                self._waiter = self._loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
                continue
            head, body = self._pending.popleft()
            self._begin_response(head)
            if self._read_paused and len(self._pending) < MAX_PIPELINED // 2:
                self._resume_reading()  # after `busy` is set: what it parses waits its turn
            try:
                if body is not None and not body.done:
                    await self._buffer_body(head, body)
                await self.state.handler(self, head, body)
            except asyncio.CancelledError:
                raise
            except ProxyError as error:
                self._answer_error(head, error)
            except Exception:
                log.exception("handler failed", extra={"request_id": head.request_id.decode()})
                self._answer_error(head, ProxyError("internal error"))
            finally:
                self.busy = False
            self._last_activity = time.monotonic()
            if body is not None and not body.done:
                # The body was not read to its end: the connection cannot be reused.
                self.response.closing_after = True
            if head.websocket:
                # An upgrade not taken over: what the client sent after it is unparsable.
                self.response.closing_after = True
            if self.response.closing_after or self.state.draining:
                self.close()
                return

    async def _buffer_body(self, head: RequestHead, body: RequestBody) -> None:
        """Read a small body whole before anything is sent upstream (as nginx does): a
        client that stalls its body then costs an upstream nothing, and its 408 is its own
        fault, never an upstream failure (CONTRACT 14). Larger bodies stream."""
        limits = self.state.limits
        if head.content_length is not None and head.content_length > limits.request_buffer_bytes:
            return
        if head.expect_continue:
            self.response.send_continue()
            head.expect_continue = False  # answered: the body is read here, not by an attempt
        await body.wait_buffered(limits.request_buffer_bytes, limits.client_body_timeout)

    def _begin_response(self, head: RequestHead) -> None:
        self.busy = True
        self.response.begin(head.keep_alive)

    def request_done(self) -> None:
        """A request taken by the fast handler has been answered: serve the next one."""
        self.busy = False
        self.active = None
        self._last_activity = time.monotonic()
        if self.response.closing_after or self.state.draining:
            self.close()
        elif self._pending:
            if self._task is None:
                self._task = self._loop.create_task(self._serve())
            else:
                self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _answer_error(self, head: RequestHead, error: ProxyError) -> None:
        if self.response.started:
            self.abort()
            return
        self.response.send_response(head, error.status, error_headers(error), error.body())

    def _fail(self, error: ProxyError) -> None:
        """A request we cannot parse: answer it if nothing was sent yet, then close."""
        self._pause_reading()
        if self._body is not None:
            self._body.fail(error)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self.response.started:
            head = RequestHead(b"GET", b"/", [], "1.1", False, self.peer_ip, time.monotonic())
            head.request_id = new_request_id()
            self.response.closing_after = True
            self.response.send_response(head, error.status, error_headers(error), error.body())
        transport.close()

    def _on_upgrade(self, data: bytes, offset: int) -> None:
        """A WebSocket upgrade: hand the socket to the hub if the path has one."""
        head, _ = self._pending[-1] if self._pending else (None, None)
        if head is None:
            self._fail(BadRequest("unexpected upgrade"))
            return
        upgrade_body = self._upgrade_body
        takeover = self.state.upgrade(head) if upgrade_body is None else None
        if takeover is None and head.websocket:
            # An upgrade without a body on no hub path: the pipeline may tunnel it to the
            # upstream. What follows the head is the new protocol's, kept for the upstream
            # (`detach`), never parsed.
            self._tunnel_held = True
            self._unparsed = data[offset:]
            self._pause_reading()
            return
        if takeover is None:
            # A body came with the upgrade: serve it as a plain
            # request; a fresh parser goes on after the upgrade point (llhttp stops there
            # for good), first reading the body that llhttp skipped.
            self._parser = httptools.HttpRequestParser(self)
            if upgrade_body is not None:
                self._upgrade_body = None
                self._resumed_body = upgrade_body
                self._parser.feed_data(body_framing(head))
            rest = data[offset:]
            if rest:
                self.data_received(rest)
            return
        if len(self._pending) != 1 or self.busy:
            self._fail(BadRequest("upgrade while requests are pending"))
            return
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()
        self.state.connections.discard(self)
        transport = self.transport
        assert transport is not None
        self.transport = self.flow.transport = self.response.transport = None
        raw = rebuild_head(head) + data[offset:]
        takeover(transport, raw, head)

    def detach(self) -> tuple[asyncio.Transport, bytes] | None:
        """Give the socket up to a tunnel, with the bytes the client sent after its upgrade
        request; None when the client has gone. The connection serves nothing more."""
        transport = self.transport
        if transport is None or transport.is_closing() or not self._tunnel_held:
            return None
        self.state.connections.discard(self)
        self.transport = self.flow.transport = self.response.transport = None
        rest, self._unparsed = self._unparsed or b"", None
        return transport, rest

    # -- flow control ----------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        """Parse what was held back, then read again, unless a bound still holds."""
        if self.flow.write_paused or self._tunnel_held or len(self._pending) >= MAX_PIPELINED:
            return
        held = self._unparsed
        if held is not None:
            self._unparsed = None
            self._parse(held)
            if self._unparsed is not None:
                return
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    # -- what the sidecar's own endpoints write with (the pipeline uses `response`) --------
    def send_response(self, head: RequestHead, status: int, headers: Headers, body: bytes) -> None:
        self.response.send_response(head, status, headers, body)

    def send_json(
        self, head: RequestHead, status: int, body: bytes, extra: Headers | None = None
    ) -> None:
        self.response.send_json(head, status, body, extra)

    def close_after_response(self) -> None:
        self.response.closing_after = True

    def abort(self) -> None:
        """Cut the connection: the only honest answer once a response is half sent."""
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def sweep(self, now: float) -> None:
        limits = self.state.limits
        if self._head_started is not None:
            if now - self._head_started > limits.header_timeout:
                self._fail(RequestTimeout("request headers not received in time"))
        elif not self.busy and not self._pending:
            # A connection that never sent a byte has `header_timeout` to start (nginx's
            # client_header_timeout): idle sockets cannot pile up at keep-alive's pace.
            idle = limits.keepalive_timeout if self._begun else limits.header_timeout
            if now - self._last_activity > idle:
                self.close()


def rebuild_head(head: RequestHead) -> bytes:
    """The request head as bytes again, for a WebSocket library that parses it itself."""
    lines = [b"%s %s HTTP/%s\r\n" % (head.method, head.target, head.http_version.encode())]
    lines.extend(name + b": " + value + b"\r\n" for name, value in head.headers)
    lines.append(b"\r\n")
    return b"".join(lines)
