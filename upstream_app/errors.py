"""Domain errors and the middleware that turns every failure into a JSON error body.

Store and handler code raise `ApiError`; nothing else builds an error response, so the
error shape is decided in one place (`responses.error_response`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from upstream_app.responses import error_response

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A failure the client should see, with its HTTP status and stable error code."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message: str) -> ApiError:
    """The common 400 for a body or query that fails validation."""
    return ApiError(400, "invalid_request", message)


def not_found(what: str, ident: object) -> ApiError:
    """The common 404 for a missing row."""
    return ApiError(404, f"{what}_not_found", f"{what} {ident} does not exist")


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: JSON errors everywhere, including aiohttp's own 404/405."""
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err.status, err.code, err.message, err.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason, _allowed_methods(exc))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")


def _allowed_methods(exc: web.HTTPException) -> dict[str, str]:
    """Keep the `Allow` header a 405 must carry."""
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
