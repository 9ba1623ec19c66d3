"""The ONE place that orders the stages of a request.

    own endpoint?  -> answered by the sidecar (route "sidecar")
    route match    -> 404 no_route
    route's edges  -> a CORS preflight answered (204) or refused (403 cors_forbidden);
                      the lines every answer carries (response_headers, CORS)
    load shedding  -> 503 overloaded (server.max_in_flight)
    identity       -> 401 invalid_token | Identity
    rate limits    -> 429 rate_limited | headers to add
    attempts       -> breaker, send, classify, retry (resilience stage)
    relay          -> stream the chosen answer back

Each request runs on the `Runtime` it started with: a reload swaps `Pipeline.runtime`, and
requests in flight finish on the policy they began under.
"""

from __future__ import annotations

import asyncio
import logging
import time

from proxy.core.header_rules import HeaderRules
from proxy.core.identity import Identity
from proxy.core.routing import Route
from proxy.core.window import Decision
from proxy.errors import NotFound, Overloaded, ProxyError
from proxy.pipeline.edges import answer_lines, answered_preflight
from proxy.pipeline.forward import Attempt
from proxy.pipeline.identity import identify, identify_settled, identity_headers
from proxy.pipeline.observe import CLIENT_CLOSED, RequestNote
from proxy.pipeline.resilience import Exchange
from proxy.pipeline.runtime import Runtime
from proxy.pipeline.tunnel import open_tunnel
from proxy.server.http11 import ClientConnection
from proxy.server.request import RequestBody, RequestHead
from proxy.server.responses import error_headers

failures = logging.getLogger("proxy.server")

SIDECAR_ROUTE = "sidecar"
UNMATCHED_ROUTE = "none"
UPGRADE_CONNECTION = (b"connection", b"upgrade")


class PendingDecision:
    """A fast-path request waiting for its rate-limit decision; the client leaving cancels
    it (the decision, already recorded by the store, is then dropped)."""

    __slots__ = (
        "conn",
        "forwarded_for",
        "head",
        "identity",
        "note",
        "pipeline",
        "route",
        "settled",
    )

    def __init__(
        self,
        pipeline: Pipeline,
        conn: ClientConnection,
        head: RequestHead,
        route: Route,
        identity: Identity,
        forwarded_for: bytes,
        note: RequestNote,
    ) -> None:
        self.pipeline = pipeline
        self.conn = conn
        self.head = head
        self.route = route
        self.identity = identity
        self.forwarded_for = forwarded_for
        self.note = note
        self.settled = False
        """Decided or cancelled, whichever came first: the other is then ignored."""

    def decided(self, result: Decision | Exception) -> None:
        if not self.settled:
            self.settled = True
            self.pipeline.decided(self, result)

    def cancel(self) -> None:
        if not self.settled:
            self.settled = True
            self.pipeline.in_flight -= 1
            self.pipeline.gone(self.conn, self.head, self.route.name, self.note)


def resume_decided(conn: ClientConnection, result: Decision | Exception) -> None:
    """A store's later answer, for the request waiting on `conn` (unless it has gone)."""
    pending = conn.active
    if isinstance(pending, PendingDecision):
        pending.decided(result)


