"""The cost of exporting spans, off the request path: encoding a batch for OTLP/HTTP.

    python bench/tracing.py [--spans 512] [--repeats 7]

A sampled request leaves a server span and one client span per attempt (see
bench/hotpath.py --case sampled for what it costs on the request path); the exporter turns
each batch of up to 512 into one protobuf body. This prints the CPU per span of that
encoding, so that "sampled at 100 %" can be priced per request: request path + about two
spans' encoding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.core.tracecontext import new_span_id, new_trace_id
from proxy.tracing.otlp import encode
from proxy.tracing.spans import CLIENT, SERVER, SpanRecord


def spans(n: int) -> list[SpanRecord]:
    out = []
    for i in range(n):
        record = SpanRecord(new_trace_id(), new_span_id(), new_span_id(), "GET inventory",
                            SERVER if i % 2 else CLIENT, time.time_ns())  # fmt: skip
        record.end_ns = record.start_ns + 1_500_000
        record.attributes = [
            ("http.request.method", "GET"),
            ("url.path", "/api/v1/productos"),
            ("http.route", "inventory"),
            ("http.response.status_code", 200),
        ]
        out.append(record)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    batch = spans(args.spans)
    timings = []
    for _ in range(args.repeats):
        started = time.process_time()
        body = encode(batch, "resilience-sidecar")
        timings.append((time.process_time() - started) / args.spans * 1e6)
    timings.sort()
    print(
        f"encode: best {timings[0]:.2f} us CPU per span, median {timings[len(timings) // 2]:.2f}"
        f" ({len(body) / args.spans:.0f} bytes per span)"
    )


if __name__ == "__main__":
    main()
