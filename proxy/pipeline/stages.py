"""The stages of a request, in the one order they run (`STAGES`, at the end).

    own endpoint   -> answered by the sidecar (route "sidecar")
    route          -> 404 no_route
    observe        -> client address, trace context (the access log's and spans' note)
    route's edges  -> a CORS preflight answered (204) or refused (403 cors_forbidden);
                      the lines every answer carries (response_headers, CORS)
    load shedding  -> 503 overloaded (server.max_in_flight)
    identity       -> 401 invalid_token | the caller's Identity (waits for an early key
                      refresh when the token names an unknown `kid`)
    rate limits    -> 429 rate_limited | the X-RateLimit-* lines every answer carries
    forward        -> the exchange: breaker, send, classify, retry, relay (resilience.py);
                      a 101 to an upgrade becomes a tunnel (tunnel.py)

A stage is a `Stage` subclass: `enter(ctx)` answers CONTINUE, ANSWERED or WAIT (it will
call `ctx.resume` with what it waited for), or raises ProxyError to refuse the request.
Adding one is one class here, one entry in `STAGES`, and its test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Final

from proxy.core.identity import Identity
from proxy.core.tracecontext import new_span_id
from proxy.core.window import Decision
from proxy.errors import KeysRefreshing, NotFound, Overloaded, ProxyError
from proxy.pipeline.context import (
    ANSWERED,
    CONTINUE,
    SIDECAR_ROUTE,
    WAIT,
    RequestContext,
    Stage,
)
from proxy.pipeline.edges import answer_lines, answered_preflight
from proxy.pipeline.forward import upstream_head
from proxy.pipeline.identity import identify, identify_after_refresh, identity_headers
from proxy.pipeline.observe import RequestNote
from proxy.pipeline.resilience import Exchange
from proxy.pipeline.runtime import OwnEndpoint as Endpoint

failures = logging.getLogger("proxy.server")

UPGRADE_CONNECTION = (b"connection", b"upgrade")


class OwnEndpoint(Stage):
    """The sidecar's own paths (health, metrics, admin API) answer before any route."""

    def enter(self, ctx: RequestContext) -> int:
        endpoint = ctx.runtime.own_endpoints.match(ctx.head.path)
        if endpoint is None:
            return CONTINUE
        ctx.route_name = SIDECAR_ROUTE
        answer_own_endpoint(ctx, endpoint)
        return WAIT


def answer_own_endpoint(ctx: RequestContext, endpoint: Endpoint) -> None:
    """Run one of the sidecar's own endpoints in a task; the request ends when it has."""
    answer = endpoint(ctx.conn, ctx.head, ctx.body, ctx.runtime)
    ctx.task = asyncio.get_running_loop().create_task(_answer_then_finish(ctx, answer))


async def _answer_then_finish(ctx: RequestContext, answer: Awaitable[None]) -> None:
    try:
        await answer
    except ProxyError as error:
        ctx.finish(error)
    except asyncio.CancelledError:
        raise
    except Exception:
        failures.exception(
            "own endpoint failed", extra={"request_id": ctx.head.request_id.decode()}
        )
        ctx.finish(ProxyError("internal error"))
    else:
        ctx.finish(None)


class MatchRoute(Stage):
    def enter(self, ctx: RequestContext) -> int:
        head = ctx.head
        route = ctx.runtime.routes.match(head.path)
        if route is None:
            raise NotFound(f"no route for {head.path.decode('latin-1')!r}", code="no_route")
        ctx.route = route
        ctx.route_name = route.name
        return CONTINUE


class Observe(Stage):
    """Where the request comes from (X-Forwarded-For from trusted proxies) and its trace
    context (continued or started): the note the access log and the spans are made of."""

    def enter(self, ctx: RequestContext) -> int:
        head = ctx.head
        runtime = ctx.runtime
        forwarded_for, client_ip = runtime.trusted.forwarded_for(head.peer_ip, head.forwarded_for)
        ctx.forwarded_for = forwarded_for
        ctx.client_ip = client_ip
        ctx.note = RequestNote(runtime.observer.trace(head.traceparent, head.tracestate), client_ip)
        return CONTINUE


class Edges(Stage):
    """A route's header rules and CORS (`pipeline/edges.py`): a preflight is answered here,
    before identity and limits; every other answer carries the route's lines."""

    def enter(self, ctx: RequestContext) -> int:
        route = ctx.route
        assert route is not None
        edges = route.edges
        if edges is None:
            return CONTINUE
        head = ctx.head
        ctx.limits = ctx.route_lines = answer_lines(edges, head)
        note = ctx.note
        assert note is not None
        if answered_preflight(ctx.conn, head, edges, note):
            return ANSWERED
        return CONTINUE


