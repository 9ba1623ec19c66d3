"""One keep-alive connection to an upstream, as an asyncio protocol parsing with llhttp.

An exchange is driven by callbacks, not futures, so a forwarded request can run from the
client's bytes to the upstream's answer without waking a task: `begin()` with a
`ResponseListener`, write the request, get `response_head()` (or `response_failed()`),
then `pipe()` the body to a sink and hear its end. The head is read from the raw bytes
(`proxy.upstream.head`), so the parser makes no Python call per header. Failures are the
outcome exceptions below; `proxy.errors` is chosen by the forwarding layer, which knows
whether a retry follows.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from proxy.clock import monotonic
from proxy.upstream.head import ResponseHead, head_end

MAX_RESPONSE_HEAD = 65_536
"""Bytes an upstream's response head may take (nginx's proxy_buffer_size is 4-8 KiB)."""


class UpstreamFailure(Exception):
    """An attempt that got no usable answer."""

    kind = "reset"


class ConnectFailure(UpstreamFailure):
    """The TCP connection could not be made: the request never left."""

    kind = "connect-failure"


class TlsFailure(ConnectFailure):
    """The TLS handshake failed or a certificate was refused: the request never reached the
    upstream's application. Its text says why (expired, wrong name, unknown CA ...)."""

    kind = "connect-failure"


_UNKNOWN_CA_CODES = frozenset({2, 18, 19, 20, 21})
"""OpenSSL's verify codes for a chain that ends at no trusted CA (issuer unknown, self-signed
certificate or chain, leaf alone without its issuer)."""


def tls_failure(error: ssl.SSLError) -> TlsFailure:
    """The failure for an `ssl` error, in words an operator acts on."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or "certificate verify failed"
        if error.verify_code in _UNKNOWN_CA_CODES:
            reason = f"unknown CA ({reason})"
    else:
        reason = str(error.reason or error.strerror or "handshake failed").lower()
        reason = reason.replace("_", " ")
    return TlsFailure(f"TLS failed: {reason}")


class ResetBeforeResponse(UpstreamFailure):
    """The connection broke after the request was (maybe) sent, before a response head."""

    kind = "reset"


class AttemptTimeout(UpstreamFailure):
    """No response head within the upstream's `timeout`."""

    kind = "timeout"


class BodyTimeout(UpstreamFailure):
    """The response head was relayed, then no body byte came within `body_timeout`."""

    kind = "timeout"


class BrokenResponse(UpstreamFailure):
    """The response head arrived, then the body broke off."""

    kind = "reset"


class ResponseListener(Protocol):
    """Hears how the head phase of an exchange ends: exactly one of the two, once."""

    def response_head(self, head: ResponseHead) -> None: ...

    def response_failed(self, failure: UpstreamFailure) -> None: ...


BodyEnd = Callable[[UpstreamFailure | None], None]
"""Called once when a piped body ends: None when complete, else why it broke off."""


class HeadWaiter:
    """A `ResponseListener` for code that awaits: a future resolved by the head phase."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[ResponseHead] = asyncio.get_running_loop().create_future()

    def response_head(self, head: ResponseHead) -> None:
        if not self.future.done():
            self.future.set_result(head)

    def response_failed(self, failure: UpstreamFailure) -> None:
        if not self.future.done():
            self.future.set_exception(failure)


class HeadTimeouts:
    """One coarse timer for all of a pool's exchanges still waiting for a response head.

    A timer per attempt (`call_later` and its cancel) cost about 2 us per request here,
    more than the rest of the attempt's bookkeeping; this costs a dict insert and delete.
    A timeout is noticed within `TICK_S` of its due time.
    """

    TICK_S = 0.01

    __slots__ = ("timer", "waiting")

    def __init__(self) -> None:
        self.waiting: dict[UpstreamConnection, float] = {}
        self.timer: asyncio.TimerHandle | None = None

    def watch(self, conn: UpstreamConnection, deadline: float) -> None:
        self.waiting[conn] = deadline
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.TICK_S, self._scan)

    def unwatch(self, conn: UpstreamConnection) -> None:
        self.waiting.pop(conn, None)

    def _scan(self) -> None:
        now = monotonic()
        expired = [conn for conn, deadline in self.waiting.items() if deadline <= now]
        for conn in expired:
            del self.waiting[conn]
            conn.head_timed_out()
        self.timer = None
        if self.waiting:
            self.timer = asyncio.get_running_loop().call_later(self.TICK_S, self._scan)


class BodyTimeouts:
    """A pool's `body_timeout`, and who hears of a body cut for its silence (`on_cut`, given
    the upstream's name: the attempt counter)."""

    __slots__ = ("on_cut", "seconds", "upstream")

    def __init__(
        self,
        seconds: float = 30.0,
        upstream: str = "",
        on_cut: Callable[[str], None] | None = None,
    ) -> None:
        self.seconds = seconds
        self.upstream = upstream
        self.on_cut = on_cut

    def cut(self) -> None:
        if self.on_cut is not None:
            self.on_cut(self.upstream)


