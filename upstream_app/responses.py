"""JSON responses: the one place that decides how bodies are encoded."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

# Spanish product names stay readable on the wire ("Colágeno", not "Col\u00e1geno").
_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Encode `data` as a UTF-8 JSON response."""
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Every error body has the same shape: `{"error": code, "message": text}`."""
    return json_response({"error": code, "message": message}, status=status, headers=headers)
