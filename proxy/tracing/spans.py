"""Spans as the request path records them: plain slotted objects, encoded later.

A sampled request builds one server span and one client span per upstream attempt; the
protobuf encoding happens in the exporter's batch, off the request path.
"""

from __future__ import annotations

from typing import Final

SERVER: Final = 2
"""OTLP `SPAN_KIND_SERVER`."""
CLIENT: Final = 3
"""OTLP `SPAN_KIND_CLIENT`."""

AttributeValue = str | int | float | bool
Attributes = list[tuple[str, AttributeValue]]


class SpanEvent:
    """Something that happened during a span (a rate-limit or breaker refusal)."""

    __slots__ = ("attributes", "name", "time_ns")

    def __init__(self, name: str, time_ns: int, attributes: Attributes) -> None:
        self.name = name
        self.time_ns = time_ns
        self.attributes = attributes


class SpanRecord:
    """One finished span; ids are lower-case hex bytes as they travel in `traceparent`."""

    __slots__ = (
        "attributes",
        "end_ns",
        "error",
        "events",
        "kind",
        "name",
        "parent_id",
        "span_id",
        "start_ns",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: bytes,
        span_id: bytes,
        parent_id: bytes | None,
        name: str,
        kind: int,
        start_ns: int,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = start_ns
        self.attributes: Attributes = []
        self.events: list[SpanEvent] = []
        self.error = False
