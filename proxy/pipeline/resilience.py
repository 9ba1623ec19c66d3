"""The attempt loop: breaker, send, classify, retry (budget permitting), relay.

Rules it keeps (CONTRACT 5 and 9):
- every attempt passes the upstream's breaker; an open breaker answers at once and stops
  further retries, and then the last upstream answer (if any) is what the client gets;
- a POST (any method outside `retry.methods`) is sent again only when nothing was sent
  (connect failure) or the client gave an `Idempotency-Key`; a connection reset after
  sending counts as a failure but is retried only for such safe requests;
- retries draw on the upstream's retry budget; a retry over budget is not made;
- the route's `timeout` is a deadline for all attempts together;
- an upstream answer is passed through as it is once retries are over.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from proxy.core.backoff import parse_retry_after
from proxy.core.outcomes import CONNECT_FAILURE, STATUS, TIMEOUT, OutcomeKind, attempt_label
from proxy.core.routing import Route
from proxy.errors import (
    CircuitOpen,
    Overloaded,
    ProxyError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.pipeline.forward import Attempt, upstream_head
from proxy.pipeline.runtime import Runtime
from proxy.upstream.connection import AttemptTimeout, ConnectFailure, UpstreamFailure

if TYPE_CHECKING:
    from proxy.server.http11 import ClientConnection
    from proxy.server.request import Headers, RequestBody, RequestHead


def _failure_error(name: str, kind: OutcomeKind) -> ProxyError:
    if kind is TIMEOUT:
        return UpstreamTimeout(f"upstream '{name}' did not answer in time")
    return UpstreamUnavailable(f"upstream '{name}' is unavailable")


async def forward_with_resilience(
    conn: ClientConnection,
    head: RequestHead,
    body: RequestBody | None,
    route: Route,
    runtime: Runtime,
    extra_headers: Headers,
    identity_headers: Headers,
    client_ip_forwarded: bytes,
) -> None:
    name = route.upstream.name
    pool = runtime.pools[name]
    guard = runtime.guards[name]
    if pool.full:
        raise Overloaded(f"upstream '{name}' has too many requests in flight")
    proto = b"http"
    if runtime.trusted.is_trusted(head.peer_ip):
        proto = head.header(b"x-forwarded-proto") or b"http"
    head_bytes = upstream_head(
        head, route.upstream_target(head.target), client_ip_forwarded, proto, identity_headers
    )
    metrics = runtime.metrics
    breaker, budget, planner = guard.breaker, guard.budget, guard.planner
    method = head.method.decode("latin-1")
    has_key = head.header(b"idempotency-key") is not None
    safe_to_resend = method in planner.policy.methods or has_key
    started = time.monotonic()
    deadline = started + route.deadline_s if route.deadline_s is not None else None
    if head.expect_continue:
        conn.send_continue()
    budget.record_request()
    pool.in_flight += 1
    kept: Attempt | None = None  # the last answer, returned if retries stop
    last_failure: ProxyError | None = None
    attempt_no = 0
    try:
        while True:
            attempt_no += 1
            permit = breaker.allow()
            if not permit.allowed:
                metrics.breaker_call(name, "rejected")
                if kept is not None:
                    await kept.relay(conn, head, extra_headers)
                    return
                if last_failure is not None:
                    raise last_failure
                raise CircuitOpen(name, permit.retry_after_s or 1.0)
            if permit.shadow_rejected:
                metrics.breaker_call(name, "shadow_rejected")
            if kept is not None:
                kept.drop()
                kept = None
            attempt = Attempt(pool)
            sent_at = time.monotonic()
            timeout = pool.policy.timeout
            if deadline is not None:
                timeout = max(0.001, min(timeout, deadline - sent_at))
            status = 0
            retry_after: float | None = None
            try:
                response = await attempt.send(head, head_bytes, body, attempt_no == 1, timeout)
            except UpstreamFailure as failure:
                kind = TIMEOUT if isinstance(failure, AttemptTimeout) else CONNECT_FAILURE
                breaker.record_outcome(permit, kind, 0, time.monotonic() - sent_at)
                metrics.breaker_call(name, "failure")
                metrics.upstream_attempt(name, attempt_label(kind, True))
                last_failure = _failure_error(name, kind)
                sent = not isinstance(failure, (ConnectFailure, AttemptTimeout))
                if sent and not safe_to_resend:
                    # Reset after sending: the upstream may have acted on it; never resend.
                    raise last_failure from None
            except BaseException:
                breaker.release(permit)
                raise
            else:
                kind = STATUS
                status = response.status
                failed = status >= 500
                breaker.record_outcome(permit, STATUS, status, time.monotonic() - sent_at)
                metrics.breaker_call(name, "failure" if failed else "success")
                metrics.upstream_attempt(name, attempt_label(STATUS, failed))
                kept = attempt
                last_failure = None
                value = response.header(b"retry-after")
                if value is not None:
                    retry_after = parse_retry_after(value, time.time())
            decision = planner.decide(
                attempt_no, kind, status, method,
                has_idempotency_key=has_key,
                body_replayable=body is None or body.error is None,
                retry_after=retry_after,
                time_left=None if deadline is None else deadline - time.monotonic(),
            )  # fmt: skip
            if not decision.retry:
                break
            if not budget.try_spend():
                metrics.retry_refused_by_budget(name)
                break
            if breaker.state in ("open", "forced_open") and breaker.policy.mode == "enforce":
                break
            metrics.retry(name, decision.reason)
            if kept is not None:
                kept.hold()
            if body is not None:
                await body.wait_complete()
            await asyncio.sleep(decision.delay)
        if kept is not None:
            await kept.relay(conn, head, extra_headers)
            kept = None
            return
        assert last_failure is not None
        raise last_failure
    finally:
        if kept is not None:
            kept.drop()
        pool.in_flight -= 1
