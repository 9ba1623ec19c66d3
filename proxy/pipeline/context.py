"""One request's life in the pipeline: what the stages hand each other, and its one end.

A `RequestContext` is made for every request the pipeline takes, on either path (the
callback path from the parser, the serving task's path). The stages (`stages.STAGES`)
read and fill it in order; the runner here walks them. Whatever happens (answered by a
stage, forwarded, refused, failed) the request ends in `finish()`, or in `cancel()` when
the client left first: the only places that give back the in-flight slot, count the
request, log it (access log, trace) and tell the connection it may serve the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final

from proxy.core.identity import ANONYMOUS, Identity
from proxy.errors import ProxyError
from proxy.pipeline.observe import CLIENT_CLOSED
from proxy.pipeline.tunnel import open_tunnel
from proxy.server.responses import error_headers

if TYPE_CHECKING:
    from proxy.core.routing import Route
    from proxy.pipeline.forward import Attempt
    from proxy.pipeline.observe import RequestNote
    from proxy.pipeline.resilience import Exchange
    from proxy.pipeline.runtime import Runtime
    from proxy.server.http11 import ClientConnection
    from proxy.server.request import RequestBody, RequestHead

failures = logging.getLogger("proxy.server")

CONTINUE: Final = 0
"""A stage's answer: go on with the next stage."""
ANSWERED: Final = 1
"""A stage's answer: the request has been answered; it is over."""
WAIT: Final = 2
"""A stage's answer: it will call `resume()` (or `finish()`) later; nothing runs now."""

SIDECAR_ROUTE = "sidecar"
UNMATCHED_ROUTE = "none"


class Stage:
    """One step of a request's life. `enter` answers CONTINUE, ANSWERED or WAIT, or raises
    ProxyError to refuse the request; a stage that waited is called back by `resume`."""

    def enter(self, ctx: RequestContext) -> int:
        raise NotImplementedError

    def resume(self, ctx: RequestContext, result: object) -> int:
        """What the awaited thing produced (a stage that never waits keeps this)."""
        raise NotImplementedError


class Lifecycle:
    """What every request of one pipeline shares: the stages and the in-flight count."""

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        self.stages = stages
        self.in_flight = 0
        """Requests past load shedding and not yet finished (`server.max_in_flight`)."""
        self.tunnels_open = 0
        """Upgraded connections being relayed (`pipeline/tunnel.py`)."""


