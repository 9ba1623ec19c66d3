"""What a request head must be before anything acts on it (RFC 9112 framing, the target).

llhttp already refuses the smuggling shapes (Content-Length with Transfer-Encoding, two
Content-Lengths, bad chunk sizes); these are the rules it leaves to the server, each of
which let a malformed request reach the upstream before:
- a request line without a version (HTTP/0.9): 400;
- HTTP/1.1 without `Host`, or any request with two: 400 (RFC 9112 3.2);
- chunked on HTTP/1.0, which has no chunked encoding: 400;
- a target holding `#` (a fragment is never sent by a client): 400;
- a `Content-Length` above `max_body_bytes`: 413 now, before any `100 Continue`;
- the path normalised (`proxy.core.paths`): routes, limits and the upstream see one form.
"""

from __future__ import annotations

from typing import Final

from proxy.core.paths import normalise_path
from proxy.errors import BadRequest, BodyTooLarge, ProxyError
from proxy.server.request import RequestHead

HASH: Final = 35
"""`#` as a byte value."""


def check_head(head: RequestHead, max_body_bytes: int) -> ProxyError | None:
    """The error to answer `head` with, or None; normalises `head.path` and `head.target`."""
    version = head.http_version
    if version == "0.9":
        return BadRequest("the request line has no HTTP version")
    hosts = 0
    for name, _ in head.headers:
        if name == b"host":
            hosts += 1
    if hosts > 1:
        return BadRequest("more than one Host header")
    if hosts == 0:
        if version == "1.1":
            return BadRequest("an HTTP/1.1 request needs a Host header")
        # HTTP/1.0 may omit it; the upstream is spoken to in HTTP/1.1, which needs one (an
        # empty value when there is no authority, RFC 9112 3.2).
        head.headers.append((b"host", b""))
    if head.chunked and version == "1.0":
        return BadRequest("HTTP/1.0 has no chunked encoding")
    length = head.content_length
    if length is not None and length > max_body_bytes:
        return BodyTooLarge(f"request body is larger than {max_body_bytes} bytes")
    target = head.target
    if HASH in target:  # an int: see `proxy.core.paths` for why
        return BadRequest("the request target holds a fragment (#)")
    path = head.path
    try:
        normal = normalise_path(path)
    except BadRequest as error:
        return error
    if normal is not path:
        head.target = normal + target[len(path) :]
        head.path = normal
    return None


def body_framing(head: RequestHead) -> bytes:
    """A head with only `head`'s body framing: fed to a fresh parser, it reads the body of
    an upgrade request that llhttp skipped (the body is then read as a body, never as a
    second request)."""
    if head.chunked:
        return b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    return b"PUT / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (head.content_length or 0)
