"""Sends finished spans to an OTLP/HTTP collector in batches, off the request path.

The request path only appends to a bounded deque (`submit`); one task takes up to
`batch_max` spans at a time, encodes them and POSTs them, one export in flight at most. A
collector that is down, slow or answering an error costs the spans of that batch (and, once
the queue is full, every new span): they are counted as dropped, and no request waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import aiohttp

from proxy.tracing.otlp import CONTENT_TYPE, encode
from proxy.tracing.spans import SpanRecord

log = logging.getLogger("proxy.tracing")

QUEUE_MAX = 4096
BATCH_MAX = 512
INTERVAL_S = 1.0
EXPORT_TIMEOUT_S = 5.0


class SpanExporter:
    """A bounded span queue and the task that empties it towards `endpoint`."""

    def __init__(
        self,
        endpoint: str,
        service_name: str,
        on_dropped: Callable[[int], None],
        *,
        queue_max: int = QUEUE_MAX,
        batch_max: int = BATCH_MAX,
        interval_s: float = INTERVAL_S,
        timeout_s: float = EXPORT_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self.service_name = service_name
        self._on_dropped = on_dropped
        self._queue: deque[SpanRecord] = deque()
        self._queue_max = queue_max
        self._batch_max = batch_max
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._failing = False

    def submit(self, spans: list[SpanRecord]) -> None:
        """Queue a request's spans; what does not fit is dropped and counted at once."""
        room = self._queue_max - len(self._queue)
        if room < len(spans):
            self._on_dropped(len(spans) - max(room, 0))
            spans = spans[: max(room, 0)]
        self._queue.extend(spans)
        if len(self._queue) >= self._batch_max:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the task; spans still queued get one last export attempt."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while self._queue:
            await self._export_one_batch()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            while self._queue:
                await self._export_one_batch()

    async def _export_one_batch(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(self._batch_max, len(self._queue)))]
        try:
            body = encode(batch, self.service_name)
            session = self._session
            if session is None:
                session = self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self._timeout_s)
                )
            async with session.post(
                self.endpoint, data=body, headers={"Content-Type": CONTENT_TYPE}
            ) as answer:
                await answer.read()
                if answer.status >= 300:
                    raise _Refused(answer.status)
        except asyncio.CancelledError:
            self._on_dropped(len(batch))
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, _Refused) as error:
            self._on_dropped(len(batch))
            if not self._failing:
                self._failing = True
                log.warning(
                    "span export failed; spans are dropped until the collector answers",
                    extra={"endpoint": self.endpoint, "error": str(error) or type(error).__name__},
                )
            return
        if self._failing:
            self._failing = False
            log.info("span export works again", extra={"endpoint": self.endpoint})


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"collector answered {status}")
