"""A real OTLP/HTTP receiver on loopback: decodes each export with opentelemetry-proto."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PATH = "/v1/traces"


def attributes(span: Span) -> dict[str, object]:
    """A span's attributes as a plain dict (the set value of each AnyValue)."""
    out: dict[str, object] = {}
    for kv in span.attributes:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


@dataclass
class OtlpReceiver:
    """Collects decoded spans; `status` and `delay_s` make it fail or stall on purpose."""

    status: int = 200
    delay_s: float = 0.0
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    service_names: list[str] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    @property
    def spans(self) -> list[Span]:
        return [
            span
            for request in self.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    async def _export(self, request: web.Request) -> web.Response:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.Response(status=self.status)
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests.append(message)
        for resource in message.resource_spans:
            for kv in resource.resource.attributes:
                if kv.key == "service.name":
                    self.service_names.append(kv.value.string_value)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post(PATH, self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{PATH}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_spans(self, count: int, timeout_s: float = 10.0) -> list[Span]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.spans) < count:
            assert loop.time() < deadline, f"got {len(self.spans)} spans, wanted {count}"
            await asyncio.sleep(0.02)
        return self.spans
