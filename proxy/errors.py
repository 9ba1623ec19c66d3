"""Errors the sidecar answers itself, one tree, turned into JSON in one place.

    ProxyError (status, code)
    ├── InvalidToken            401 invalid_token   (WWW-Authenticate: Bearer error="invalid_token")
    │   └── KeysRefreshing      (an unknown kid while an early JWKS refresh runs: wait, retry)
    ├── AuthRequired            401 invalid_token   (WWW-Authenticate: Bearer)
    ├── Forbidden               403 forbidden
    ├── NotFound                404 not_found / no_route / unknown_breaker
    ├── MethodNotAllowed        405 method_not_allowed (Allow)
    ├── UpgradeRequired         426 upgrade_required (a WebSocket path without Upgrade)
    ├── BadRequest              400 bad_request / unknown_action / invalid_event
    ├── RequestTimeout          408 request_timeout (headers too slow)
    ├── BodyTooLarge            413 body_too_large
    ├── ExpectationFailed       417 expectation_failed
    ├── HeadersTooLarge         431 headers_too_large
    ├── RateLimited             429 rate_limited    (Retry-After, X-RateLimit-*)
    ├── CircuitOpen             503 circuit_open    (Retry-After)
    ├── Overloaded              503 overloaded      (Retry-After: 1)
    ├── UpstreamUnavailable     502 upstream_unavailable
    └── UpstreamTimeout         504 upstream_timeout

Third-party exceptions (sockets, redis, jwt) are translated into these at the boundary
that meets them; nothing else decides a status code.
"""

from __future__ import annotations

import math
from typing import Any

import orjson


class ProxyError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or []
        self.fields = fields

    def body(self) -> bytes:
        """The JSON body `{"error": CODE, "message": TEXT, ...extra fields}`."""
        return orjson.dumps({"error": self.code, "message": self.message, **self.fields})


class InvalidToken(ProxyError):
    status = 401
    code = "invalid_token"

    def __init__(self, message: str = "the bearer token is invalid", **kw: Any) -> None:
        kw.setdefault("headers", [("WWW-Authenticate", 'Bearer error="invalid_token"')])
        super().__init__(message, **kw)


class KeysRefreshing(InvalidToken):
    """A token naming an unknown `kid` while an early JWKS refresh runs: `waiter` (an
    awaitable) is done when it has, and the token is worth judging again. Whoever cannot
    wait answers it as the plain `invalid_token` it also is."""

    def __init__(self, message: str, waiter: Any) -> None:
        super().__init__(message)
        self.waiter = waiter


class AuthRequired(ProxyError):
    status = 401
    code = "invalid_token"

    def __init__(self, message: str = "a bearer token is required", **kw: Any) -> None:
        kw.setdefault("headers", [("WWW-Authenticate", "Bearer")])
        super().__init__(message, **kw)


class Forbidden(ProxyError):
    status = 403
    code = "forbidden"


class NotFound(ProxyError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ProxyError):
    status = 405
    code = "method_not_allowed"


class UpgradeRequired(ProxyError):
    status = 426
    code = "upgrade_required"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers=[("Upgrade", "websocket")])


class BadRequest(ProxyError):
    status = 400
    code = "bad_request"


class RequestTimeout(ProxyError):
    status = 408
    code = "request_timeout"


class ExpectationFailed(ProxyError):
    status = 417
    code = "expectation_failed"


class BodyTooLarge(ProxyError):
    status = 413
    code = "body_too_large"


class HeadersTooLarge(ProxyError):
    status = 431
    code = "headers_too_large"


class RateLimited(ProxyError):
    status = 429
    code = "rate_limited"


def retry_after_value(seconds: float) -> str:
    """Retry-After is whole seconds; round up so a client never comes back too early."""
    return str(max(1, math.ceil(seconds)))


class CircuitOpen(ProxyError):
    status = 503
    code = "circuit_open"

    def __init__(self, breaker: str, retry_after_s: float) -> None:
        super().__init__(
            f"circuit breaker '{breaker}' is open",
            headers=[("Retry-After", retry_after_value(retry_after_s))],
            breaker=breaker,
            retry_after_s=round(retry_after_s, 3),
        )


class Overloaded(ProxyError):
    status = 503
    code = "overloaded"

    def __init__(self, message: str = "too many requests in flight") -> None:
        super().__init__(message, headers=[("Retry-After", "1")])


class UpstreamUnavailable(ProxyError):
    status = 502
    code = "upstream_unavailable"


class UpstreamTimeout(ProxyError):
    status = 504
    code = "upstream_timeout"
