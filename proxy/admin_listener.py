"""The admin listener (`admin.listen`): the sidecar's own endpoints on a port of their own.

As Envoy's :9901 or Traefik's `traefik` entrypoint: health, readiness, metrics and the
admin API never share a path with the service behind the sidecar, and the port need not be
exposed to clients. Nothing here is forwarded: a path that is not an own endpoint answers
404 `not_found` (JSON). Requests are counted under `route="sidecar"`, as on the data plane.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from proxy.errors import NotFound, ProxyError
from proxy.pipeline.chain import SIDECAR_ROUTE
from proxy.pipeline.runtime import Runtime
from proxy.server.http11 import ClientConnection
from proxy.server.request import RequestBody, RequestHead
from proxy.server.responses import error_headers

log = logging.getLogger("proxy.access")


class AdminListener:
    """The request handler of the admin listener's connections; reads the current runtime."""

    def __init__(self, runtime: Callable[[], Runtime], access_log: bool = False) -> None:
        self._runtime = runtime
        self._access_log = access_log

    async def handle(
        self, conn: ClientConnection, head: RequestHead, body: RequestBody | None
    ) -> None:
        runtime = self._runtime()
        try:
            endpoints = runtime.admin_endpoints
            own = endpoints.match(head.path) if endpoints is not None else None
            if own is None:
                path = head.path.decode("latin-1")
                raise NotFound(f"the admin listener serves no {path!r}", code="not_found")
            await own(conn, head, body, runtime)
        except ProxyError as error:
            if conn.response_started:
                conn.abort()
            else:
                conn.send_response(head, error.status, error_headers(error), error.body())
        seconds = time.monotonic() - head.received_at
        runtime.metrics.request_done(SIDECAR_ROUTE, head.method, conn.status, seconds)
        if self._access_log:
            log.info(
                "request",
                extra={
                    "request_id": head.request_id.decode("latin-1"),
                    "route": SIDECAR_ROUTE,
                    "method": head.method.decode("latin-1"),
                    "status": conn.status,
                    "duration_ms": round(seconds * 1000, 3),
                    "listener": "admin",
                },
            )
