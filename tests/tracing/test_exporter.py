"""The span exporter against a real OTLP/HTTP receiver: batches, drops, never blocks."""

from __future__ import annotations

import asyncio
import socket
import time

from proxy.core.tracecontext import new_span_id, new_trace_id
from proxy.tracing.exporter import SpanExporter
from proxy.tracing.spans import CLIENT, SERVER, SpanEvent, SpanRecord
from tests.tracing.otlp_receiver import OtlpReceiver, attributes


def _span(name: str = "GET api", kind: int = SERVER) -> SpanRecord:
    record = SpanRecord(new_trace_id(), new_span_id(), None, name, kind, time.time_ns())
    record.end_ns = record.start_ns + 1_000_000
    record.attributes = [("http.request.method", "GET"), ("http.response.status_code", 200)]
    return record


class Drops:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, n: int) -> None:
        self.count += n


async def test_spans_arrive_decoded_with_ids_attributes_events_and_status() -> None:
    receiver = await OtlpReceiver().start()
    drops = Drops()
    exporter = SpanExporter(receiver.url, "svc-under-test", drops, interval_s=0.05)
    exporter.start()
    try:
        server = _span()
        server.error = True
        server.events.append(SpanEvent("rate_limited", server.start_ns, [("rule", "login")]))
        client = SpanRecord(server.trace_id, new_span_id(), server.span_id, "GET", CLIENT, 1)
        client.attributes = [("resilience.attempt", 1), ("resilience.outcome", "success")]
        exporter.submit([server, client])
        spans = await receiver.wait_spans(2)
    finally:
        await exporter.close()
        await receiver.stop()
    by_kind = {span.kind: span for span in spans}
    got_server, got_client = by_kind[SERVER], by_kind[CLIENT]
    assert got_server.trace_id.hex() == server.trace_id.decode()
    assert got_client.parent_span_id.hex() == server.span_id.decode()
    assert attributes(got_server) == {
        "http.request.method": "GET",
        "http.response.status_code": 200,
    }
    assert got_server.status.code == 2  # STATUS_CODE_ERROR
    assert [e.name for e in got_server.events] == ["rate_limited"]
    assert attributes(got_client)["resilience.attempt"] == 1
    assert receiver.service_names == ["svc-under-test"]
    assert drops.count == 0


async def test_a_full_batch_leaves_before_the_interval() -> None:
    receiver = await OtlpReceiver().start()
    exporter = SpanExporter(receiver.url, "s", Drops(), batch_max=10, interval_s=30)
    exporter.start()
    try:
        exporter.submit([_span() for _ in range(10)])
        await receiver.wait_spans(10, timeout_s=5)
    finally:
        await exporter.close()
        await receiver.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_collector_that_is_down_costs_dropped_spans_only() -> None:
    drops = Drops()
    url = f"http://127.0.0.1:{_closed_port()}/v1/traces"
    exporter = SpanExporter(url, "s", drops, interval_s=0.02)
    exporter.start()
    try:
        started = time.perf_counter()
        for _ in range(50):
            exporter.submit([_span()])
        assert time.perf_counter() - started < 1.0  # submit never waits on the network
        deadline = time.monotonic() + 10
        while drops.count < 50:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await exporter.close()
    assert drops.count == 50


async def test_a_collector_answering_500_costs_dropped_spans() -> None:
    receiver = await OtlpReceiver(status=500).start()
    drops = Drops()
    exporter = SpanExporter(receiver.url, "s", drops, interval_s=0.02)
    exporter.start()
    try:
        exporter.submit([_span(), _span()])
        deadline = time.monotonic() + 10
        while drops.count < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await exporter.close()
        await receiver.stop()
    assert receiver.spans == []


async def test_a_slow_collector_fills_a_bounded_queue_and_the_rest_is_dropped() -> None:
    receiver = await OtlpReceiver(delay_s=10).start()
    drops = Drops()
    exporter = SpanExporter(
        receiver.url, "s", drops, queue_max=20, batch_max=5, interval_s=0.01, timeout_s=0.3
    )
    exporter.start()
    try:
        for _ in range(100):
            exporter.submit([_span()])
            assert len(exporter._queue) <= 20
        # Whatever did not fit was counted at once; the stalled batch times out and counts.
        assert drops.count >= 100 - 20 - 5
        deadline = time.monotonic() + 10
        while drops.count < 100 - 20 + 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        exporter._timeout_s = 0.05
        await exporter.close()
        await receiver.stop()
