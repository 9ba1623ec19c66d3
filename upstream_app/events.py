"""Event delivery to the sidecar's ingest endpoint, with an outbox for when it is away.

`publish` never blocks and never raises: it stamps the event with an `event_key` (unique
per event) and hands it to one sender task, which delivers in order. While the sidecar
cannot take events (not started yet, restarting, overloaded), they go to the `outbox`
table (at most `outbox_max`; past it the oldest are dropped, counted and logged) and are
retried with capped, jittered exponential backoff, oldest first; newer events queue
behind them, so the order holds. A resend after a lost answer is harmless: the sidecar
recognises the `event_key` and does not publish it twice. A sale never waits for any of it.

Logging is per episode, not per event: one info line when the sidecar goes missing and one
when delivery resumes; a warning only when it stays away longer than `WARN_AFTER_S`, when
it refuses the token, or when it refuses an event for good (a 4xx that no retry can fix).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp

from upstream_app.db import Database
from upstream_app.store import outbox

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 2.0
OUTBOX_MAX = 10_000
BATCH = 100
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0
WARN_AFTER_S = 30.0


class Outcome(enum.Enum):
    """What became of one delivery attempt."""

    DELIVERED = "delivered"
    REFUSED = "refused"  # for good: dropped
    RETRY = "retry"


class EventPublisher:
    """Sends events to `POST {events_url}/api/v1/events` with the service token."""

    def __init__(
        self,
        events_url: str | None,
        token: str | None,
        database: Database,
        *,
        outbox_max: int = OUTBOX_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = f"{events_url.rstrip('/')}/api/v1/events" if events_url else None
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._database = database
        self._outbox_max = outbox_max
        self._clock = clock
        self._memory: deque[dict[str, Any]] = deque()
        self._stored = 0
        self._dropped = 0
        self._wake = asyncio.Event()
        self._down_since: float | None = None
        self._warned = False
        self._task: asyncio.Task[None] | None = None

    def publish(self, event: dict[str, Any]) -> None:
        """Queue `event` for delivery (a no-op without an events URL)."""
        if self._url is None:
            return
        if len(self._memory) >= self._outbox_max:
            self._memory.popleft()
            self._count_dropped(1)
        self._memory.append({**event, "event_key": uuid.uuid4().hex})
        self._wake.set()

    def stats(self) -> dict[str, int]:
        """Events waiting for the sidecar, and events dropped because the outbox was full."""
        return {"waiting": self._stored + len(self._memory), "dropped": self._dropped}

    async def start(self) -> None:
        """Start the sender task (a no-op without an events URL)."""
        if self._url is not None:
            self._stored = await self._database.run(outbox.waiting)
            self._task = asyncio.create_task(self._send_forever(self._url))

    async def stop(self) -> None:
        """Stop the sender; events not delivered yet stay in the outbox for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            await self._spill()

    async def _send_forever(self, url: str) -> None:
        timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
        delay = FIRST_DELAY_S
        async with aiohttp.ClientSession(timeout=timeout, headers=self._headers) as session:
            while True:
                if not self._memory and not self._stored:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                try:
                    if self._stored:
                        done = await self._drain_outbox(session, url)
                    else:
                        done = await self._send_memory(session, url)
                    if not done:
                        await self._spill()
                except Exception:  # the sender must outlive a database hiccup
                    log.exception("event delivery failed; retrying")
                    done = False
                if done:
                    delay = FIRST_DELAY_S
                else:
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, MAX_DELAY_S)

    async def _send_memory(self, session: aiohttp.ClientSession, url: str) -> bool:
        """Deliver what is in memory; False (leaving the rest in place) at the first failure."""
        while self._memory:
            if await self._send(session, url, self._memory[0]) is Outcome.RETRY:
                return False
            self._memory.popleft()
        return True

    async def _drain_outbox(self, session: aiohttp.ClientSession, url: str) -> bool:
        """Deliver one batch of the outbox, oldest first; False at the first failure."""
        await self._spill()  # what came meanwhile goes behind what waits
        batch = await self._database.run(lambda conn: outbox.oldest(conn, BATCH))
        if not batch:
            self._stored = 0
            return True
        handled: int | None = None
        count = 0
        for outbox_id, event in batch:
            if await self._send(session, url, event) is Outcome.RETRY:
                break
            handled, count = outbox_id, count + 1
        if handled is not None:
            last = handled
            await self._database.run(lambda conn: outbox.remove_through(conn, last))
            self._stored = max(0, self._stored - count)
        return count == len(batch)

    async def _spill(self) -> None:
        """Move the events held in memory to the end of the outbox."""
        if not self._memory:
            return
        events = list(self._memory)
        self._memory.clear()
        limit = self._outbox_max
        dropped = await self._database.run(lambda conn: outbox.append(conn, events, limit))
        self._stored = min(self._stored + len(events), limit)
        self._count_dropped(dropped)

    async def _send(
        self, session: aiohttp.ClientSession, url: str, event: dict[str, Any]
    ) -> Outcome:
        try:
            async with session.post(url, json=event) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._unreachable(type(exc).__name__)
            return Outcome.RETRY
        if status < 300:
            self._reachable()
            return Outcome.DELIVERED
        if status in (401, 403):
            self._unreachable(f"answered {status}: check PROXY_EVENTS_TOKEN", urgent=True)
            return Outcome.RETRY
        if status in (408, 429) or status >= 500:
            self._unreachable(f"answered {status}")
            return Outcome.RETRY
        log.warning(
            "events endpoint refused a %s event with %s; dropped it", event.get("type"), status
        )
        return Outcome.REFUSED

    def _unreachable(self, reason: str, *, urgent: bool = False) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            log.info(
                "events endpoint %s not reachable (%s): keeping events in the outbox, retrying",
                self._url,
                reason,
            )
        if not self._warned and (urgent or now - self._down_since >= WARN_AFTER_S):
            self._warned = True
            log.warning(
                "events endpoint %s unavailable for %.0fs (%s): %d events wait in the outbox",
                self._url,
                now - self._down_since,
                reason,
                self.stats()["waiting"],
            )

    def _reachable(self) -> None:
        if self._down_since is not None:
            log.info(
                "events endpoint reachable again after %.1fs: delivering %d waiting events",
                self._clock() - self._down_since,
                self.stats()["waiting"],
            )
            self._down_since = None
            self._warned = False

    def _count_dropped(self, count: int) -> None:
        if count:
            self._dropped += count
            log.warning(
                "event outbox full (%d): dropped the %d oldest events (%d in all)",
                self._outbox_max,
                count,
                self._dropped,
            )
