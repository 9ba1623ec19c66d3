"""The admin listener (`admin.listen`): the sidecar's own endpoints on a port of their own.

As Envoy's :9901 or Traefik's `traefik` entrypoint: health, readiness, metrics and the
admin API never share a path with the service behind the sidecar, and the port need not be
exposed to clients. Nothing here is forwarded: a path that is not an own endpoint answers
404 `not_found` (JSON). It is a pipeline of one stage, so its requests end, are counted
(under `route="sidecar"`) and access-logged as on the data plane.
"""

from __future__ import annotations

from proxy.errors import NotFound
from proxy.pipeline.chain import Pipeline
from proxy.pipeline.context import SIDECAR_ROUTE, WAIT, RequestContext, Stage
from proxy.pipeline.stages import answer_own_endpoint
from proxy.server.http11 import ClientConnection
from proxy.server.request import RequestBody, RequestHead


class AdminEndpoint(Stage):
    """The admin listener's only stage: one of `runtime.admin_endpoints`, or 404."""

    def enter(self, ctx: RequestContext) -> int:
        ctx.route_name = SIDECAR_ROUTE
        endpoints = ctx.runtime.admin_endpoints
        endpoint = endpoints.match(ctx.head.path) if endpoints is not None else None
        if endpoint is None:
            path = ctx.head.path.decode("latin-1")
            raise NotFound(f"the admin listener serves no {path!r}", code="not_found")
        answer_own_endpoint(ctx, endpoint)
        return WAIT


class AdminListener:
    """The request handler of the admin listener's connections; reads the current runtime
    from the data plane's pipeline (a reload swaps it there)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._data_plane = pipeline
        self._pipeline = Pipeline(pipeline.runtime, (AdminEndpoint(),))

    async def handle(
        self, conn: ClientConnection, head: RequestHead, body: RequestBody | None
    ) -> None:
        admin = self._pipeline
        admin.runtime = self._data_plane.runtime
        await admin.handle(conn, head, body)