class UpstreamConnection:
    """One keep-alive connection to an upstream: an asyncio protocol (duck-typed, as
    `ClientConnection` is).

    A body being piped is watched for silence without a timer per chunk: a chunk only
    stamps `_last_byte`; one timer per response, armed only when a body outlives the read
    that brought its head, compares that stamp when it fires and re-arms itself for the
    time left. While the sidecar itself holds reading back (a slow client), the body is
    not silent, only waiting.
    """

    __slots__ = (
        "_bodies",
        "_body_timer",
        "_buffered",
        "_feeding",
        "_head",
        "_head_raw",
        "_head_start",
        "_in_body",
        "_last_byte",
        "_listener",
        "_no_body",
        "_on_end",
        "_on_lost",
        "_parser",
        "_reading_paused",
        "_reset_parser",
        "_sink",
        "_timeouts",
        "_write_waiter",
        "complete",
        "failure",
        "fresh",
        "lost",
        "transport",
        "upgrade",
        "upgraded",
    )

    def __init__(
        self,
        on_lost: Callable[[UpstreamConnection], None],
        timeouts: HeadTimeouts,
        bodies: BodyTimeouts | None = None,
    ) -> None:
        self._on_lost = on_lost
        self._timeouts = timeouts
        self._bodies = bodies if bodies is not None else BodyTimeouts()
        self._body_timer: asyncio.TimerHandle | None = None
        self._last_byte = 0.0
        self._feeding = False
        self._reading_paused = False
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._listener: ResponseListener | None = None
        self._on_end: BodyEnd | None = None
        self._head = ResponseHead()
        self._head_raw = b""
        self._head_start = 0
        self._in_body = False
        self._sink: Callable[[bytes], None] | None = None
        self._buffered: list[bytes] = []
        self._no_body = False
        self._reset_parser = False
        self._write_waiter: asyncio.Future[None] | None = None
        self.failure: UpstreamFailure | None = None
        self.complete = False
        self.lost = False
        self.fresh = True
        """No response has come on this connection yet."""
        self.upgrade = False
        """The exchange asks for an `Upgrade`: a 101 is its answer, not an interim one. Set
        around an upgrade's exchange only (`Attempt.send`), so a plain one never pays."""
        self.upgraded: bytes | None = None
        """After a 101 to an upgrade: the bytes that followed its head (the new protocol's);
        reading stops there, for the tunnel to take the transport over."""

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._timeouts.unwatch(self)
        if self._listener is not None:
            if isinstance(exc, ssl.SSLError) and self.fresh:
                # Refused in the TLS layer before any answer: with TLS 1.3 a server that
                # rejects the client's certificate says so only after the handshake.
                self._head_failed(tls_failure(exc))
            else:
                self._head_failed(ResetBeforeResponse("upstream closed the connection"))
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
        if not self._in_body:
            # Kept until the head is complete, to be read by `on_headers_complete`.
            raw = self._head_raw + data if self._head_raw else data
            self._head_raw = raw
            if len(raw) - self._head_start > MAX_RESPONSE_HEAD:
                end = raw.find(b"\r\n\r\n", self._head_start)
                if end < 0 or end - self._head_start > MAX_RESPONSE_HEAD:
                    self._refuse(BrokenResponse("upstream sent a response head too large"))
                    return
        else:
            self._last_byte = monotonic()
        self._feeding = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._feeding = False
            self._refuse(BrokenResponse(f"bad response from upstream: {error}"))
            return
        except httptools.HttpParserUpgrade as switched:
            self._feeding = False
            self._switched(data[switched.args[0] :])
            return
        self._feeding = False
        if self._reset_parser:
            self._reset_parser = False
            self._parser = httptools.HttpResponseParser(self)
        if self._in_body and self._on_end is not None and self._body_timer is None:
            self._watch_body()

    def _switched(self, rest: bytes) -> None:
        """The upstream switched protocols: keep what followed, read nothing more."""
        if self.upgraded is None:
            self._refuse(BrokenResponse("upstream switched protocols unasked"))
            return
        self.upgraded = rest
        if self.transport is not None:
            self.transport.pause_reading()

    def _refuse(self, failure: UpstreamFailure) -> None:
        """A response the sidecar will not pass on: fail the exchange, cut the connection."""
        if self._listener is not None:
            self._head_failed(failure)
        elif not self.complete:
            self._fail_body(failure)
        self.abort()

    def pause_writing(self) -> None:
        self._write_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._head = ResponseHead()

    def on_headers_complete(self) -> None:
        parser = self._parser
        head = self._head
        head.status = status = parser.get_status_code()
        raw = self._head_raw
        start, end = head_end(raw, self._head_start)
        if status < 200:
            if status == 101 and self.upgrade:
                return self._switching(head, raw[start:end])
            self._head_start = end + 2
            return  # 1xx: informational, the real answer follows
        head.read_headers(raw[start:end])
        self.fresh = False
        self._head_raw = b""
        self._head_start = 0
        self._timeouts.unwatch(self)
        head.keep_alive = parser.should_keep_alive()
        if self._no_body or status == 204 or status == 304:
            # llhttp cannot be told a response answers HEAD: finish it here and start a
            # fresh parser for the next exchange.
            self._reset_parser = self._no_body
            self.complete = True
        else:
            self._in_body = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.response_head(head)

    def _switching(self, head: ResponseHead, raw: bytes) -> None:
        """A 101 to an upgrade: the final answer of this exchange, the connection's last."""
        head.read_upgrade_headers(raw)
        self.fresh = False
        self.complete = True
        self.upgraded = b""
        self._timeouts.unwatch(self)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.response_head(head)

    def on_body(self, chunk: bytes) -> None:
        if self.complete:
            return
        if self._sink is not None:
            self._sink(chunk)
        elif self._on_end is None:
            self._buffered.append(chunk)

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._parser.get_status_code() < 200 or self.complete:
            return
        self.complete = True
        self._end(None)

    def _head_failed(self, failure: UpstreamFailure) -> None:
        self._timeouts.unwatch(self)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.response_failed(failure)

    def _fail_body(self, failure: UpstreamFailure) -> None:
        self.failure = failure
        self._end(failure)

    def _end(self, failure: UpstreamFailure | None) -> None:
        if self._body_timer is not None:
            self._stop_watching_body()
        on_end = self._on_end
        if on_end is not None:
            self._on_end = None
            self._sink = None
            on_end(failure)

    # -- body silence -------------------------------------------------------------------------
    def _watch_body(self) -> None:
        self._last_byte = monotonic()
        loop = asyncio.get_running_loop()
        self._body_timer = loop.call_later(self._bodies.seconds, self._check_body)

    def _stop_watching_body(self) -> None:
        timer, self._body_timer = self._body_timer, None
        if timer is not None:
            timer.cancel()

    def _check_body(self) -> None:
        self._body_timer = None
        if self._on_end is None:
            return
        seconds = self._bodies.seconds
        left = seconds if self._reading_paused else self._last_byte + seconds - monotonic()
        if left > 0:
            self._body_timer = asyncio.get_running_loop().call_later(left, self._check_body)
            return
        self._fail_body(BodyTimeout("upstream sent no body byte within body_timeout"))
        self.abort()
        self._bodies.cut()

    # -- exchange API ------------------------------------------------------------------------
    def begin(self, no_body: bool, deadline: float, listener: ResponseListener) -> None:
        """Start an exchange; the response head is due by `deadline` (monotonic)."""
        self._listener = listener
        self._on_end = None
        self.failure = None
        self._sink = None
        self._buffered = []
        self._no_body = no_body
        self._in_body = False
        self._head_raw = b""
        self._head_start = 0
        self.complete = False
        self._timeouts.watch(self, deadline)

    def head_timed_out(self) -> None:
        if self._listener is not None:
            self._head_failed(AttemptTimeout("upstream did not answer in time"))
            self.abort()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        waiter = self._write_waiter
        if waiter is not None:
            await waiter

    def pipe(self, sink: Callable[[bytes], None] | None, on_end: BodyEnd) -> None:
        """Send the body (what came already, then each chunk) to `sink` (None: discard it);
        `on_end` hears its end, at once if it has ended already."""
        buffered, self._buffered = self._buffered, []
        if sink is not None:
            for chunk in buffered:
                sink(chunk)
        self._sink = sink
        self._on_end = on_end
        if self.complete:
            self._end(None)
        elif self.failure is not None:
            self._end(self.failure)
        elif not self._feeding and self._body_timer is None:
            # Outside a read (the body's rest is awaited): watch it now, as no read may come.
            self._watch_body()

    def abandon(self) -> None:
        """Nobody waits for this answer any more: forget the listeners, cut the connection."""
        self._listener = None
        self._on_end = None
        self._sink = None
        self._stop_watching_body()
        self.abort()

    def pause_reading(self) -> None:
        self._reading_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._last_byte = monotonic()
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    @property
    def usable(self) -> bool:
        """Open, as far as this side knows: a request may be sent on it."""
        transport = self.transport
        return not self.lost and transport is not None and not transport.is_closing()

    def abort(self) -> None:
        self._timeouts.unwatch(self)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
