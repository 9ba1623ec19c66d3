"""Alert sinks: alerts at or above a sink's `min_severity` are POSTed to its upstream.

Each sink has its own bounded queue and one background worker, so a sink that is down
(or slow behind its breaker and retries) only fills its own queue; past `queue` alerts
the newest are dropped and counted. Ingest only appends to a deque: WebSocket delivery
never waits for a sink. The worker renders each alert in its sink's `format` just before
sending (`sink_formats`).

The send itself is injected (`SendFn`): the app plugs in the upstream client with its
breaker and retry; `AiohttpSinkSender` is the plain default.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

import aiohttp

from policies.model import SinkPolicy
from proxy.hub.events import SEVERITY_RANK
from proxy.hub.sink_formats import SinkFormatError, render

log = logging.getLogger("proxy.hub.sinks")

SendFn = Callable[[SinkPolicy, bytes], Awaitable[str]]
"""POST one alert; returns the outcome label (`success`, `failure`, `timeout` ...)."""

SinkKey = tuple[str, str]


class SinkObserver(Protocol):
    def sink_delivery(self, sink: str, outcome: str) -> None: ...

    def sink_dropped(self, sink: str) -> None: ...


class _SinkQueue:
    """One sink's waiting alerts and the task that sends them in order."""

    __slots__ = ("items", "policy", "task", "wake")

    def __init__(self, policy: SinkPolicy) -> None:
        self.policy = policy
        self.items: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class SinkDispatcher:
    """Routes alerts to the sinks' queues and runs one worker per sink."""

    def __init__(self, sinks: Iterable[SinkPolicy], send: SendFn, observer: SinkObserver) -> None:
        self._send = send
        self._observer = observer
        self._queues: dict[SinkKey, _SinkQueue] = {}
        self._running = False
        self.reconfigure(sinks)

    def start(self) -> None:
        self._running = True
        for queue in self._queues.values():
            self._spawn(queue)

    def offer(self, severity: str, body: bytes) -> None:
        """Queue an alert for every sink whose `min_severity` it reaches; never blocks."""
        rank = SEVERITY_RANK[severity]
        for queue in self._queues.values():
            policy = queue.policy
            if rank < SEVERITY_RANK[policy.min_severity]:
                continue
            if len(queue.items) >= policy.queue:
                self._observer.sink_dropped(policy.upstream)
                continue
            queue.items.append(body)
            queue.wake.set()

    def reconfigure(self, sinks: Iterable[SinkPolicy]) -> None:
        """Keep the queues of sinks that survive a reload; stop the removed ones."""
        wanted = {_key(s): s for s in sinks}
        for key in list(self._queues):
            if key not in wanted:
                removed = self._queues.pop(key)
                if removed.task is not None:
                    removed.task.cancel()
        for key, policy in wanted.items():
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _SinkQueue(policy)
                if self._running:
                    self._spawn(queue)
            queue.policy = policy

    async def close(self) -> None:
        self._running = False
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, queue: _SinkQueue) -> None:
        name = f"hub-sink-{queue.policy.upstream}"
        queue.task = asyncio.create_task(self._work(queue), name=name)

    async def _work(self, queue: _SinkQueue) -> None:
        while True:
            while not queue.items:
                queue.wake.clear()
                await queue.wake.wait()
            event = queue.items.popleft()
            policy = queue.policy
            try:
                body = render(policy, event, os.environ)
            except SinkFormatError as error:
                log.warning("sink %s: alert not sent: %s", policy.upstream, error)
                self._observer.sink_delivery(policy.upstream, "failure")
                continue
            try:
                outcome = await self._send(policy, body)
            except Exception:
                log.exception("sink %s: send failed", queue.policy.upstream)
                outcome = "failure"
            self._observer.sink_delivery(queue.policy.upstream, outcome)


def _key(sink: SinkPolicy) -> SinkKey:
    return (sink.upstream, sink.path)


class AiohttpSinkSender:
    """POSTs the alert JSON to `urls[sink.upstream] + sink.path`, one timeout per call."""

    def __init__(self, urls: Mapping[str, str], timeout: float = 5.0) -> None:
        self._urls = urls
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, sink: SinkPolicy, body: bytes) -> str:
        base = self._urls.get(sink.upstream)
        if base is None:
            log.warning("sink %s: no such upstream", sink.upstream)
            return "failure"
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = base.rstrip("/") + sink.path
        headers = {"Content-Type": "application/json"}
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return "success" if resp.status < 400 else "failure"
        except TimeoutError:
            return "timeout"
        except aiohttp.ClientConnectionError:
            return "connect_failure"
        except aiohttp.ClientError:
            return "failure"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
