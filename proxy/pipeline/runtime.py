"""What one request needs, built once per policy load.

`Runtime` is an immutable-by-convention snapshot: the route table, trusted proxies, and the
per-name stateful objects (pools, ...) it borrows from the long-lived `State`
(`proxy/pipeline/state.py`), which keeps them across reloads so warm connections and
counters survive a policy edit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from policies.load import LoadedPolicy
from policies.model import Policy
from proxy.core.headers import TrustedProxies
from proxy.core.identity import TokenVerifier
from proxy.core.routing import RouteTable
from proxy.metrics import Metrics
from proxy.pipeline.observe import Observer
from proxy.pipeline.ratelimit import RateLimiter
from proxy.pipeline.state import Guard, State
from proxy.server.own_routes import OwnRoutes
from proxy.upstream.pool import UpstreamPool

log = logging.getLogger("proxy.breaker")

if TYPE_CHECKING:
    from proxy.server.http11 import ClientConnection
    from proxy.server.request import RequestBody, RequestHead

OwnEndpoint = Callable[
    ["ClientConnection", "RequestHead", "RequestBody | None", "Runtime"], Awaitable[None]
]


@dataclass(frozen=True, slots=True)
class Runtime:
    loaded: LoadedPolicy
    loaded_at: str
    routes: RouteTable
    trusted: TrustedProxies
    pools: dict[str, UpstreamPool]
    guards: dict[str, Guard]
    verifier: TokenVerifier
    limiter: RateLimiter
    own_endpoints: OwnRoutes[OwnEndpoint]
    state: State
    metrics: Metrics
    max_in_flight: int
    """`server.max_in_flight`, read on every request."""
    observer: Observer
    """The access log and the trace context (sampling, span export) for this policy."""
    admin_endpoints: OwnRoutes[OwnEndpoint] | None = None
    """The own endpoints served on `admin.listen` (None: they share the data plane's table)."""
    admin_token: bytes | None = field(default=None, repr=False)
    """The value of `admin.token_env`: `Bearer` it and be admin (never logged)."""

    @property
    def policy(self) -> Policy:
        return self.loaded.policy
