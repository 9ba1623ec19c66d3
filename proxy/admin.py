"""The sidecar's own endpoints: health, readiness, metrics (admin API added alongside)."""

from __future__ import annotations

import orjson

from proxy.errors import ProxyError
from proxy.metrics import CONTENT_TYPE
from proxy.pipeline.runtime import OwnEndpoint, Runtime
from proxy.server.http11 import ClientConnection
from proxy.server.request import RequestBody, RequestHead

HEALTHY = orjson.dumps({"status": "ok"})


class MethodNotAllowed(ProxyError):
    status = 405
    code = "method_not_allowed"


def _only(head: RequestHead, *methods: bytes) -> None:
    if head.method not in methods:
        allowed = ", ".join(m.decode() for m in methods)
        raise MethodNotAllowed(f"use {allowed}", headers=[("Allow", allowed)])


async def healthz(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    _only(head, b"GET", b"HEAD")
    conn.send_json(head, 200, HEALTHY)


async def readyz(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    """200 once serving; Redis trouble shows as `degraded`, never as unreadiness."""
    _only(head, b"GET", b"HEAD")
    state = runtime.state
    degraded = sorted(state.degraded)
    if state.ready and not state.draining:
        conn.send_json(head, 200, orjson.dumps({"status": "ready", "degraded": degraded}))
    else:
        status = "draining" if state.draining else "starting"
        conn.send_json(head, 503, orjson.dumps({"status": status, "degraded": degraded}))


async def metrics(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    _only(head, b"GET", b"HEAD")
    conn.send_response(head, 200, [(b"Content-Type", CONTENT_TYPE)], runtime.metrics.render())


def own_endpoints(metrics_path: str) -> dict[bytes, OwnEndpoint]:
    return {
        b"/healthz": healthz,
        b"/readyz": readyz,
        metrics_path.encode(): metrics,
    }