class ShedLoad(Stage):
    """`server.max_in_flight`: past it a request is refused at once rather than queued."""

    def enter(self, ctx: RequestContext) -> int:
        lifecycle = ctx.lifecycle
        if lifecycle.in_flight >= ctx.runtime.max_in_flight:
            raise Overloaded("the sidecar has too many requests in flight")
        lifecycle.in_flight += 1
        ctx.counted = True
        return CONTINUE


class Identify(Stage):
    """Who is asking: the verified token's identity, or anonymous (or 401)."""

    def enter(self, ctx: RequestContext) -> int:
        try:
            identity = identify(ctx.head, ctx.runtime)
        except KeysRefreshing as pending:
            # An unknown `kid`: the early key refresh decides. Its failure is not raised
            # here, and this request leaving does not cancel it.
            pending.waiter.add_done_callback(ctx.resume)
            return WAIT
        self._settled(ctx, identity)
        return CONTINUE

    def resume(self, ctx: RequestContext, result: object) -> int:
        self._settled(ctx, identify_after_refresh(ctx.head, ctx.runtime))
        return CONTINUE

    @staticmethod
    def _settled(ctx: RequestContext, identity: Identity) -> None:
        ctx.identity = identity
        note = ctx.note
        if note is not None:
            note.identity = identity


class RateLimit(Stage):
    """One store decision for every rule that applies; a store that answers later (Redis)
    calls back with it."""

    def enter(self, ctx: RequestContext) -> int:
        limiter = ctx.runtime.limiter
        if not limiter.has_rules:
            return CONTINUE
        head = ctx.head
        checks = limiter.checks(ctx.identity, ctx.client_ip, head.path, head.method)
        if not checks:
            return CONTINUE
        decision = limiter.store.decide(checks, _decided_later, ctx)
        if decision is None:
            return WAIT
        ctx.limits = limiter.verdict(decision) + ctx.route_lines
        return CONTINUE

    def resume(self, ctx: RequestContext, result: object) -> int:
        if not isinstance(result, Decision):
            raise ProxyError("the rate-limit store failed")
        ctx.limits = ctx.runtime.limiter.verdict(result) + ctx.route_lines
        return CONTINUE


def _decided_later(ctx: RequestContext, result: Decision | Exception) -> None:
    """The store's later answer (a plain function: a decision known now allocates nothing)."""
    ctx.resume(result)


class Forward(Stage):
    """The exchange with the upstream; it calls `ctx.exchange_done` when it is over."""

    def enter(self, ctx: RequestContext) -> int:
        route = ctx.route
        assert route is not None
        runtime = ctx.runtime
        head = ctx.head
        conn = ctx.conn
        proto = head.forwarded_proto
        if proto is None or not runtime.trusted.is_trusted(head.peer_ip):
            proto = conn.state.scheme
        target = route.upstream_target(head.target) if route.strip_prefix else None
        edges = route.edges
        if edges is not None and edges.request is not None:
            head.headers = edges.request.apply(head.headers)
        ours = identity_headers(ctx.identity)
        if head.websocket:
            ours = [*ours, (b"upgrade", head.upgrade or b""), UPGRADE_CONNECTION]
        note = ctx.note
        assert note is not None
        trace = note.trace
        span_id = new_span_id() if trace.recorded else trace.span_id
        head_bytes = upstream_head(
            head, target or route.base + head.target, ctx.forwarded_for, proto, ours,
            trace.header_lines(span_id),
        )  # fmt: skip
        name = route.upstream.name
        exchange = ctx.exchange = Exchange(
            name, runtime.pools[name], runtime.guards[name], runtime.metrics, conn, head,
            ctx.body, head_bytes, ctx.limits, ctx.ready_at, route.deadline_s, note, span_id,
        )  # fmt: skip
        if edges is not None:
            exchange.response_rules = edges.response
        exchange.start(ctx)
        return WAIT


class AdminEndpoint(Stage):
    """The admin listener's only stage (`admin.listen`): one of the sidecar's own endpoints,
    or 404 `not_found`; nothing there is forwarded."""

    def enter(self, ctx: RequestContext) -> int:
        ctx.route_name = SIDECAR_ROUTE
        endpoints = ctx.runtime.admin_endpoints
        endpoint = endpoints.match(ctx.head.path) if endpoints is not None else None
        if endpoint is None:
            path = ctx.head.path.decode("latin-1")
            raise NotFound(f"the admin listener serves no {path!r}", code="not_found")
        answer_own_endpoint(ctx, endpoint)
        return WAIT


STAGES: Final = (
    OwnEndpoint(),
    MatchRoute(),
    Observe(),
    Edges(),
    ShedLoad(),
    Identify(),
    RateLimit(),
    Forward(),
)
"""The ONE order of a request's stages."""

ADMIN_STAGES: Final = (AdminEndpoint(),)
"""The admin listener's requests: its own endpoints only."""
