"""Reading and checking request input: bad bodies and queries are 400s."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

from aiohttp import web

from upstream_app.errors import ApiError, bad_request

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_ID = 2**63 - 1  # SQLite's largest INTEGER: no id or offset can be larger


async def read_object(request: web.Request) -> dict[str, Any]:
    """Parse the body as a JSON object, whatever the Content-Type says."""
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return body


def integer(body: dict[str, Any], key: str, *, minimum: int, maximum: int | None = None) -> int:
    """A required integer within bounds (booleans are not integers here)."""
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{key} must be an integer")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise bad_request(f"{key} must be at least {minimum}{upper}")
    return value


def number(body: dict[str, Any], key: str, *, minimum: float, maximum: float) -> float:
    """A required finite number within bounds."""
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"{key} must be a number")
    if not minimum <= value <= maximum:
        raise bad_request(f"{key} must be between {minimum:g} and {maximum:g}")
    return float(value)


def text(
    body: dict[str, Any], key: str, *, min_len: int = 1, max_len: int = 200, strip: bool = True
) -> str:
    """A required string with a length in [min_len, max_len], stripped unless told not to."""
    value = body.get(key)
    if not isinstance(value, str):
        raise bad_request(f"{key} must be a string")
    if strip:
        value = value.strip()
    if not min_len <= len(value) <= max_len:
        raise bad_request(f"{key} must have between {min_len} and {max_len} characters")
    return value


def iso_date(body: dict[str, Any], key: str) -> date:
    """A required calendar date written `YYYY-MM-DD`."""
    value = body.get(key)
    if not isinstance(value, str):
        raise bad_request(f"{key} must be a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise bad_request(f"{key} must be a date written YYYY-MM-DD") from None


@dataclass(frozen=True, slots=True)
class Page:
    """A window of a list: `limit` rows starting at `offset`."""

    limit: int
    offset: int


def page(request: web.Request) -> Page:
    """Read `limit` (default 50, capped at 500) and `offset` (default 0) from the query."""
    limit = _query_int(request, "limit", DEFAULT_LIMIT)
    offset = _query_int(request, "offset", 0)
    return Page(limit=min(limit, MAX_LIMIT), offset=offset)


def query_id(request: web.Request, key: str) -> int | None:
    """An optional positive id from the query string."""
    value = _query_int(request, key, None)
    if value == 0:
        raise bad_request(f"{key} must be a positive integer")
    return value


def _query_int(request: web.Request, key: str, default: T) -> int | T:
    raw = request.query.get(key)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_ID:
        raise bad_request(f"{key} must be a non-negative integer")
    return int(raw)


def path_id(request: web.Request, name: str) -> int:
    """A numeric id from the URL (the route pattern guarantees digits); 404 when too big."""
    value = int(request.match_info[name])
    if value > MAX_ID:
        raise ApiError(404, "not_found", f"{name} {value} does not exist")
    return value
