"""An upgraded connection (WebSocket and other `Upgrade` protocols) relayed byte for byte.

Once the upstream has answered 101, the sidecar no longer speaks HTTP on either socket: the
two transports get a `TunnelEnd` each, and what one end reads the other writes. Flow control
keeps memory bounded: when a transport's write buffer passes its high-water mark, asyncio
calls `pause_writing` on its protocol, and the *other* transport stops being read until the
buffer drains (`resume_writing`). A slow reader therefore holds back a fast writer through
TCP instead of filling the sidecar's memory.

Either side closing (EOF, reset) closes the tunnel; so does silence both ways for
`idle_timeout` (one timer per tunnel, re-armed for the time left, not one per chunk).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from proxy.server.responses import status_line

if TYPE_CHECKING:
    from proxy.pipeline.forward import Attempt
    from proxy.server.http11 import ClientConnection
    from proxy.server.request import RequestHead


class TunnelEnd:
    """One socket of a tunnel: an asyncio protocol (duck-typed, as `ClientConnection`)."""

    __slots__ = ("bytes_read", "other", "transport", "tunnel")

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.other: TunnelEnd | None = None
        self.bytes_read = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass  # the transport exists already: the end is set on it with `set_protocol`

    def data_received(self, data: bytes) -> None:
        other = self.other
        if other is None:
            return
        self.bytes_read += len(data)
        self.tunnel.last_activity = time.monotonic()
        other.transport.write(data)

    def eof_received(self) -> bool:
        self.tunnel.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close()

    def pause_writing(self) -> None:
        """This socket is full: stop reading the one that feeds it."""
        if self.other is not None and not self.other.transport.is_closing():
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and not self.other.transport.is_closing():
            self.other.transport.resume_reading()


class Tunnel:
    """Two transports relayed both ways until either closes or both fall silent;
    `ended` is resolved then."""

    __slots__ = (
        "_timer",
        "client",
        "closed",
        "ended",
        "idle_timeout",
        "last_activity",
        "upstream",
    )

    def __init__(
        self,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        idle_timeout: float,
    ) -> None:
        self.client = TunnelEnd(self, client)
        self.upstream = TunnelEnd(self, upstream)
        self.client.other = self.upstream
        self.upstream.other = self.client
        self.idle_timeout = idle_timeout
        self.last_activity = time.monotonic()
        self.closed = False
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, to_upstream: bytes, to_client: bytes) -> None:
        """Take both transports over; `to_upstream`/`to_client` are bytes read already
        (what followed the request head, what followed the 101 head)."""
        for end in (self.client, self.upstream):
            end.transport.set_protocol(end)  # type: ignore[arg-type]
        if to_upstream:
            self.client.data_received(to_upstream)
        if to_client:
            self.upstream.data_received(to_client)
        self.client.transport.resume_reading()
        self.upstream.transport.resume_reading()
        for end in (self.client, self.upstream):
            transport = end.transport
            if transport.is_closing():
                self.close()
                return
            # A buffer already over its mark told its old protocol, not this end.
            if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                end.pause_writing()
        self._timer = asyncio.get_running_loop().call_later(self.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.closed:
            return
        left = self.last_activity + self.idle_timeout - time.monotonic()
        if left > 0:
            self._timer = asyncio.get_running_loop().call_later(left, self._check_idle)
            return
        self.close(abort=True)

    @property
    def bytes_in(self) -> int:
        """Bytes the client sent through the tunnel."""
        return self.client.bytes_read

    @property
    def bytes_out(self) -> int:
        """Bytes the upstream sent through the tunnel."""
        return self.upstream.bytes_read

    def close(self, abort: bool = False) -> None:
        """Close both sockets, each flushing what it holds unless `abort` (silence: a
        reader that stopped would hold the socket open), and resolve `ended`, once."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for end in (self.client, self.upstream):
            if abort:
                end.transport.abort()
            else:
                end.transport.close()
        if not self.ended.done():
            self.ended.set_result(None)


def open_tunnel(
    conn: ClientConnection, head: RequestHead, attempt: Attempt, limits: bytes, idle_timeout: float
) -> Tunnel | None:
    """The upstream answered 101: pass that answer on (with the rate-limit lines every
    answer carries) and relay both sockets; None when either side has gone meanwhile."""
    upstream, response = attempt.conn, attempt.response
    assert upstream is not None and response is not None
    upstream_transport = upstream.transport
    taken = conn.detach()
    if taken is None or upstream_transport is None or upstream_transport.is_closing():
        upstream.abort()
        if taken is not None:
            taken[0].abort()
        return None
    client_transport, from_client = taken
    rendered = b"%s%s%sX-Request-Id: %s\r\n\r\n" % (
        status_line(101), b"".join(response.lines), limits, head.request_id,
    )  # fmt: skip
    client_transport.write(rendered)
    conn.response.status = 101
    conn.response.bytes_out = len(rendered)
    tunnel = Tunnel(client_transport, upstream_transport, idle_timeout)
    tunnel.start(from_client, upstream.upgraded or b"")
    return tunnel
