"""Best-effort event publishing to the sidecar's ingest endpoint.

`publish` never blocks and never raises: events go into a bounded queue that one
background task drains. When the sidecar is slow or down, events are logged and dropped,
so a sale never waits for (or fails because of) the sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
SEND_TIMEOUT_S = 2.0


class EventPublisher:
    """Sends events to `POST {events_url}/api/v1/events` with the service token."""

    def __init__(self, events_url: str | None, token: str | None) -> None:
        self._url = f"{events_url.rstrip('/')}/api/v1/events" if events_url else None
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None

    def publish(self, event: dict[str, Any]) -> None:
        """Queue `event` for sending; drop it (with a log line) when the queue is full."""
        if self._url is None:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("event queue full, dropping %s event", event.get("type"))

    async def start(self) -> None:
        """Start the sender task (a no-op without an events URL)."""
        if self._url is not None:
            self._task = asyncio.create_task(self._send_forever(self._url))

    async def stop(self) -> None:
        """Stop the sender; events still queued are dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _send_forever(self, url: str) -> None:
        timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout, headers=self._headers) as session:
            while True:
                event = await self._queue.get()
                await self._send(session, url, event)

    async def _send(self, session: aiohttp.ClientSession, url: str, event: dict[str, Any]) -> None:
        try:
            async with session.post(url, json=event) as response:
                if response.status >= 300:
                    log.warning(
                        "events endpoint answered %s, dropped %s event",
                        response.status,
                        event.get("type"),
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "events endpoint unreachable (%s), dropped %s event",
                type(exc).__name__,
                event.get("type"),
            )
