"""Building response heads as bytes: status lines, framing, the JSON error body."""

from __future__ import annotations

from http import HTTPStatus

from proxy.core.headers import Headers
from proxy.errors import ProxyError

_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())
        _STATUS_LINES[status] = line
    return line


JSON = (b"Content-Type", b"application/json")


def error_headers(error: ProxyError) -> Headers:
    headers: Headers = [JSON]
    headers.extend((k.encode(), v.encode()) for k, v in error.headers)
    return headers
