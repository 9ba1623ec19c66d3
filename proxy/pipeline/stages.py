"""The stages of a request, in the one order they run (`STAGES`, at the end).

    own endpoint   -> answered by the sidecar (route "sidecar")
    route          -> 404 no_route
    observe        -> client address, trace context (the access log's and spans' note)
    load shedding  -> 503 overloaded (server.max_in_flight)
    identity       -> 401 invalid_token | the caller's Identity
    rate limits    -> 429 rate_limited | the X-RateLimit-* lines every answer carries
    forward        -> the exchange: breaker, send, classify, retry, relay (resilience.py)

A stage is a `Stage` subclass: `enter(ctx)` answers CONTINUE, ANSWERED or WAIT (it will
call `ctx.resume` with what it waited for), or raises ProxyError to refuse the request.
Adding one is one class here, one entry in `STAGES`, and its test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Final

from proxy.core.tracecontext import new_span_id
from proxy.core.window import Decision
from proxy.errors import NotFound, Overloaded, ProxyError
from proxy.pipeline.context import (
    CONTINUE,
    SIDECAR_ROUTE,
    WAIT,
    RequestContext,
    Stage,
)
from proxy.pipeline.forward import upstream_head
from proxy.pipeline.identity import identify, identity_headers
from proxy.pipeline.observe import RequestNote
from proxy.pipeline.resilience import Exchange

failures = logging.getLogger("proxy.server")


class OwnEndpoint(Stage):
    """The sidecar's own paths (health, metrics, admin API) answer before any route."""

    def enter(self, ctx: RequestContext) -> int:
        runtime = ctx.runtime
        endpoint = runtime.own_endpoints.match(ctx.head.path)
        if endpoint is None:
            return CONTINUE
        ctx.route_name = SIDECAR_ROUTE
        ctx.task = asyncio.get_running_loop().create_task(
            _answer_then_finish(ctx, endpoint(ctx.conn, ctx.head, ctx.body, runtime))
        )
        return WAIT


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
        ctx.identity = identity = identify(ctx.head, ctx.runtime)
        note = ctx.note
        if note is not None:
            note.identity = identity
        return CONTINUE


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
        store = limiter.store
        decision = store.decide_now(checks)
        if decision is None:
            store.decide_then(checks, ctx.resume)
            return WAIT
        ctx.limits = limiter.verdict(decision)
        return CONTINUE

    def resume(self, ctx: RequestContext, result: object) -> int:
        if not isinstance(result, Decision):
            raise ProxyError("the rate-limit store failed")
        ctx.limits = ctx.runtime.limiter.verdict(result)
        return CONTINUE


class Forward(Stage):
    """The exchange with the upstream; it calls `ctx.exchange_done` when it is over."""

    def enter(self, ctx: RequestContext) -> int:
        route = ctx.route
        assert route is not None
        runtime = ctx.runtime
        head = ctx.head
        proto = head.forwarded_proto
        if proto is None or not runtime.trusted.is_trusted(head.peer_ip):
            proto = b"http"
        target = route.upstream_target(head.target) if route.strip_prefix else None
        note = ctx.note
        assert note is not None
        trace = note.trace
        span_id = new_span_id() if trace.recorded else trace.span_id
        head_bytes = upstream_head(
            head, target or route.base + head.target, ctx.forwarded_for, proto,
            identity_headers(ctx.identity), trace.header_lines(span_id),
        )  # fmt: skip
        name = route.upstream.name
        exchange = ctx.exchange = Exchange(
            name, runtime.pools[name], runtime.guards[name], runtime.metrics, ctx.conn, head,
            ctx.body, head_bytes, ctx.limits, ctx.ready_at, route.deadline_s, note, span_id,
        )  # fmt: skip
        exchange.start(ctx)
        return WAIT


STAGES: Final = (
    OwnEndpoint(),
    MatchRoute(),
    Observe(),
    ShedLoad(),
    Identify(),
    RateLimit(),
    Forward(),
)
"""The ONE order of a request's stages."""
