"""The pipeline's two entries: both run a request through the same stages.

The stages and their order are in `proxy.pipeline.stages`; what a request carries through
them, the runner and the one way a request ends are in `proxy.pipeline.context`.

Each request runs on the `Runtime` it started with: a reload swaps `Pipeline.runtime`, and
requests in flight finish on the policy they began under.
"""

from __future__ import annotations

import asyncio
import time

from proxy.pipeline.context import Lifecycle, RequestContext, Stage
from proxy.pipeline.runtime import Runtime
from proxy.pipeline.stages import STAGES
from proxy.server.http11 import ClientConnection
from proxy.server.request import RequestBody, RequestHead


class Pipeline:
    """Runs each request through `STAGES`, by one of two drivers of the same runner.

    `fast()` takes a request without a body as soon as its head is parsed, inside the
    parser's callback: the stages run there, and whatever waits (a Redis decision, an
    upstream answer) calls back; no task wakes in between. `handle()` is the serving
    task's way, for requests with a body and those pipelined behind another: it runs the
    same stages and awaits the request's end.
    """

    def __init__(self, runtime: Runtime, stages: tuple[Stage, ...] = STAGES) -> None:
        self.runtime = runtime
        self.lifecycle = Lifecycle(stages)

    @property
    def in_flight(self) -> int:
        return self.lifecycle.in_flight

    @property
    def tunnels_open(self) -> int:
        return self.lifecycle.tunnels_open

    def fast(self, conn: ClientConnection, head: RequestHead) -> None:
        """Run a request without a body now, from the parser's callback."""
        ctx = RequestContext(self.lifecycle, conn, head, None, self.runtime, head.received_at)
        conn.active = ctx
        ctx.run()

    async def handle(
        self, conn: ClientConnection, head: RequestHead, body: RequestBody | None
    ) -> None:
        ctx = RequestContext(self.lifecycle, conn, head, body, self.runtime, time.monotonic())
        waiter = ctx.waiter = asyncio.get_running_loop().create_future()
        conn.active = ctx
        ctx.run()
        try:
            await waiter
        except asyncio.CancelledError:
            ctx.cancel()
            raise
