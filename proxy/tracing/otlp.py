"""OTLP/HTTP protobuf encoding of a batch of spans (`ExportTraceServiceRequest`).

Uses the message classes of `opentelemetry-proto` and nothing else of OpenTelemetry: the
SDK's span objects, context propagation and exporter thread would run on the request path
(or contend for the GIL beside the event loop) for what is, here, a slotted record.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from proxy.tracing.spans import Attributes, SpanRecord

SCOPE_NAME = "resilience-sidecar"
CONTENT_TYPE = "application/x-protobuf"


def _value(value: str | int | float | bool) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def _attributes(attributes: Attributes) -> list[KeyValue]:
    return [KeyValue(key=key, value=_value(value)) for key, value in attributes]


def _span(record: SpanRecord) -> Span:
    span = Span(
        trace_id=bytes.fromhex(record.trace_id.decode()),
        span_id=bytes.fromhex(record.span_id.decode()),
        name=record.name,
        kind=record.kind,  # type: ignore[arg-type]
        start_time_unix_nano=record.start_ns,
        end_time_unix_nano=record.end_ns,
        attributes=_attributes(record.attributes),
        events=[
            Span.Event(
                time_unix_nano=event.time_ns,
                name=event.name,
                attributes=_attributes(event.attributes),
            )
            for event in record.events
        ],
    )
    if record.parent_id is not None:
        span.parent_span_id = bytes.fromhex(record.parent_id.decode())
    if record.error:
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR))
    return span


def encode(records: Iterable[SpanRecord], service_name: str) -> bytes:
    """One export request body holding every record, under one resource and scope."""
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[
                        KeyValue(key="service.name", value=AnyValue(string_value=service_name))
                    ]
                ),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name=SCOPE_NAME),
                        spans=[_span(record) for record in records],
                    )
                ],
            )
        ]
    )
    return request.SerializeToString()
