"""Alert sinks behind the same breaker, retry and budget as proxied traffic.

Each alert is POSTed with an `Idempotency-Key` (the event id), which is what makes a retry
of this POST safe by the sidecar's own rule; the sink can use it to drop duplicates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from policies.model import SinkPolicy
from proxy.core.outcomes import CONNECT_FAILURE, STATUS, TIMEOUT, attempt_label
from proxy.pipeline.forward import Attempt
from proxy.pipeline.runtime import Runtime
from proxy.server.request import RequestBody, RequestHead
from proxy.upstream.connection import AttemptTimeout, UpstreamFailure


def _request(sink: SinkPolicy, host: bytes, body: bytes, key: bytes) -> tuple[RequestHead, bytes]:
    headers = [
        (b"host", host),
        (b"content-type", b"application/json"),
        (b"idempotency-key", key),
    ]
    head = RequestHead(b"POST", sink.path.encode(), headers, "1.1", True, "", time.monotonic())
    head.content_length = len(body)
    head.request_id = key
    lines = [b"POST ", sink.path.encode(), b" HTTP/1.1\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines.append(b"content-length: %d\r\n\r\n" % len(body))
    return head, b"".join(lines)


def _full_body(body: bytes) -> RequestBody:
    kept = RequestBody(len(body), _nothing, _nothing)
    kept.feed(body)
    kept.finish()
    return kept


def _nothing() -> None:
    return None


class SinkSender:
    """The hub's `SendFn`: POST one alert to a sink's upstream; returns the outcome label."""

    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self._runtime = runtime
        self._sequence = 0

    async def __call__(self, sink: SinkPolicy, body: bytes) -> str:
        runtime = self._runtime()
        name = sink.upstream
        pool = runtime.pools.get(name)
        guard = runtime.guards.get(name)
        if pool is None or guard is None:
            return "failure"
        self._sequence += 1
        key = b"alert-%d-%d" % (int(time.time() * 1000), self._sequence)
        head, head_bytes = _request(sink, pool.host_header, body, key)
        metrics = runtime.metrics
        guard.budget.record_request()
        attempt_no = 0
        while True:
            attempt_no += 1
            permit = guard.breaker.allow()
            if not permit.allowed:
                metrics.breaker_call(name, "rejected")
                return "rejected"
            attempt = Attempt(pool)
            started = time.monotonic()
            status = 0
            try:
                await attempt.send(head, head_bytes, _full_body(body), True, pool.policy.timeout)
            except UpstreamFailure as failure:
                kind = TIMEOUT if isinstance(failure, AttemptTimeout) else CONNECT_FAILURE
                guard.breaker.record_outcome(permit, kind, 0, time.monotonic() - started)
                metrics.upstream_attempt(name, attempt_label(kind, True))
            except BaseException:
                guard.breaker.release(permit)
                raise
            else:
                kind = STATUS
                status = await attempt.consume()
                guard.breaker.record_outcome(permit, STATUS, status, time.monotonic() - started)
                metrics.upstream_attempt(name, attempt_label(STATUS, status >= 500))
                if status < 500:
                    return "success" if status < 400 else "failure"
            decision = guard.planner.decide(
                attempt_no, kind, status, "POST",
                has_idempotency_key=True, body_replayable=True,
                retry_after=None, time_left=None,
            )  # fmt: skip
            if not decision.retry or not guard.budget.try_spend():
                return "timeout" if kind is TIMEOUT else "failure"
            metrics.retry(name, decision.reason)
            await asyncio.sleep(decision.delay)
