"""The route table, compiled once per policy load: first match wins.

Matching is a linear scan over byte prefixes; route tables are short (tens of entries), and
`bytes.startswith` on a handful of prefixes costs less than any trie would.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.model import Policy, RoutePolicy, UpstreamPolicy
from proxy.core.header_rules import RouteEdges


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    upstream: UpstreamPolicy
    exact: bytes | None
    prefix: bytes | None
    strip_prefix: bool
    deadline_s: float | None
    base: bytes
    edges: RouteEdges | None = None
    """Header rules and CORS; None (most routes): nothing to do."""
    upstream_name: str = ""
    """`upstream.name`, kept here: compiled code reads it as a field, where the policy's
    own attribute is a lookup by name on every request."""

    def upstream_target(self, target: bytes) -> bytes:
        """The request target sent upstream: strip_prefix removes the prefix, keeps a '/'."""
        if self.strip_prefix and self.prefix is not None and target.startswith(self.prefix):
            rest = target[len(self.prefix) :]
            if not rest.startswith(b"/"):
                rest = b"/" + rest
            return self.base + rest
        return self.base + target


def url_base_path(url: str) -> bytes:
    """A path in the upstream URL (`http://h:p/base`) is prepended to every target."""
    after_scheme = url.split("://", 1)[1]
    slash = after_scheme.find("/")
    return after_scheme[slash:].rstrip("/").encode() if slash >= 0 else b""


def compile_route(spec: RoutePolicy, upstreams: dict[str, UpstreamPolicy]) -> Route:
    return Route(
        name=spec.name or spec.path_prefix or spec.path or "/",
        upstream=upstreams[spec.upstream],
        exact=spec.path.encode() if spec.path is not None else None,
        prefix=spec.path_prefix.encode() if spec.path_prefix is not None else None,
        strip_prefix=spec.strip_prefix,
        deadline_s=spec.timeout,
        base=url_base_path(upstreams[spec.upstream].url),
        edges=RouteEdges.of(spec),
        upstream_name=spec.upstream,
    )


class RouteTable:
    __slots__ = ("routes",)

    def __init__(self, policy: Policy) -> None:
        self.routes = tuple(compile_route(r, policy.upstreams) for r in policy.routes)

    def match(self, path: bytes) -> Route | None:
        for route in self.routes:  # Route.matches, inlined: this runs on every request
            exact = route.exact
            if path == exact if exact is not None else path.startswith(route.prefix):  # type: ignore[arg-type]
                return route
        return None
