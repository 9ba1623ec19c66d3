"""A route's header rules and CORS, where they meet a request (CONTRACT 10).

Runs only for a route that has any (`Route.edges` is not None): a preflight is answered
here, before identity and rate limits (a browser sends no credentials with it, and it must
never use up the limit of the request it asks about); every other answer on the route
carries `RouteEdges.answer_lines`.
"""

from __future__ import annotations

from proxy.core.header_rules import RouteEdges
from proxy.errors import Forbidden
from proxy.pipeline.observe import RequestNote
from proxy.server.http11 import ClientConnection
from proxy.server.request import RequestHead

ORIGIN = b"origin"
REQUEST_METHOD = b"access-control-request-method"
OPTIONS = b"OPTIONS"


def header(head: RequestHead, name: bytes) -> bytes | None:
    """The first value of `name` (lower case) among the request's headers."""
    for key, value in head.headers:
        if key == name:
            return value
    return None


def answer_lines(edges: RouteEdges, head: RequestHead) -> bytes:
    """The header lines every answer to this request carries."""
    return edges.answer_lines(header(head, ORIGIN) if edges.cors is not None else None)


def answered_preflight(
    conn: ClientConnection, head: RequestHead, edges: RouteEdges, note: RequestNote
) -> bool:
    """True when the request was a CORS preflight and the sidecar answered it (204);
    raises Forbidden (`cors_forbidden`) for a preflight from an origin not allowed."""
    cors = edges.cors
    if cors is None or head.method != OPTIONS:
        return False
    origin = header(head, ORIGIN)
    if origin is None or header(head, REQUEST_METHOD) is None:
        return False
    lines = cors.preflight(origin)
    if lines is None:
        raise Forbidden(
            f"origin {origin.decode('latin-1')!r} is not allowed on this route",
            code="cors_forbidden",
        )
    response = edges.response
    if response is not None:
        lines = response.lines + lines
    note.reason = "cors_preflight"
    conn.response.send_response(head, 204, [], b"", lines)
    return True
