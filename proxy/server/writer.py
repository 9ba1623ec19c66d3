"""The response being written on one client connection: head, framing, body.

One `ResponseWriter` per connection, reset by `begin()` for each response (responses on a
connection go out one after another), so a request allocates none. It decides the
framing (Content-Length, chunked to an HTTP/1.1 client, close-delimited to an HTTP/1.0
one), holds the head back so it leaves with the first piece of body in one write, and
knows whether the connection must close after this response.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.core.headers import Headers
from proxy.server.request import RequestHead
from proxy.server.responses import JSON, status_line

if TYPE_CHECKING:
    from proxy.server.http11 import ServerState


class ResponseWriter:
    __slots__ = (
        "_held",
        "bytes_out",
        "chunked",
        "closing_after",
        "server",
        "started",
        "status",
        "transport",
    )

    def __init__(self, server: ServerState) -> None:
        self.server = server
        """Read when a head is written: a drain that began meanwhile closes the connection."""
        self.transport: asyncio.Transport | None = None
        self.started = False
        """True once the head has been written (or held): an error can then only cut."""
        self.status = 0
        self.chunked = False
        self.closing_after = False
        """The connection closes after this response (the client asked, or we must)."""
        self._held: bytes | None = None
        self.bytes_out = 0
        """Bytes written for this response (head, framing and body)."""

    def begin(self, keep_alive: bool) -> None:
        self.started = False
        self.chunked = False
        self.bytes_out = 0
        self.closing_after = not keep_alive or self.server.draining

    def send_continue(self) -> None:
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def send_head(
        self,
        head: RequestHead,
        status: int,
        headers: Headers,
        length: int | None,
        extra_lines: bytes = b"",
    ) -> bool:
        """Write the status line and headers (then `extra_lines`, rendered), adding framing;
        True when a body follows."""
        lines = [name + b": " + value + b"\r\n" for name, value in headers]
        if extra_lines:
            lines.append(extra_lines)
        return self.send_head_lines(head, status, lines, length)

    def send_head_lines(
        self, head: RequestHead, status: int, lines: list[bytes], length: int | None
    ) -> bool:
        """Like `send_head`, with header lines already rendered (`Name: value\\r\\n`).

        `length` None means the body length is unknown: chunked to an HTTP/1.1 client,
        close-delimited to an HTTP/1.0 one. `lines` is extended in place.
        """
        self.started = True
        self.status = status
        method = head.method
        # RFC 9112 6.3: these responses never have a body, whatever their headers say.
        no_body = method == b"HEAD" or status < 200 or status == 204 or status == 304
        out = lines
        if length is not None:
            if not no_body or method == b"HEAD":
                out.append(b"Content-Length: %d\r\n" % length)
        elif not no_body:
            if head.http_version == "1.1":
                out.append(b"Transfer-Encoding: chunked\r\n")
                self.chunked = True
            else:
                self.closing_after = True
        if self.closing_after or self.server.draining:
            self.closing_after = True
            out.append(b"X-Request-Id: %s\r\nConnection: close\r\n\r\n" % head.request_id)
        elif head.http_version == "1.0":
            out.append(b"X-Request-Id: %s\r\nConnection: keep-alive\r\n\r\n" % head.request_id)
        else:
            out.append(b"X-Request-Id: %s\r\n\r\n" % head.request_id)
        rendered = status_line(status) + b"".join(out)
        if no_body:
            if self.transport is not None:
                self.bytes_out += len(rendered)
                self.transport.write(rendered)
        else:
            # Held back so the head and the first piece of body leave in one write.
            self._held = rendered
        return not no_body

    def send_body(self, chunk: bytes) -> None:
        if not chunk or self.transport is None:
            return
        if self.chunked:
            chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        if self._held is not None:
            chunk = self._held + chunk
            self._held = None
        self.bytes_out += len(chunk)
        self.transport.write(chunk)

    def end_body(self) -> None:
        tail = b"0\r\n\r\n" if self.chunked else b""
        if self._held is not None:
            tail = self._held + tail
            self._held = None
        if tail and self.transport is not None:
            self.bytes_out += len(tail)
            self.transport.write(tail)

    def send_response(
        self,
        head: RequestHead,
        status: int,
        headers: Headers,
        body: bytes,
        extra_lines: bytes = b"",
    ) -> None:
        if self.send_head(head, status, headers, len(body), extra_lines):
            self.send_body(body)
            self.end_body()

    def send_json(
        self, head: RequestHead, status: int, body: bytes, extra: Headers | None = None
    ) -> None:
        self.send_response(head, status, [JSON, *(extra or ())], body)
