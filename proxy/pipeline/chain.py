"""The ONE place that orders the stages of a request.

    own endpoint?  -> answered by the sidecar (route "sidecar")
    route match    -> 404 no_route
    load shedding  -> 503 overloaded (server.max_in_flight)
    identity       -> 401 invalid_token | Identity
    rate limits    -> 429 rate_limited | headers to add
    attempts       -> breaker, send, classify, retry (resilience stage)
    relay          -> stream the chosen answer back

Each request runs on the `Runtime` it started with: a reload swaps `Pipeline.runtime`, and
requests in flight finish on the policy they began under.
"""

from __future__ import annotations

import logging
import time

from proxy.errors import NotFound, Overloaded, ProxyError
from proxy.pipeline.identity import identify, identity_headers
from proxy.pipeline.resilience import forward_with_resilience
from proxy.pipeline.runtime import Runtime
from proxy.server.http11 import ClientConnection
from proxy.server.request import Headers, RequestBody, RequestHead
from proxy.server.responses import error_headers

log = logging.getLogger("proxy.access")

SIDECAR_ROUTE = "sidecar"
UNMATCHED_ROUTE = "none"


class Pipeline:
    def __init__(self, runtime: Runtime, access_log: bool = False) -> None:
        self.runtime = runtime
        self.in_flight = 0
        self.access_log = access_log

    async def handle(
        self, conn: ClientConnection, head: RequestHead, body: RequestBody | None
    ) -> None:
        runtime = self.runtime
        route_name = UNMATCHED_ROUTE
        limits: Headers = []
        try:
            own = runtime.own_endpoints.match(head.path)
            if own is not None:
                route_name = SIDECAR_ROUTE
                await own(conn, head, body, runtime)
            else:
                route = runtime.routes.match(head.path)
                if route is None:
                    raise NotFound(f"no route for {head.path.decode('latin-1')!r}", code="no_route")
                route_name = route.name
                if self.in_flight >= runtime.policy.server.max_in_flight:
                    raise Overloaded("the sidecar has too many requests in flight")
                forwarded_for, client_ip = runtime.trusted.forwarded_for(
                    head.peer_ip, head.header(b"x-forwarded-for")
                )
                self.in_flight += 1
                try:
                    identity = identify(head, runtime)
                    limits = await runtime.limiter.check(
                        identity, client_ip, head.path, head.method
                    )
                    await forward_with_resilience(
                        conn,
                        head,
                        body,
                        route,
                        runtime,
                        limits,
                        identity_headers(identity),
                        forwarded_for,
                    )
                    runtime.limiter.record_forwarded(identity, head.path)
                finally:
                    self.in_flight -= 1
        except ProxyError as error:
            if conn.response_started:
                conn.abort()
            else:
                # A request that passed its limits carries their headers, whatever came after.
                conn.send_response(head, error.status, error_headers(error) + limits, error.body())
        seconds = time.monotonic() - head.received_at
        method = head.method.decode("latin-1")
        runtime.metrics.request_done(route_name, method, conn.status, seconds)
        if self.access_log:
            log.info(
                "request",
                extra={
                    "request_id": head.request_id.decode("latin-1"),
                    "route": route_name,
                    "method": method,
                    "status": conn.status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )
