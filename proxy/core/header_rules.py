"""A route's `request_headers` / `response_headers`, compiled once per policy load.

`set` replaces: a header set by the rule is first removed whatever its case, then added
once with the rule's value. Names are compared lower-cased (the server lower-cases request
header names; response lines keep the upstream's case and are compared folded).
"""

from __future__ import annotations

from policies.model import HeaderRulesPolicy, RoutePolicy
from proxy.core.cors import CorsRule
from proxy.core.headers import Headers


class HeaderRules:
    """Names to drop and lines to add, for one direction of one route."""

    __slots__ = ("added", "drop", "lines")

    def __init__(self, policy: HeaderRulesPolicy) -> None:
        self.drop = frozenset(
            [name.lower().encode() for name in policy.remove]
            + [name.lower().encode() for name in policy.set]
        )
        """Lower-cased names removed before the rule's own are added."""
        self.added: Headers = [
            (name.lower().encode(), value.encode("latin-1")) for name, value in policy.set.items()
        ]
        """The headers `set` adds, as (lower-cased name, value)."""
        self.lines = b"".join(
            [
                b"%s: %s\r\n" % (name.encode(), value.encode("latin-1"))
                for name, value in policy.set.items()
            ]
        )
        """The same, rendered as header lines (the operator's case kept)."""

    def apply(self, headers: Headers) -> Headers:
        """Request headers (names lower-cased) with this rule applied."""
        drop = self.drop
        kept = [(name, value) for name, value in headers if name not in drop]
        kept.extend(self.added)
        return kept

    def filter_headers(self, headers: Headers) -> Headers:
        """Response headers (any case) minus the dropped names."""
        drop = self.drop
        return [(name, value) for name, value in headers if name.lower() not in drop]

    def filter_lines(self, lines: list[bytes]) -> list[bytes]:
        """Rendered response header lines (runs of `Name: value\\r\\n`) minus the dropped
        names; the rule's own lines are added by the caller, with the other extra lines."""
        drop = self.drop
        single = b"".join(lines).split(b"\r\n")[:-1]
        return [
            line + b"\r\n" for line in single if line.split(b":", 1)[0].strip().lower() not in drop
        ]


class RouteEdges:
    """A route's header rules and CORS rule; a route with none has no `RouteEdges` at all,
    so the plain request path tests one attribute and goes on."""

    __slots__ = ("cors", "request", "response")

    def __init__(self, route: RoutePolicy) -> None:
        self.request = HeaderRules(route.request_headers) if route.request_headers else None
        self.response = HeaderRules(route.response_headers) if route.response_headers else None
        self.cors = CorsRule(route.cors) if route.cors is not None else None

    def answer_lines(self, origin: bytes | None) -> bytes:
        """The header lines every answer on the route carries: the response rule's `set`,
        and for an allowed origin the CORS lines."""
        response, cors = self.response, self.cors
        lines = response.lines if response is not None else b""
        return lines + cors.simple(origin) if cors is not None else lines

    @staticmethod
    def of(route: RoutePolicy) -> RouteEdges | None:
        if route.request_headers is None and route.response_headers is None and route.cors is None:
            return None
        return RouteEdges(route)
