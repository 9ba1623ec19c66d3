"""A request's life through the stages, in-process: each way it can end, on both paths.

The callback path (a request without a body, taken from the parser's callback) and the
serving task's path (a body, or pipelined behind another) run the same stages; every end
gives back the in-flight slot and answers exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from policies.model import SinkPolicy
from proxy.clock import SYSTEM_CLOCK
from proxy.core.window import Decision, LimitCheck
from proxy.pipeline.context import RequestContext
from proxy.pipeline.sink_sender import SinkSender
from proxy.storage.base import StoreUnavailable
from proxy.storage.memory import MemoryStore
from tests.support.inprocess import Harness, policy_doc, settle

GET = b"GET /api/items HTTP/1.1\r\nHost: t\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
LIMITED = {"rate_limits": {"roles": {"anonymous": "100/min"}}}


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "lifecycle-test-secret-0123456789abcdefghijkl")


class LaterStore:
    """A store that answers later, as Redis does: the test hands over the decision (made
    by a memory store it wraps; compiled classes cannot be subclassed here)."""

    def __init__(self) -> None:
        self.memory = MemoryStore(SYSTEM_CLOCK)
        self.waiting: list[Callable[[Decision | Exception], None]] = []
        self.checks: Sequence[LimitCheck] = ()

    def decide(
        self,
        checks: Sequence[LimitCheck],
        later: Callable[[Any, Decision | Exception], None],
        context: Any,
    ) -> Decision | None:
        self.checks = checks
        self.waiting.append(lambda result: later(context, result))
        return None

    def record_usage(self, user_id: str, path: str, window_s: float) -> None:
        self.memory.record_usage(user_id, path, window_s)

    def decide_here(self) -> Decision:
        decision = self.memory.decide(self.checks, lambda _context, _result: None, None)
        assert decision is not None
        return decision


def with_later_store(harness: Harness) -> LaterStore:
    store = LaterStore()
    harness.sidecar.runtime.limiter.store = store  # type: ignore[assignment]
    return store


def active(harness: Harness) -> RequestContext:
    ctx = harness.client.active
    assert isinstance(ctx, RequestContext)
    return ctx


async def test_a_request_is_forwarded_and_answered_by_callbacks() -> None:
    h = Harness(policy_doc())
    _, upstream = h.idle_upstream()
    h.send(GET)
    sent = upstream.take()
    assert sent.startswith(b"GET /api/items HTTP/1.1\r\nhost: t\r\n")
    assert b"x-forwarded-for: 127.0.0.1\r\n" in sent
    assert h.in_flight == 1
    h.answer(OK)
    assert h.written().startswith(b"HTTP/1.1 200 OK\r\n")
    assert h.in_flight == 0 and h.client.active is None and not h.client.busy


async def test_no_route_is_answered_404_on_the_callback_path() -> None:
    h = Harness(
        policy_doc(routes=[{"name": "api", "path_prefix": "/api", "upstream": "inventory"}])
    )
    h.send(b"GET /elsewhere HTTP/1.1\r\nHost: t\r\n\r\n")
    out = h.written()
    assert out.startswith(b"HTTP/1.1 404 ") and b'"no_route"' in out
    assert h.in_flight == 0 and not h.client.busy


async def test_over_max_in_flight_is_refused_503() -> None:
    h = Harness(policy_doc(server={"max_in_flight": 1}))
    h.idle_upstream()
    h.send(GET)  # waits for the upstream
    _, other = h.connect()
    other.protocol.data_received(GET)  # type: ignore[attr-defined]
    assert other.take().startswith(b"HTTP/1.1 503 ")
    assert h.in_flight == 1
    h.answer(OK)
    assert h.in_flight == 0


async def test_an_invalid_token_is_refused_401_before_the_limits() -> None:
    h = Harness(policy_doc(**LIMITED))
    store = with_later_store(h)
    h.send(b"GET /api/items HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\n\r\n")
    assert h.written().startswith(b"HTTP/1.1 401 ")
    assert store.waiting == [] and h.in_flight == 0


async def test_a_later_decision_goes_on_and_starts_the_upstream_deadline_then() -> None:
    h = Harness(policy_doc(**LIMITED))
    store = with_later_store(h)
    _, upstream = h.idle_upstream()
    h.send(GET)
    ctx = active(h)
    assert upstream.take() == b""  # waiting for the decision
    received = ctx.head.received_at
    store.waiting.pop()(store.decide_here())
    assert ctx.exchange is not None and ctx.exchange.started > received
    assert upstream.take().startswith(b"GET /api/items")
    h.answer(OK)
    out = h.written()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-RateLimit-Limit: 100\r\n" in out
    assert h.in_flight == 0


async def test_a_store_failure_answers_500_and_frees_the_slot() -> None:
    h = Harness(policy_doc(**LIMITED))
    store = with_later_store(h)
    h.send(GET)
    ctx = active(h)
    store.waiting.pop()(StoreUnavailable("redis: down"))
    out = h.written()
    assert out.startswith(b"HTTP/1.1 500 ")
    assert b"X-Request-Id: " + ctx.head.request_id + b"\r\n" in out
    assert h.in_flight == 0
    ctx.cancel()  # the client leaving afterwards changes nothing
    assert h.in_flight == 0


async def test_a_client_gone_before_the_decision_gets_nothing() -> None:
    h = Harness(policy_doc(**LIMITED))
    store = with_later_store(h)
    h.send(GET)
    h.client.connection_lost(None)
    assert h.in_flight == 0
    store.waiting.pop()(StoreUnavailable("redis: down"))
    assert h.written() == b"" and h.in_flight == 0


async def test_an_own_endpoint_is_answered_on_the_callback_path() -> None:
    h = Harness(policy_doc())
    h.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    await settle()
    assert h.written().startswith(b"HTTP/1.1 200 OK\r\n")
    assert h.in_flight == 0 and not h.client.busy


async def test_a_request_with_a_body_takes_the_task_path() -> None:
    h = Harness(policy_doc())
    _, upstream = h.idle_upstream()
    h.send(b"POST /api/items HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
    await settle()
    sent = upstream.take()
    assert sent.startswith(b"POST /api/items HTTP/1.1\r\nhost: t\r\n") and sent.endswith(
        b"\r\n\r\nhello"
    )
    assert h.in_flight == 1
    h.answer(OK)
    await settle()
    assert h.written().startswith(b"HTTP/1.1 200 OK\r\n")
    assert h.in_flight == 0 and not h.client.busy


async def test_a_client_gone_on_the_task_path_frees_the_slot() -> None:
    h = Harness(policy_doc())
    h.idle_upstream()
    h.send(b"POST /api/items HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
    await settle()
    assert h.in_flight == 1
    h.client.connection_lost(None)
    await settle()
    assert h.in_flight == 0 and h.pool.in_flight == 0


FAST_RETRY = {"retry": {"base_delay": "1ms", "max_delay": "1ms", "jitter": 0}}


async def until(condition: Callable[[], bool]) -> None:
    """Poll the loop until `condition` holds (bounded: a few hundred turns)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def test_a_503_is_retried_by_the_task_driver_and_the_retry_answers() -> None:
    h = Harness(policy_doc(upstream=FAST_RETRY))
    _, spare = h.idle_upstream()
    _, first = h.idle_upstream()  # the pool hands out the last one idle
    h.send(GET)
    assert first.take().startswith(b"GET /api/items")
    h.answer(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", which=1)
    await until(lambda: bool(spare.written))
    h.answer(OK, which=0)
    await until(lambda: h.in_flight == 0)
    out = h.written()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.count(b"HTTP/1.1") == 1
    metrics = h.sidecar.runtime.metrics.render().decode()
    assert 'retries_total{reason="status",upstream="inventory"} 1.0' in metrics


async def test_an_alert_sink_goes_through_the_breaker_and_is_counted() -> None:
    h = Harness(policy_doc(upstream=FAST_RETRY))
    _, sink = h.idle_upstream()
    sender = SinkSender(lambda: h.sidecar.runtime)
    sent = asyncio.ensure_future(sender(SinkPolicy(upstream="inventory"), b"{}"))
    await until(lambda: bool(sink.written))
    request = sink.take()
    assert request.startswith(b"POST /") and b"idempotency-key: alert-" in request
    h.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert await sent == "success"
    metrics = h.sidecar.runtime.metrics.render().decode()
    assert 'circuit_breaker_calls_total{breaker="inventory",outcome="success"} 1.0' in metrics