class RequestContext:
    """One request between the server and the upstream.

    No `__slots__`: what only some requests set is a class-level default, so a request sets
    the few fields it needs (a compiled class keeps them in a fixed layout anyway).
    """

    route: Route | None = None
    route_name: str = UNMATCHED_ROUTE
    """The route's name for metrics and the access log ("sidecar" for our own paths)."""
    identity: Identity = ANONYMOUS
    limits: bytes = b""
    """Rendered header lines every answer to this request carries: the rate limits' and
    the route's (`route_lines`)."""
    route_lines: bytes = b""
    """The route's own answer lines (`response_headers`, CORS), set by the Edges stage."""
    forwarded_for: bytes = b""
    client_ip: str = ""
    note: RequestNote | None = None
    """The routed request's story for the access log and its trace (`pipeline/observe.py`)."""
    stage = 0
    """The index of the stage running (or waited on)."""
    counted = False
    """True once load shedding let it in: `finish` gives the in-flight slot back."""
    over = False
    """Finished or cancelled, whichever came first: the other then does nothing."""
    exchange: Exchange | None = None
    waiter: asyncio.Future[None] | None = None
    """Set on the serving task's path, which awaits the end; None on the callback path."""
    task: asyncio.Task[None] | None = None
    """A coroutine a stage waits on (the sidecar's own endpoints)."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        conn: ClientConnection,
        head: RequestHead,
        body: RequestBody | None,
        runtime: Runtime,
        ready_at: float,
    ) -> None:
        self.lifecycle = lifecycle
        self.conn = conn
        self.head = head
        self.body = body
        self.runtime = runtime
        """The policy the request started under: a reload does not change it mid-way."""
        self.ready_at = ready_at
        """When the request was ready to be forwarded: the start of the route's `timeout`
        (see `resume`)."""

    # -- the runner ------------------------------------------------------------------------
    def run(self) -> None:
        """Walk the stages from the first; returns when the request is over or waits."""
        try:
            self._walk(self.lifecycle.stages[0].enter(self))
        except ProxyError as error:
            self.finish(error)
        except Exception:
            self._failed()

    def resume(self, result: object) -> None:
        """A waiting stage's result came: that stage goes on, then the stages after it.

        The route's `timeout` starts now, not when the head arrived: the upstream's
        deadline and its slow-call measure are about the upstream, and a slow rate-limit
        store must not trip the upstream's breaker or shorten its time to answer. A request
        that never waits keeps the head's arrival as its start (the same instant, to within
        the microseconds the stages take, without another clock read)."""
        if self.over:
            return
        self.ready_at = time.monotonic()
        try:
            self._walk(self.lifecycle.stages[self.stage].resume(self, result))
        except ProxyError as error:
            self.finish(error)
        except Exception:  # may run in a store's batch: answer this request, spare the rest
            self._failed()

    def _walk(self, outcome: int) -> None:
        stages = self.lifecycle.stages
        while outcome == CONTINUE:
            self.stage += 1
            outcome = stages[self.stage].enter(self)
        if outcome == ANSWERED:
            self.finish(None)

    def _failed(self) -> None:
        failures.exception("request failed", extra={"request_id": self.head.request_id.decode()})
        self.finish(ProxyError("internal error"))

    # -- the end ---------------------------------------------------------------------------
    def finish(self, error: ProxyError | None) -> None:
        """The request is over: answer `error` if any, count, log, serve the next request."""
        if self.over:
            return
        self.over = True
        self.exchange = None  # it points back here: no cycle left for the GC to find
        self._release()
        conn, head = self.conn, self.head
        response = conn.response
        note = self.note
        if error is not None:
            if note is not None:
                fields = error.fields
                note.refused(error.code, fields.get("rule"), fields.get("breaker"))
            if response.started:
                conn.abort()  # half an answer was sent: cutting is the only honest end
            else:
                # A request that passed its limits carries their headers, whatever came after.
                headers = error_headers(error)
                route = self.route
                edges = route.edges if route is not None else None
                if edges is not None and edges.response is not None:
                    headers = edges.response.filter_headers(headers)
                response.send_response(head, error.status, headers, error.body(), self.limits)
        now = time.monotonic()
        runtime = self.runtime
        runtime.metrics.request_done(
            self.route_name, head.method, response.status, now - head.received_at
        )
        if runtime.observer.access_log or (note is not None and note.trace.recorded):
            self._observed(response.status, now)
        waiter = self.waiter
        if waiter is None:
            conn.request_done()
        elif not waiter.done():
            conn.active = None
            waiter.set_result(None)

    def cancel(self) -> None:
        """The client went away: stop what runs for it, free its slot; it is logged as 499
        `client_closed` (never sent) and not counted as answered."""
        if self.over:
            return
        self.over = True
        self._release()
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.cancel()
        if self.task is not None:
            self.task.cancel()
        if self.note is not None:
            self.note.reason = "client_closed"
        self._observed(CLIENT_CLOSED, time.monotonic())

    def _observed(self, status: int, now: float) -> None:
        """The access-log line and, for a recorded trace, the spans."""
        head, body = self.head, self.body
        self.runtime.observer.finished(
            request_id=head.request_id,
            method=head.method,
            path=head.path,
            route=self.route_name,
            status=status,
            received_at=head.received_at,
            now=now,
            bytes_in=body.size if body is not None else head.content_length or 0,
            bytes_out=self.conn.response.bytes_out,
            note=self.note,
        )

    def _release(self) -> None:
        if self.counted:
            self.counted = False
            self.lifecycle.in_flight -= 1

    # -- told by the exchange (`resilience.ExchangeOwner`) -----------------------------------
    def exchange_done(self, exchange: Exchange, error: ProxyError | None) -> None:
        if error is None:
            self.runtime.limiter.record_forwarded(self.identity, self.head.path)
            switched = exchange.switched
            if switched is not None:
                self._release()  # a tunnel holds no in-flight slot: it ends when it closes
                self.task = asyncio.get_running_loop().create_task(self._tunnel(switched))
                return
        self.finish(error)

    async def _tunnel(self, attempt: Attempt) -> None:
        """Relay the upgraded connection until it closes, counted in `tunnels{route}`."""
        runtime, conn, lifecycle = self.runtime, self.conn, self.lifecycle
        idle_timeout = runtime.policy.server.tunnel_idle_timeout
        tunnel = open_tunnel(conn, self.head, attempt, self.limits, idle_timeout)
        if tunnel is not None:
            gauge = runtime.metrics.tunnels.labels(self.route_name)
            gauge.inc()
            lifecycle.tunnels_open += 1
            try:
                await tunnel.ended
            finally:
                tunnel.close()
                gauge.dec()
                lifecycle.tunnels_open -= 1
                conn.response.bytes_out += tunnel.bytes_out
        if self.note is not None:
            self.note.reason = "tunnel"
        self.finish(None)

    def exchange_gone(self, exchange: Exchange) -> None:
        """The exchange stopped because `cancel` told it to: nothing more to do."""
