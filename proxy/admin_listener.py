"""The admin listener (`admin.listen`): the sidecar's own endpoints on a port of their own.

As Envoy's :9901 or Traefik's `traefik` entrypoint: health, readiness, metrics and the
admin API never share a path with the service behind the sidecar, and the port need not be
exposed to clients. Nothing here is forwarded: a path that is not an own endpoint answers
404 `not_found` (JSON). Requests are counted (and access-logged) under `route="sidecar"`
by the pipeline's own bookkeeping, as on the data plane.
"""

from __future__ import annotations

from proxy.errors import NotFound, ProxyError
from proxy.pipeline.chain import SIDECAR_ROUTE, Pipeline
from proxy.server.http11 import ClientConnection
from proxy.server.request import RequestBody, RequestHead


class AdminListener:
    """The request handler of the admin listener's connections; reads the current runtime."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def handle(
        self, conn: ClientConnection, head: RequestHead, body: RequestBody | None
    ) -> None:
        pipeline = self._pipeline
        runtime = pipeline.runtime
        try:
            endpoints = runtime.admin_endpoints
            own = endpoints.match(head.path) if endpoints is not None else None
            if own is None:
                path = head.path.decode("latin-1")
                raise NotFound(f"the admin listener serves no {path!r}", code="not_found")
            await own(conn, head, body, runtime)
        except ProxyError as error:
            pipeline._answer_error(conn, head, error, b"", None)
        pipeline._done(conn, head, SIDECAR_ROUTE, runtime, None, body)
