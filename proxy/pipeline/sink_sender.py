"""Alert sinks behind the same breaker, retry and budget as proxied traffic.

Each alert is POSTed with an `Idempotency-Key` (the event id), which is what makes a retry
of this POST safe by the sidecar's own rule; the sink can use it to drop duplicates.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from policies.model import SinkPolicy
from proxy.core.tracecontext import RequestTrace
from proxy.errors import CircuitOpen, ProxyError, UpstreamTimeout
from proxy.pipeline.observe import RequestNote
from proxy.pipeline.resilience import Exchange
from proxy.pipeline.runtime import Runtime
from proxy.server.request import RequestBody, RequestHead


def _request(sink: SinkPolicy, host: bytes, body: bytes, key: bytes) -> tuple[RequestHead, bytes]:
    headers = [
        (b"host", host),
        (b"content-type", b"application/json"),
        (b"idempotency-key", key),
    ]
    head = RequestHead(b"POST", sink.path.encode(), headers, "1.1", True, "", time.monotonic())
    head.content_length = len(body)
    head.request_id = key
    head.idempotency_key = key
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
    """The hub's `SendFn`: POST one alert to a sink's upstream; returns the outcome label.

    The attempts are an `Exchange` driven by its coroutine, as a forwarded request with a
    body is: the same breaker (and its `circuit_breaker_calls_total`), retry planner,
    budget and timeouts; the answer is read to its end instead of relayed."""

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
        try:
            note = RequestNote(RequestTrace(None, None, 0.0, False), "")  # not traced
            exchange = Exchange(
                name, pool, guard, runtime.metrics, None, head, _full_body(body), head_bytes,
                b"", time.monotonic(), None, note, note.trace.span_id,
            )  # fmt: skip
            status = await exchange.run()
        except CircuitOpen:
            return "rejected"
        except UpstreamTimeout:
            return "timeout"
        except ProxyError:
            return "failure"
        return "success" if status < 400 else "failure"
