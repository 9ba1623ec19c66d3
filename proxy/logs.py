"""Logs as one JSON object per line, so operators can ship them without parsing rules.

Extra fields given as `extra={...}` (request_id, route, breaker, ...) are copied into the
line. Nothing here knows about tokens: callers never pass them, and the tests check it.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure() -> None:
    """Diagnostics on stderr; the access log (logger `proxy.access`) alone on stdout, so it
    can be shipped apart. Whether access lines are written is the pipeline's decision
    (`--access-log` or `server.access_log`, which a reload may turn on or off)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    access = logging.StreamHandler(sys.stdout)
    access.setFormatter(JsonFormatter())
    access_logger = logging.getLogger("proxy.access")
    access_logger.handlers[:] = [access]
    access_logger.propagate = False
    access_logger.setLevel(logging.INFO)
