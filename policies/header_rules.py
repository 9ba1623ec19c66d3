"""Checks of a route's `request_headers`, `response_headers` and `cors`.

The sidecar owns some request headers (identity, request id, forwarding, trace context) and
the framing of every message; a rule naming one of them would either be ignored or break the
promise those headers make, so it is refused when the policy is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from policies.build import Collector, child
from policies.model import CorsPolicy, HeaderRulesPolicy, RoutePolicy
from policies.yaml_positions import shown

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
SIDECAR_REQUEST_HEADERS = frozenset(
    {"x-user-id", "x-user-role", "x-request-id", "traceparent", "tracestate", "content-length"}
)
"""Request headers the sidecar sets itself (besides X-Forwarded-* and hop-by-hop)."""
FRAMING = frozenset({"content-length", "transfer-encoding"})

Owner = Callable[[str], "str | None"]
"""Why a header name is not the operator's to change, or None."""

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s?#]+")


def check_route_headers(base: str, route: RoutePolicy, c: Collector) -> None:
    """Every problem of routes[i]'s header rules and CORS rule, added to `c`."""
    if route.request_headers is not None:
        _check_rules(f"{base}.request_headers", route.request_headers, _request_owner, c)
    if route.response_headers is not None:
        _check_rules(f"{base}.response_headers", route.response_headers, _response_owner, c)
    if route.cors is not None:
        _check_cors(f"{base}.cors", route.cors, c)


def _request_owner(name: str) -> str | None:
    lowered = name.lower()
    if lowered in HOP_BY_HOP:
        return "a hop-by-hop header"
    if lowered.startswith("x-forwarded-") or lowered in SIDECAR_REQUEST_HEADERS:
        return "set by the sidecar"
    return None


def _response_owner(name: str) -> str | None:
    lowered = name.lower()
    if lowered in HOP_BY_HOP or lowered in FRAMING:
        return "a hop-by-hop or framing header"
    if lowered == "x-request-id":
        return "set by the sidecar"
    return None


def _check_rules(path: str, rules: HeaderRulesPolicy, owner: Owner, c: Collector) -> None:
    for name, value in rules.set.items():
        where = child(f"{path}.set", name)
        _check_name(name, where, owner, c)
        if c.ok(where) and not _VALUE.fullmatch(value):
            c.add(c.at(where), where, "a header value must be printable ASCII (no line break)")
    for i, name in enumerate(rules.remove):
        _check_name(name, f"{path}.remove[{i}]", owner, c)


def _check_name(name: str, where: str, owner: Owner, c: Collector) -> None:
    if not c.ok(where):
        return
    if not _TOKEN.fullmatch(name):
        c.add(c.at(where), where, f"{shown(name)} is not a header name")
        return
    reason = owner(name)
    if reason:
        c.add(c.at(where), where, f"{shown(name)} may not be changed here: {reason}")


def _check_cors(path: str, cors: CorsPolicy, c: Collector) -> None:
    origins = f"{path}.allow_origins"
    if c.ok(origins) and not cors.allow_origins:
        c.add(c.at(origins), origins, 'at least one origin is needed (or ["*"])')
    for i, origin in enumerate(cors.allow_origins):
        where = f"{origins}[{i}]"
        if c.ok(where) and origin != "*" and not _ORIGIN.fullmatch(origin):
            c.add(
                c.at(where),
                where,
                f'{shown(origin)} is not an origin like https://app.example.com (or "*")',
            )
    for key, names in (
        ("allow_headers", cors.allow_headers),
        ("expose_headers", cors.expose_headers),
    ):
        for i, name in enumerate(names):
            where = f"{path}.{key}[{i}]"
            if c.ok(where) and not _TOKEN.fullmatch(name):
                c.add(c.at(where), where, f"{shown(name)} is not a header name")
    credentials = f"{path}.allow_credentials"
    if cors.allow_credentials and "*" in cors.allow_origins and c.ok(credentials, origins):
        c.add(
            c.at(credentials),
            credentials,
            'cannot be true with allow_origins "*" (browsers refuse it): list the origins',
        )
