"""The sidecar's own endpoints: health, readiness, metrics and the admin API.

Admin endpoints (`/api/v1/resilience/*`, `/api/v1/ws/connections`) need the admin token
(`admin.token_env`) or a verified token with a role of `admin.roles`: none -> 401
(WWW-Authenticate: Bearer), another role -> 403. With `admin.listen` set, health, readiness,
metrics and the admin API are served there only (`admin_endpoints`); the hub's paths (ingest
and WebSockets) stay on the data plane (`own_endpoints`), unless disabled.
"""

from __future__ import annotations

from urllib.parse import unquote

import orjson

from policies.dump import dump_policy
from policies.model import Policy
from proxy.console.page import ASSETS, SECURITY_HEADERS
from proxy.errors import (
    BadRequest,
    BodyTooLarge,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    UpgradeRequired,
)
from proxy.metrics import CONTENT_TYPE
from proxy.pipeline.identity import require_admin, require_token
from proxy.pipeline.runtime import OwnEndpoint, Runtime
from proxy.server.http11 import ClientConnection
from proxy.server.own_routes import OwnRoutes
from proxy.server.request import RequestBody, RequestHead

HEALTHY = orjson.dumps({"status": "ok"})
BREAKERS = b"/api/v1/resilience/circuit-breakers"
USAGE = b"/api/v1/resilience/rate-limit/user/"
OVERVIEW = b"/api/v1/resilience/overview"
BREAKER_ACTIONS = ("force-open", "force-close", "reset")


def _only(head: RequestHead, *methods: bytes) -> None:
    if head.method not in methods:
        allowed = ", ".join(m.decode() for m in methods)
        raise MethodNotAllowed(f"use {allowed}", headers=[("Allow", allowed)])


def _json(conn: ClientConnection, head: RequestHead, value: object, status: int = 200) -> None:
    conn.send_json(head, status, orjson.dumps(value))


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
    troubles = set(state.degraded)
    if state.hub is not None and state.hub.degraded:
        troubles.add("redis")  # events cannot cross replicas
    if state.workers is not None:
        troubles |= state.workers.degraded  # the other workers' (one sidecar)
    degraded = sorted(troubles)
    if state.ready and not state.draining:
        _json(conn, head, {"status": "ready", "degraded": degraded})
    else:
        status = "draining" if state.draining else "starting"
        _json(conn, head, {"status": status, "degraded": degraded}, 503)


