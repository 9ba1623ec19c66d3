"""The admin listener (`admin.listen`): the sidecar's own endpoints on a port of their own.

As Envoy's :9901 or Traefik's `traefik` entrypoint: health, readiness, metrics and the
admin API never share a path with the service behind the sidecar, and the port need not be
exposed to clients. Nothing here is forwarded: a path that is not an own endpoint answers
404 `not_found` (JSON). It is a pipeline of one stage (`stages.ADMIN_STAGES`), so its
requests end, are counted (under `route="sidecar"`) and access-logged as on the data plane.
"""

from __future__ import annotations

from proxy.pipeline.chain import Pipeline
from proxy.pipeline.stages import ADMIN_STAGES
from proxy.server.http11 import ClientConnection
from proxy.server.request import RequestBody, RequestHead


class AdminListener:
    """The request handler of the admin listener's connections; takes the current runtime
    from the data plane's pipeline (a reload swaps it there)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._data_plane = pipeline
        self._pipeline = Pipeline(pipeline.runtime, ADMIN_STAGES)

    async def handle(
        self, conn: ClientConnection, head: RequestHead, body: RequestBody | None
    ) -> None:
        admin = self._pipeline
        admin.runtime = self._data_plane.runtime
        await admin.handle(conn, head, body)
