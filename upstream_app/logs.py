"""Logs as one JSON object per line, the sidecar's format (CONTRACT 11), with request ids.

Every line has `ts`, `level`, `logger` and `msg`; fields given as `extra={...}` are copied
in. A line written while a request is handled carries that request's `request_id` (from
`X-Request-Id`, which the sidecar sets), so the app's lines join the sidecar's. Access
lines (logger `upstream_app.access`) add `method`, `path`, `status` and `duration_ms`;
the path has no query string, and headers (tokens) are never logged.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

REQUEST_ID_HEADER = "X-Request-Id"
MAX_REQUEST_ID = 200  # a longer header value is cut: a log line is not a dump

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = _request_id.get()
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


def configure() -> None:
    """Send every logger's records to stderr as JSON lines, at INFO and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def request_id_of(request: web.BaseRequest) -> str | None:
    """The request's `X-Request-Id`, if it sent one."""
    value = request.headers.get(REQUEST_ID_HEADER)
    return value[:MAX_REQUEST_ID] if value else None


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: lines logged while `request` is handled carry its request id."""
    token = _request_id.set(request_id_of(request))
    try:
        return await handler(request)
    finally:
        _request_id.reset(token)


class JsonAccessLogger(AbstractAccessLogger):
    """One line per answered request (aiohttp's `access_log_class`)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        fields: dict[str, object] = {
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(time * 1000, 3),
        }
        request_id = request_id_of(request)
        if request_id is not None:
            fields["request_id"] = request_id
        self.logger.info("request", extra=fields)
