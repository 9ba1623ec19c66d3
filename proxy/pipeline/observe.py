"""What the sidecar tells about each request: the access-log line and the spans.

A `RequestNote` goes with a routed request from its first stage to its end: the trace it
belongs to, who sent it, why the sidecar answered itself (`reason`, `rule`) and what its
upstream attempts did. `Observer.finished` turns it into one `proxy.access` JSON line
(CONTRACT 11: the fields are fixed, null where they do not apply) and, for a recorded
trace, into a server span plus the client spans the attempts left, handed to the exporter.
Nothing here runs for a request unless the access log is on or its trace is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.core.identity import Identity
from proxy.core.tracecontext import RequestTrace
from proxy.logs import AccessLog
from proxy.tracing.spans import CLIENT, SERVER, Attributes, SpanEvent, SpanRecord

CLIENT_CLOSED = 499
"""nginx's status for a client that left before its answer (never sent: logged only)."""


def _wall_ns(monotonic_at: float, now_mono: float, now_ns: int) -> int:
    """Wall-clock nanoseconds of a monotonic instant in the recent past."""
    return now_ns - int((now_mono - monotonic_at) * 1e9)


class RequestNote:
    """One routed request's story so far (see the module docstring)."""

    __slots__ = (
        "attempts",
        "client_ip",
        "client_spans",
        "events",
        "identity",
        "reason",
        "rule",
        "trace",
        "upstream",
        "upstream_ms",
        "upstream_status",
    )

    def __init__(self, trace: RequestTrace, client_ip: str) -> None:
        self.trace = trace
        self.client_ip = client_ip
        self.identity: Identity | None = None
        self.reason: str | None = None
        self.rule: str | None = None
        self.upstream: str | None = None
        self.attempts = 0
        self.upstream_status: int | None = None
        self.upstream_ms = 0.0
        self.client_spans: list[SpanRecord] | None = None
        self.events: list[SpanEvent] | None = None

    def attempt_ended(
        self,
        method: bytes,
        span_id: bytes,
        sent_at: float,
        now: float,
        status: int,
        outcome: str,
    ) -> None:
        """Count one attempt sent upstream (`status` 0: no answer) and, when the trace is
        recorded, keep its client span (`span_id` is the parent-id the upstream received)."""
        self.attempts += 1
        self.upstream_ms += (now - sent_at) * 1000.0
        if status:
            self.upstream_status = status
        if not self.trace.recorded:
            return
        now_ns = time.time_ns()
        span = SpanRecord(
            self.trace.trace_id,
            span_id,
            self.trace.span_id,
            method.decode("latin-1"),
            CLIENT,
            _wall_ns(sent_at, now, now_ns),
        )
        span.end_ns = now_ns
        span.attributes = [
            ("resilience.attempt", self.attempts),
            ("resilience.outcome", outcome),
            ("resilience.upstream", self.upstream or ""),
        ]
        if status:
            span.attributes.append(("http.response.status_code", status))
        span.error = status >= 500 or not status
        if self.client_spans is None:
            self.client_spans = []
        self.client_spans.append(span)

    def refused(self, code: str, rule: str | None, breaker: str | None) -> None:
        """The sidecar answered itself; a rate-limit or breaker refusal is a span event."""
        self.reason = code
        self.rule = rule
        if not self.trace.recorded or code not in ("rate_limited", "circuit_open"):
            return
        attributes: Attributes = [("rule", rule)] if rule else [("breaker", breaker or "")]
        if self.events is None:
            self.events = []
        self.events.append(SpanEvent(code, time.time_ns(), attributes))


class Observer:
    """Writes the access log line and hands recorded spans to the exporter."""

    def __init__(
        self,
        access_log: bool,
        sample_ratio: float,
        submit: Callable[[list[SpanRecord]], None] | None,
        lines: AccessLog,
    ) -> None:
        self.access_log = access_log
        self.lines = lines
        self.sample_ratio = sample_ratio
        self.submit = submit
        """The exporter's `submit`; None without an OTLP endpoint."""

    def trace(self, traceparent: bytes | None, tracestate: bytes | None) -> RequestTrace:
        return RequestTrace(traceparent, tracestate, self.sample_ratio, self.submit is not None)

    def finished(
        self,
        *,
        request_id: bytes,
        method: bytes,
        path: bytes,
        route: str,
        status: int,
        received_at: float,
        now: float,
        bytes_in: int,
        bytes_out: int,
        note: RequestNote | None,
    ) -> None:
        if note is not None and note.trace.recorded and self.submit is not None:
            self._export(method, path, route, status, received_at, now, note)
        if not self.access_log:
            return
        identity = note.identity if note is not None else None
        authenticated = identity is not None and identity.authenticated
        self.lines.write(
            {
                "request_id": request_id.decode("latin-1"),
                "trace_id": note.trace.trace_id.decode() if note is not None else None,
                "client_ip": note.client_ip if note is not None else None,
                "method": method.decode("latin-1"),
                "path": path.decode("latin-1"),
                "route": route,
                "status": status,
                "duration_ms": round((now - received_at) * 1000.0, 3),
                "upstream": note.upstream if note is not None else None,
                "attempts": note.attempts if note is not None and note.upstream else None,
                "upstream_status": note.upstream_status if note is not None else None,
                "upstream_ms": (
                    round(note.upstream_ms, 3) if note is not None and note.attempts else None
                ),
                "user": identity.user_id if authenticated and identity is not None else None,
                "role": identity.role if identity is not None else None,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "reason": note.reason if note is not None else None,
                "rule": note.rule if note is not None else None,
            }
        )

    def _export(
        self,
        method: bytes,
        path: bytes,
        route: str,
        status: int,
        received_at: float,
        now: float,
        note: RequestNote,
    ) -> None:
        trace = note.trace
        now_ns = time.time_ns()
        name = method.decode("latin-1")
        server = SpanRecord(
            trace.trace_id,
            trace.span_id,
            trace.parent_id,
            f"{name} {route}",
            SERVER,
            _wall_ns(received_at, now, now_ns),
        )
        server.end_ns = now_ns
        server.attributes = [
            ("http.request.method", name),
            ("url.path", path.decode("latin-1")),
            ("http.route", route),
            ("http.response.status_code", status),
        ]
        if note.reason is not None:
            server.attributes.append(("resilience.reason", note.reason))
        server.error = status >= 500
        if note.events is not None:
            server.events = note.events
        spans = [server]
        if note.client_spans is not None:
            spans.extend(note.client_spans)
        assert self.submit is not None
        self.submit(spans)
