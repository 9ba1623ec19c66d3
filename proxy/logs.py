"""Logs as one JSON object per line, so operators can ship them without parsing rules.

Extra fields given as `extra={...}` (request_id, route, breaker, ...) are copied into the
line. Nothing here knows about tokens: callers never pass them, and the tests check it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable

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
    """Diagnostics on stderr. The access log goes to stdout by `AccessLog`, not through
    `logging`, so that the two streams can be shipped apart."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


class AccessLog:
    """Access lines in the diagnostics' JSON shape (`logger` is `proxy.access`), on stdout.

    Written without `logging`: a `LogRecord` and the formatter's walk over it cost about
    three times the request's own forwarding. The lines of one event-loop turn leave in one
    write at the end of the turn (or every 256 lines); outside a running loop each line is
    written at once.
    """

    def __init__(self, sink: Callable[[bytes], object] | None = None) -> None:
        self.sink = sink
        """Where lines go; None: the process's stdout."""
        self._lines: list[bytes] = []
        self._second = -1
        self._stamp = ""

    def _ts(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def write(self, fields: dict[str, object]) -> None:
        line = orjson.dumps(
            {
                "ts": self._ts(),
                "level": "info",
                "logger": "proxy.access",
                "msg": "request",
                **fields,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        lines = self._lines
        lines.append(line)
        if len(lines) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()
        elif len(lines) >= 256:
            self.flush()

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        if not lines:
            return
        data = b"".join(lines)
        if self.sink is not None:
            self.sink(data)
            return
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except (OSError, ValueError):
            pass  # stdout closed or full: an access line is never worth a failed request