async def metrics(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    _only(head, b"GET", b"HEAD")
    workers = runtime.state.workers
    text = runtime.metrics.render() if workers is None else await workers.metrics_text()
    conn.send_response(head, 200, [(b"Content-Type", CONTENT_TYPE)], text)


async def all_breakers(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    _only(head, b"GET")
    require_admin(head, runtime)
    stats = {name: b.stats() for name, b in runtime.state.breakers.items()}
    workers = runtime.state.workers
    if workers is not None:
        stats.update(await workers.breaker_stats())  # the totals of all workers
    _json(conn, head, {"circuit_breakers": dict(sorted(stats.items()))})


async def one_breaker(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    """`GET .../{name}` for STATS; `POST .../{name}/{action}` to force or reset."""
    require_admin(head, runtime)
    rest = unquote(head.path[len(BREAKERS) + 1 :].decode("latin-1"))
    name, _, action = rest.partition("/")
    breaker = runtime.state.breakers.get(name)
    if breaker is None:
        raise NotFound(f"no circuit breaker named {name!r}", code="unknown_breaker")
    workers = runtime.state.workers
    if not action:
        _only(head, b"GET")
        stats = breaker.stats()
        if workers is not None:
            stats = (await workers.breaker_stats()).get(name, stats)
        _json(conn, head, stats)
        return
    _only(head, b"POST")
    if workers is not None and action in BREAKER_ACTIONS:
        shared = await workers.breaker_action(name, action)  # applied in every worker
        if shared is not None:
            _json(conn, head, shared)
            return
    if action == "force-open":
        breaker.force_open()
    elif action == "force-close":
        breaker.force_close()
    elif action == "reset":
        breaker.reset()
    else:
        raise BadRequest(
            f"unknown action {action!r}; use one of {', '.join(BREAKER_ACTIONS)}",
            code="unknown_action",
        )
    _json(conn, head, breaker.stats())


async def policy_document(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    _only(head, b"GET")
    require_admin(head, runtime)
    loaded = runtime.loaded
    _json(
        conn,
        head,
        {
            "hash": loaded.sha256,
            "loaded_at": runtime.loaded_at,
            "source": loaded.source,
            "policy": dump_policy(loaded.policy),
        },
    )


async def overview(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    """`GET /api/v1/resilience/overview`: what the console shows, in one document."""
    _only(head, b"GET")
    require_admin(head, runtime)
    state = runtime.state
    feed = state.console
    if feed is None:
        raise NotFound("the console feed is not running")
    hub = state.hub
    policy = {
        "hash": runtime.loaded.sha256,
        "loaded_at": runtime.loaded_at,
        "source": runtime.loaded.source,
        "last_reload": state.last_reload,
    }
    document = feed.overview(
        state.breakers,
        [route.name for route in runtime.policy.routes],
        hub.connections()["total"] if hub is not None else 0,
        policy,
    )
    _json(conn, head, document)


async def console_file(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    """`GET /console` and its two assets (see `proxy.console.page`)."""
    _only(head, b"GET", b"HEAD")
    content_type, content = ASSETS[head.path]
    headers = [(b"Content-Type", content_type), *SECURITY_HEADERS]
    conn.send_response(head, 200, headers, content)


async def user_usage(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    """Requests admitted in the current window for one user: admins, or that user."""
    _only(head, b"GET")
    identity = require_token(head, runtime)
    user_id = unquote(head.path[len(USAGE) :].decode("latin-1"))
    if identity.user_id != user_id and identity.role not in runtime.policy.admin.roles:
        raise Forbidden("a user may only read their own usage")
    usage = await runtime.limiter.usage(user_id)
    _json(conn, head, {"user_id": user_id, **usage})


MAX_EVENT_BYTES = 65_536


async def ingest_event(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    """`POST alerts.ingest_path`: the hub authorizes, validates and publishes."""
    _only(head, b"POST")
    hub = runtime.state.hub
    assert hub is not None
    if head.content_length is not None and head.content_length > MAX_EVENT_BYTES:
        conn.close_after_response()
        raise BodyTooLarge(f"an event is at most {MAX_EVENT_BYTES} bytes")
    raw = b""
    if body is not None:
        body.limit = min(body.limit, MAX_EVENT_BYTES)
        raw = await body.read_all()
    status, answer = await hub.ingest(raw, head.authorization)
    _json(conn, head, answer, status)


async def ws_connections(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    _only(head, b"GET")
    require_admin(head, runtime)
    hub = runtime.state.hub
    assert hub is not None
    workers = runtime.state.workers
    counts = None if workers is None else await workers.connections()  # all workers'
    _json(conn, head, counts if counts is not None else hub.connections())


async def websocket_only(
    conn: ClientConnection, head: RequestHead, body: RequestBody | None, runtime: Runtime
) -> None:
    """A plain request to a WebSocket path (a real upgrade never reaches the pipeline)."""
    raise UpgradeRequired("this path speaks WebSocket: send an Upgrade request")


def websocket_paths(policy: Policy) -> dict[bytes, str]:
    """Path -> channel of the hub's WebSocket paths; none while `websocket.enabled` is false."""
    ws = policy.websocket
    if not ws.enabled:
        return {}
    return {ws.paths.notifications.encode(): "notifications", ws.paths.alerts.encode(): "alerts"}


OwnTable = tuple[dict[bytes, OwnEndpoint], list[tuple[bytes, OwnEndpoint]]]
"""Exact paths and prefixes of own endpoints."""


def admin_routes(policy: Policy) -> OwnTable:
    """Health, readiness, metrics and the admin API: on `admin.listen` when it is set."""
    exact: dict[bytes, OwnEndpoint] = {
        b"/healthz": healthz,
        b"/readyz": readyz,
        policy.admin.metrics_path.encode(): metrics,
        BREAKERS: all_breakers,
        b"/api/v1/resilience/policy": policy_document,
        OVERVIEW: overview,
        **dict.fromkeys(ASSETS, console_file),
        b"/api/v1/ws/connections": ws_connections,
    }
    return exact, [(BREAKERS + b"/", one_breaker), (USAGE, user_usage)]


def hub_routes(policy: Policy) -> dict[bytes, OwnEndpoint]:
    """Event ingest and the WebSocket paths: always on the data plane, unless disabled."""
    exact: dict[bytes, OwnEndpoint] = dict.fromkeys(websocket_paths(policy), websocket_only)
    if policy.alerts.enabled:
        exact[policy.alerts.ingest_path.encode()] = ingest_event
    return exact


def own_endpoints(policy: Policy) -> OwnRoutes[OwnEndpoint]:
    """The data plane's own paths: the hub's, plus the admin ones when they share its port."""
    exact = hub_routes(policy)
    if policy.admin.listen is not None:
        return OwnRoutes(exact, [])
    admin_exact, prefixes = admin_routes(policy)
    return OwnRoutes({**exact, **admin_exact}, prefixes)


def admin_endpoints(policy: Policy) -> OwnRoutes[OwnEndpoint] | None:
    """The own paths of the admin listener; None when there is none."""
    if policy.admin.listen is None:
        return None
    exact, prefixes = admin_routes(policy)
    return OwnRoutes(exact, prefixes)