class Pipeline:
    """Runs each request through the stages; see the module docstring for the order.

    Two entries: `fast()` takes a request without a body as soon as its head is parsed
    and drives it by callbacks (a rate-limit store that answers later calls back with its
    decision; a retry hands over to a task); `handle()` is the connection's serving task's
    way, for everything `fast()` declines.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.in_flight = 0
        self.tunnels_open = 0
        """Upgraded connections being relayed (`pipeline/tunnel.py`)."""

    def fast(self, conn: ClientConnection, head: RequestHead) -> bool:
        """Take a request without a body now; False leaves it to `handle` (nothing done)."""
        runtime = self.runtime
        path = head.path
        if runtime.own_endpoints.match(path) is not None:
            return False
        route = runtime.routes.match(path)
        if route is None or self.in_flight >= runtime.max_in_flight:
            return False
        try:
            identity = identify(head, runtime)
        except ProxyError:
            return False
        forwarded_for, client_ip = runtime.trusted.forwarded_for(head.peer_ip, head.forwarded_for)
        note = RequestNote(runtime.observer.trace(head.traceparent, head.tracestate), client_ip)
        note.identity = identity
        limits = extra = b""
        self.in_flight += 1
        try:
            edges = route.edges
            if edges is not None:
                limits = extra = answer_lines(edges, head)
                if answered_preflight(conn, head, edges, note):
                    self._refuse(conn, head, route, None, b"", note)
                    return True
            limiter = runtime.limiter
            if limiter.has_rules:
                checks = limiter.checks(identity, client_ip, path, head.method)
                if checks:
                    decision = limiter.store.decide(checks, resume_decided, conn)
                    if decision is None:
                        # The store answers later (Redis): `resume_decided` goes on.
                        conn.active = PendingDecision(
                            self, conn, head, route, identity, forwarded_for, note
                        )
                        return True
                    limits = limiter.verdict(decision) + extra
            self._forward(conn, head, route, identity, forwarded_for, limits, note)
        except ProxyError as error:
            self._refuse(conn, head, route, error, limits, note)
        return True

    def decided(self, pending: PendingDecision, result: Decision | Exception) -> None:
        """A fast-path request's decision came (a store that answers later): go on."""
        conn, head, route, note = pending.conn, pending.head, pending.route, pending.note
        edges = route.edges
        limits = extra = answer_lines(edges, head) if edges is not None else b""
        try:
            if isinstance(result, Exception):
                raise ProxyError("the rate-limit store failed") from result
            limits = self.runtime.limiter.verdict(result) + extra
            self._forward(conn, head, route, pending.identity, pending.forwarded_for, limits, note)
        except ProxyError as error:
            self._refuse(conn, head, route, error, limits, note)
        except Exception:  # runs in the store's batch: answer this request, spare the rest
            failures.exception("forwarding failed", extra={"request_id": head.request_id.decode()})
            self._refuse(conn, head, route, ProxyError("internal error"), limits, note)

    def _forward(
        self,
        conn: ClientConnection,
        head: RequestHead,
        route: Route,
        identity: Identity,
        forwarded_for: bytes,
        limits: bytes,
        note: RequestNote,
    ) -> None:
        """Start the exchange by callbacks; raises Overloaded (the upstream is full)."""
        exchange = Exchange(
            conn, head, None, route, self.runtime, limits,
            identity_headers(identity), forwarded_for, head.received_at, note,
        )  # fmt: skip
        exchange.identity = identity
        conn.active = exchange
        exchange.start(self)

    def _refuse(
        self,
        conn: ClientConnection,
        head: RequestHead,
        route: Route,
        error: ProxyError | None,
        limits: bytes,
        note: RequestNote,
    ) -> None:
        """A request of the fast path that ends before any attempt: answer (`error`; None:
        answered already), count, go on."""
        self.in_flight -= 1
        if error is not None:
            edges = route.edges
            rules = edges.response if edges is not None else None
            self._answer_error(conn, head, error, limits, note, rules)
        self._done(conn, head, route.name, self.runtime, note, None)
        conn.request_done()

    def exchange_done(self, exchange: Exchange, error: ProxyError | None) -> None:
        self.in_flight -= 1
        conn, head = exchange.client, exchange.head
        runtime = self.runtime
        if error is None:
            if exchange.identity is not None:
                runtime.limiter.record_forwarded(exchange.identity, head.path)
        else:
            self._answer_error(
                conn, head, error, exchange.extra_lines, exchange.note, exchange.response_rules
            )
        self._done(conn, head, exchange.route_name, runtime, exchange.note, None)
        conn.request_done()

    def exchange_gone(self, exchange: Exchange) -> None:
        self.in_flight -= 1
        self.gone(exchange.client, exchange.head, exchange.route_name, exchange.note)

    def gone(
        self, conn: ClientConnection, head: RequestHead, route_name: str, note: RequestNote | None
    ) -> None:
        """The client left before its answer: logged as 499 `client_closed`, never sent."""
        if note is not None:
            note.reason = "client_closed"
        self.runtime.observer.finished(
            request_id=head.request_id,
            method=head.method,
            path=head.path,
            route=route_name,
            status=CLIENT_CLOSED,
            received_at=head.received_at,
            now=time.monotonic(),
            bytes_in=head.content_length or 0,
            bytes_out=conn.bytes_out,
            note=note,
        )

    async def handle(
        self, conn: ClientConnection, head: RequestHead, body: RequestBody | None
    ) -> None:
        runtime = self.runtime
        route_name = UNMATCHED_ROUTE
        limits = b""
        note: RequestNote | None = None
        rules: HeaderRules | None = None
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
                forwarded_for, client_ip = runtime.trusted.forwarded_for(
                    head.peer_ip, head.forwarded_for
                )
                note = RequestNote(
                    runtime.observer.trace(head.traceparent, head.tracestate), client_ip
                )
                edges = route.edges
                extra = b""
                if edges is not None:
                    rules = edges.response
                    limits = extra = answer_lines(edges, head)
                    if answered_preflight(conn, head, edges, note):
                        self._done(conn, head, route_name, runtime, note, body)
                        return
                if self.in_flight >= runtime.max_in_flight:
                    raise Overloaded("the sidecar has too many requests in flight")
                self.in_flight += 1
                try:
                    identity = note.identity = await identify_settled(head, runtime)
                    limits = await runtime.limiter.check(
                        identity, client_ip, head.path, head.method
                    )
                    if extra:
                        limits += extra
                    ours = identity_headers(identity)
                    if head.websocket:
                        ours = [*ours, (b"upgrade", head.upgrade or b""), UPGRADE_CONNECTION]
                    exchange = Exchange(
                        conn, head, body, route, runtime, limits, ours, forwarded_for,
                        time.monotonic(), note,
                    )  # fmt: skip
                    await exchange.run()
                    runtime.limiter.record_forwarded(identity, head.path)
                finally:
                    self.in_flight -= 1
                if exchange.switched is not None:
                    # The tunnel holds no in-flight slot: it is logged when it closes.
                    await self._tunnel(conn, head, exchange.switched, limits, route.name)
                    note.reason = "tunnel"
        except ProxyError as error:
            self._answer_error(conn, head, error, limits, note, rules)
        except asyncio.CancelledError:
            self.gone(conn, head, route_name, note)
            raise
        self._done(conn, head, route_name, runtime, note, body)

    async def _tunnel(
        self, conn: ClientConnection, head: RequestHead, attempt: Attempt, limits: bytes, route: str
    ) -> None:
        """Relay the upgraded connection until it closes, counted in `tunnels{route}`."""
        runtime = self.runtime
        tunnel = open_tunnel(conn, head, attempt, limits, runtime.policy.server.tunnel_idle_timeout)
        if tunnel is None:
            return
        gauge = runtime.metrics.tunnels.labels(route)
        gauge.inc()
        self.tunnels_open += 1
        try:
            await tunnel.ended
        finally:
            tunnel.close()
            gauge.dec()
            self.tunnels_open -= 1
            conn.bytes_out += tunnel.bytes_out

    @staticmethod
    def _answer_error(
        conn: ClientConnection,
        head: RequestHead,
        error: ProxyError,
        limits: bytes,
        note: RequestNote | None,
        rules: HeaderRules | None = None,
    ) -> None:
        """`limits`: the rate-limit lines (a request that passed its limits carries them,
        whatever came after) and the route's own; `rules`: the route's response rule."""
        if note is not None:
            fields = error.fields
            note.refused(error.code, fields.get("rule"), fields.get("breaker"))
        if conn.response_started:
            conn.abort()
        else:
            headers = error_headers(error)
            if rules is not None:
                headers = rules.filter_headers(headers)
            conn.send_response(head, error.status, headers, error.body(), limits)

    def _done(
        self,
        conn: ClientConnection,
        head: RequestHead,
        route_name: str,
        runtime: Runtime,
        note: RequestNote | None,
        body: RequestBody | None,
    ) -> None:
        now = time.monotonic()
        runtime.metrics.request_done(route_name, head.method, conn.status, now - head.received_at)
        observer = runtime.observer
        if observer.access_log or (note is not None and note.trace.recorded):
            observer.finished(
                request_id=head.request_id,
                method=head.method,
                path=head.path,
                route=route_name,
                status=conn.status,
                received_at=head.received_at,
                now=now,
                bytes_in=body.size if body is not None else head.content_length or 0,
                bytes_out=conn.bytes_out,
                note=note,
            )
