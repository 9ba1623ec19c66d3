"""The attempt loop of one forwarded request: breaker, send, classify, retry, relay.

Rules it keeps (docs/architecture.md, "A request's life"):
- every attempt passes the upstream's breaker; an open breaker answers at once and stops
  further retries, and then the last upstream answer (if any) is what the client gets;
- a POST (any method outside `retry.methods`) is sent again only when nothing was sent
  (connect failure) or the client gave an `Idempotency-Key`; a connection reset after
  sending counts as a failure but is retried only for such safe requests;
- retries draw on the upstream's retry budget; a retry over budget is not made;
- the route's `timeout` is a deadline for all attempts together;
- an upstream answer is passed through as it is once retries are over.

The decisions are plain methods of `Exchange`; two drivers call them. `start()` makes the
first attempt by callbacks when the request has no body and a warm connection is idle
(most requests): no task wakes between the client's bytes and the upstream's answer. The
coroutine `run()` is the general loop (bodies, new connections, waits between retries);
the callback driver hands over to it when an attempt is to be retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from proxy.core.backoff import parse_retry_after
from proxy.core.breaker import Permit
from proxy.core.header_rules import HeaderRules
from proxy.core.outcomes import CONNECT_FAILURE, STATUS, TIMEOUT, OutcomeKind, attempt_label
from proxy.core.tracecontext import new_span_id
from proxy.errors import (
    CircuitOpen,
    Overloaded,
    ProxyError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.pipeline.forward import Attempt, Relay
from proxy.upstream.connection import (
    AttemptTimeout,
    ConnectFailure,
    TlsFailure,
    UpstreamFailure,
)
from proxy.upstream.head import ResponseHead

if TYPE_CHECKING:
    from proxy.metrics import Metrics
    from proxy.pipeline.observe import RequestNote
    from proxy.pipeline.state import Guard
    from proxy.server.http11 import ClientConnection
    from proxy.server.request import RequestBody, RequestHead
    from proxy.upstream.pool import UpstreamPool

log = logging.getLogger("proxy.server")


class ExchangeOwner(Protocol):
    """Told how an exchange driven by callbacks ended (the pipeline, which answers)."""

    def exchange_done(self, exchange: Exchange, error: ProxyError | None) -> None: ...

    def exchange_gone(self, exchange: Exchange) -> None: ...


def _failure_error(name: str, kind: OutcomeKind, failure: UpstreamFailure) -> ProxyError:
    if kind is TIMEOUT:
        return UpstreamTimeout(f"upstream '{name}' did not answer in time")
    if isinstance(failure, TlsFailure):
        return UpstreamUnavailable(f"upstream '{name}' is unavailable: {failure}")
    return UpstreamUnavailable(f"upstream '{name}' is unavailable")


class Exchange:
    """One forwarded request and its attempts; `close()` runs exactly once at the end.

    No `__slots__`: what only retries, failures and the callback driver use are
    class-level defaults, so a request that succeeds at once sets a few fields only.
    """

    attempt_no = 0
    kept: Attempt | None = None
    """The last upstream answer, returned if retries stop."""
    last_failure: ProxyError | None = None
    refused_retry_after: float | None = None
    deadline: float | None = None
    attempt: Attempt | None = None
    permit: Permit | None = None
    sent_at = 0.0
    relay: Relay | None = None
    task: asyncio.Task[None] | None = None
    owner: ExchangeOwner | None = None
    switched: Attempt | None = None
    """The attempt whose upstream answered 101 to a tunnel request: the tunnel's now."""
    response_rules: HeaderRules | None = None
    """The route's `response_headers`: their names are taken out of the upstream's answer."""

    def __init__(
        self,
        name: str,
        pool: UpstreamPool,
        guard: Guard,
        metrics: Metrics,
        client: ClientConnection | None,
        head: RequestHead,
        body: RequestBody | None,
        head_bytes: bytes,
        extra_lines: bytes,
        started: float,
        deadline_s: float | None,
        note: RequestNote,
        span_id: bytes,
    ) -> None:
        """Raises Overloaded when the upstream has `max_in_flight` requests already.

        `client` None: nobody to relay the answer to (an alert sink's POST); `run()` then
        reads the answer to its end and returns its status. `head_bytes` carries `span_id`
        as the traceparent's parent-id (a retry of a recorded trace replaces it).
        `started` is when the route's `deadline_s` starts and the first attempt is measured
        from (see `RequestContext.resume` for why that is not always the head's arrival)."""
        self.name = name
        self.pool = pool
        if pool.full:
            raise Overloaded(f"upstream '{name}' has too many requests in flight")
        self.guard = guard
        self.metrics = metrics
        self.client = client
        self.head = head
        self.body = body
        self.head_bytes = head_bytes
        self.extra_lines = extra_lines
        """Rendered header lines every answer to the client carries (the rate limits)."""
        self.started = started
        if deadline_s is not None:
            self.deadline = started + deadline_s
        self.note = note
        note.upstream = name
        self.span_id = span_id
        """The upstream's parent-id: this attempt's client span when the trace is recorded,
        else the sidecar's span (no client spans are kept then)."""
        guard.budget.record_request(started)
        pool.in_flight += 1

    # -- decisions (both drivers) -----------------------------------------------------------
    def _next_permit(self) -> Permit | None:
        """The breaker's permit for the next attempt; None when it refuses."""
        self.attempt_no += 1
        permit = self.guard.breaker.allow()
        if not permit.allowed:
            self.metrics.breaker_call(self.name, "rejected")
            self.refused_retry_after = permit.retry_after_s or 1.0
            return None
        if permit.shadow_rejected:
            self.metrics.breaker_call(self.name, "shadow_rejected")
        if self.kept is not None:
            self.kept.drop()
            self.kept = None
        return permit

    def _attempt_head(self) -> bytes:
        """The request head for this attempt: a retry of a recorded trace names its own
        client span as the parent-id, so each attempt is a span of its own."""
        if self.attempt_no == 1 or not self.note.trace.recorded:
            return self.head_bytes
        old, self.span_id = self.span_id, new_span_id()
        at = self.head_bytes.find(b"-" + old + b"-")
        head_bytes = self.head_bytes[: at + 1] + self.span_id + self.head_bytes[at + 17 :]
        self.head_bytes = head_bytes
        return head_bytes

    def _timeout(self, now: float) -> float:
        timeout = self.pool.policy.timeout
        if self.deadline is not None:
            timeout = max(0.001, min(timeout, self.deadline - now))
        return timeout

    def _judge_response(self, permit: Permit, attempt: Attempt, sent_at: float) -> float | None:
        """Record an answer; the wait before a retry, or None to stop here."""
        response = attempt.response
        assert response is not None
        status = response.status
        now = time.monotonic()
        self.guard.breaker.record_outcome(permit, STATUS, status, now - sent_at)
        self.metrics.attempt_answered(self.name, status >= 500)
        outcome = "failure" if status >= 500 else "success"
        self.metrics.attempt_took(self.name, outcome, now - sent_at)
        self.note.attempt_ended(self.head.method, self.span_id, sent_at, now, status, outcome)
        self.kept = attempt
        self.last_failure = None
        if status not in self.guard.planner.retry_statuses:
            return None
        value = response.retry_after
        retry_after = None if value is None else parse_retry_after(value, time.time())
        return self._plan(STATUS, status, retry_after)

    def _judge_failure(
        self, permit: Permit, failure: UpstreamFailure, sent_at: float
    ) -> float | None:
        """Record a failed attempt; raises when it must not be sent again."""
        kind = TIMEOUT if isinstance(failure, AttemptTimeout) else CONNECT_FAILURE
        now = time.monotonic()
        self.guard.breaker.record_outcome(permit, kind, 0, now - sent_at)
        self.metrics.breaker_call(self.name, "failure")
        label = attempt_label(kind, True)
        self.metrics.upstream_attempt(self.name, label)
        self.metrics.attempt_took(self.name, label, now - sent_at)
        self.note.attempt_ended(self.head.method, self.span_id, sent_at, now, 0, label)
        self.last_failure = _failure_error(self.name, kind, failure)
        sent = not isinstance(failure, (ConnectFailure, AttemptTimeout))
        if sent and not self._safe_to_resend():
            # Reset after sending: the upstream may have acted on it; never resend.
            raise self.last_failure from None
        return self._plan(kind, 0, None)

    def _safe_to_resend(self) -> bool:
        """A method outside `retry.methods` is sent again only with an Idempotency-Key."""
        if self.head.idempotency_key is not None:
            return True
        return self.head.method.decode("latin-1") in self.guard.planner.policy.methods

    def _plan(self, kind: OutcomeKind, status: int, retry_after: float | None) -> float | None:
        body = self.body
        guard = self.guard
        decision = guard.planner.decide(
            self.attempt_no, kind, status, self.head.method.decode("latin-1"),
            has_idempotency_key=self.head.idempotency_key is not None,
            body_replayable=body is None or body.error is None,
            retry_after=retry_after,
            time_left=None if self.deadline is None else self.deadline - time.monotonic(),
        )  # fmt: skip
        if not decision.retry:
            return None
        if not guard.budget.try_spend():
            self.metrics.retry_refused_by_budget(self.name)
            return None
        breaker = guard.breaker
        if breaker.state in ("open", "forced_open") and breaker.policy.mode == "enforce":
            return None
        self.metrics.retry(self.name, decision.reason)
        if self.kept is not None:
            self.kept.hold()
        return decision.delay

    def _outcome_error(self) -> ProxyError:
        """What the client gets when retries stop with no upstream answer kept."""
        if self.last_failure is not None:
            return self.last_failure
        return CircuitOpen(self.name, self.refused_retry_after or 1.0)

    def close(self) -> None:
        if self.kept is not None:
            self.kept.drop()
            self.kept = None
        self.pool.in_flight -= 1

    # -- the general driver -------------------------------------------------------------------
    async def run(self, delay: float | None = None) -> int:
        """All attempts as a coroutine; `delay`: go on after a first attempt by callbacks.
        The status of the answer passed on; raises ProxyError when there is none."""
        body = self.body
        try:
            client = self.client
            if client is not None and self.head.expect_continue and self.attempt_no == 0:
                client.response.send_continue()
            if delay is not None:
                await asyncio.sleep(delay)
            while True:
                permit = self._next_permit()
                if permit is None:
                    break
                attempt = Attempt(self.pool)
                sent_at = time.monotonic()
                try:
                    await attempt.send(
                        self.head, self._attempt_head(), body, self.attempt_no == 1,
                        self._timeout(sent_at),
                    )  # fmt: skip
                except UpstreamFailure as failure:
                    delay = self._judge_failure(permit, failure, sent_at)
                except BaseException:
                    self.guard.breaker.release(permit)
                    raise
                else:
                    delay = self._judge_response(permit, attempt, sent_at)
                if delay is None:
                    break
                if body is not None:
                    await body.wait_complete()
                await asyncio.sleep(delay)
            kept, self.kept = self.kept, None
            if kept is None:
                raise self._outcome_error()
            if client is None:
                return await kept.consume()
            response = kept.response
            assert response is not None
            if response.status == 101:
                self.switched = kept  # only a tunnel request gets one (`upgrade` on begin)
                return 101
            await kept.relay(client, self.head, self.extra_lines, self.response_rules)
            return response.status
        finally:
            self.close()

    # -- the callback driver ----------------------------------------------------------------
    def start(self, owner: ExchangeOwner) -> None:
        """Drive the exchange; `owner` hears how it ended. By callbacks when the request has
        no body and a warm connection is idle; by the coroutine `run()` in a task otherwise
        (an upgrade too: its attempt marks the upstream connection, see `Attempt.send`)."""
        self.owner = owner
        head = self.head
        if self.body is not None or head.expect_continue or head.websocket:
            self._hand_over(None)
            return
        conn = self.pool.take_idle()
        if conn is None:
            self._hand_over(None)
            return
        permit = self._next_permit()
        if permit is None:
            self.pool.release(conn, True)
            self._finish(self._outcome_error())
            return
        self.permit = permit
        attempt = self.attempt = Attempt(self.pool)
        attempt.conn = conn
        self.sent_at = now = self.started
        conn.begin(self.head.method == b"HEAD", now + self._timeout(now), self)
        conn.transport.write(self.head_bytes)  # type: ignore[union-attr]

    def response_head(self, head: ResponseHead) -> None:
        attempt, permit = self.attempt, self.permit
        assert attempt is not None and permit is not None
        self.permit = None
        attempt.response = head
        delay = self._judge_response(permit, attempt, self.sent_at)
        if delay is not None:
            self._hand_over(delay)
            return
        kept, self.kept = self.kept, None
        assert kept is not None and self.client is not None
        self.relay = Relay(kept, self.client, self._relayed)
        self.relay.start(self.head, self.extra_lines, self.response_rules)

    def _relayed(self) -> None:
        self.relay = None
        self._finish(None)

    def response_failed(self, failure: UpstreamFailure) -> None:
        attempt, permit = self.attempt, self.permit
        assert attempt is not None and permit is not None
        self.permit = None
        if attempt.conn is not None:
            attempt.conn.abort()
        try:
            delay = self._judge_failure(permit, failure, self.sent_at)
        except ProxyError as error:
            self._finish(error)
            return
        if delay is None:
            self._finish(self._outcome_error())
        else:
            self._hand_over(delay)

    def _finish(self, error: ProxyError | None) -> None:
        self.close()
        assert self.owner is not None
        self.owner.exchange_done(self, error)

    def _hand_over(self, delay: float | None) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run_for_owner(delay))

    async def _run_for_owner(self, delay: float | None) -> None:
        owner = self.owner
        assert owner is not None
        try:
            await self.run(delay)
        except ProxyError as error:
            owner.exchange_done(self, error)
        except asyncio.CancelledError:
            owner.exchange_gone(self)
            raise
        except Exception:
            log.exception("forwarding failed", extra={"request_id": self.head.request_id.decode()})
            owner.exchange_done(self, ProxyError("internal error"))
        else:
            owner.exchange_done(self, None)

    def cancel(self) -> None:
        """The client went away: stop, free what the exchange holds, count nothing more."""
        if self.task is not None:
            self.task.cancel()
            return
        if self.relay is not None:
            self.relay.cancel()
            self.relay = None
        elif self.permit is not None:
            self.guard.breaker.release(self.permit)
            self.permit = None
            if self.attempt is not None:
                self.attempt.drop()
        self.close()
        assert self.owner is not None
        self.owner.exchange_gone(self)
