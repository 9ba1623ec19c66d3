"""Where event ids come from and how an event reaches every replica.

`MemoryBroker` serves one process: a counter and a ring. `RedisBroker` serves replicas
sharing a Redis, with a Stream rather than pub/sub + a list because:

- one Lua script takes the id (INCR) and appends (XADD `MAXLEN ~ history`) atomically, so
  stream order IS id order, the same on every replica;
- the stream entry id is `EVENT_ID-0`, so a resume is one `XREVRANGE` from `N+1`, and it
  works on whichever replica a client reconnects to;
- readers keep a cursor: a replica whose link to Redis broke reads what it missed when it
  comes back, where pub/sub would have dropped it;
- an event's `event_key` is remembered for an hour by the same script (checked, then set
  with the id), so a resend is not published twice, whichever replica it reaches.

Each replica runs one `XREAD BLOCK` loop and fans out what arrives, its own events
included, so every replica delivers in the same order.

The stream and its id counter share one hash tag (`{resilience_proxy:events}:stream` and
`:id`): in a Redis Cluster both live in one slot, so the publish script may touch both.

Redis unreachable: the replica keeps serving its own clients. It gives ingested events
the next LOCAL id (after the highest id it has delivered), so its clients never see ids
go backwards; resume is answered from its local ring. Events do not cross replicas while
it lasts. When the reader reconnects (exponential backoff, capped), it reads the stream
from its cursor, and the publish script lifts the counter above every id this replica
handed out, so new ids stay increasing here. What the outage costs (documented, not
hidden): local ids may repeat ids other replicas assigned meanwhile; a client may see
those replicas' outage events late, after higher local ids; and a publish that timed out
may still be applied by a slow Redis later, so that event arrives twice, under two ids.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from proxy.hub.events import Accepted, Event, Published, make_event
from proxy.hub.history import History, Replay, plan_replay

log = logging.getLogger("proxy.hub.broker")

Deliver = Callable[[Event], None]
"""Called once per event, in id order, on the event loop."""

_REDIS_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


class RedisClients(Protocol):
    """Makes clients for one Redis, a cluster or a Sentinel-named master (`RedisTarget`)."""

    def client(self, *, connect_timeout: float, read_timeout: float | None) -> Any: ...


class _Url:
    """One server by URL."""

    def __init__(self, url: str) -> None:
        self.url = url

    def client(self, *, connect_timeout: float, read_timeout: float | None) -> Any:
        return Redis.from_url(
            self.url,
            socket_timeout=read_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 0),
        )


SEEN_KEY_TTL_S = 3600
"""How long Redis remembers an event_key (CONTRACT 14: "seen in the last hour")."""

# KEYS: counter, stream[, seen key]. ARGV: maxlen, type, payload, floor (highest id the
# caller used)[, seconds the seen key is kept]. Returns {id, 1}, or {first id, 0} for an
# event whose key was seen: the check and the publish are one atomic step.
_PUBLISH_LUA = """
if #KEYS > 2 then
  local first = redis.call('GET', KEYS[3])
  if first then return {tonumber(first), 0} end
end
local id = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[4])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then
  local last_id = tonumber(string.match(last[1][1], '^(%d+)'))
  if last_id > floor then floor = last_id end
end
if id <= floor then
  id = floor + 1
  redis.call('SET', KEYS[1], id)
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id .. '-0', 't', ARGV[2], 'e', ARGV[3])
if #KEYS > 2 then redis.call('SET', KEYS[3], id, 'EX', ARGV[5]) end
return {id, 1}
"""

# KEYS: counter, stream. ARGV: the highest id the caller has delivered.
# Lifts the counter to it (a Redis that lost its data restarts below it) and returns the
# stream's last entry id, so the caller can tell that the stream was reset under it.
_RESYNC_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then return last[1][1] end
return '0-0'
"""


class Broker(Protocol):
    """Assigns ids, delivers every event to `deliver` in order, answers resumes."""

    @property
    def degraded(self) -> bool:
        """True while events cannot cross replicas (Redis unreachable)."""
        ...

    async def start(self, deliver: Deliver) -> None: ...

    async def publish(self, accepted: Accepted) -> Published:
        """Assign an id and deliver; an `event_key` seen within the hour is not published
        again (`Published.fresh` False, with the first id) where the broker can tell."""
        ...

    async def replay(self, last_id: int) -> Replay: ...

    def set_history(self, size: int) -> None: ...

    async def close(self) -> None: ...


class MemoryBroker:
    """One process: ids from a local counter, history in a ring."""

    def __init__(self, history: int) -> None:
        self._history = History(history)
        self._deliver: Deliver | None = None

    @property
    def degraded(self) -> bool:
        return False

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, accepted: Accepted) -> Published:
        event = make_event(self._history.latest_id + 1, accepted.type, accepted.payload)
        self._history.append(event)
        if self._deliver is not None:
            self._deliver(event)
        return Published(event.id)

    async def replay(self, last_id: int) -> Replay:
        return self._history.replay(last_id)

    def set_history(self, size: int) -> None:
        self._history.resize(size)

    async def close(self) -> None:
        self._deliver = None


class RedisBroker:
    """Replicas sharing a Redis Stream; see the module docstring for the outage rules."""

    def __init__(
        self,
        where: str | RedisClients,
        *,
        history: int,
        prefix: str = "resilience_proxy:events",
        timeout: float = 0.5,
        block: float = 1.0,
        max_backoff: float = 2.0,
    ) -> None:
        self._where = _Url(where) if isinstance(where, str) else where
        self._history_size = history
        self._history = History(history)
        self._counter = f"{{{prefix}}}:id"
        self._stream = f"{{{prefix}}}:stream"
        # + event_key. Named after the stream, so it has the stream's hash tag (cluster).
        self._seen = f"{self._stream}:seen:"
        self._timeout = timeout
        self._block = block
        self._max_backoff = max_backoff
        self._deliver: Deliver | None = None
        self._cursor: bytes | None = None
        self._down = True
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._reader: Any = None
        """`Redis` or `RedisCluster` clients."""
        self._script: Any = None
        self._resync_script: Any = None

    @property
    def degraded(self) -> bool:
        return self._down

    def _connect(self, read_timeout: float) -> Any:
        # No library retries: a failure falls back at once; the read loop reconnects.
        return self._where.client(connect_timeout=self._timeout, read_timeout=read_timeout)

    async def start(self, deliver: Deliver) -> None:
        """Connect and take the stream's tail as the cursor; a dead Redis only degrades."""
        self._deliver = deliver
        self._client = self._connect(self._timeout)
        self._reader = self._connect(self._block + self._timeout + 1.0)
        self._script = self._client.register_script(_PUBLISH_LUA)
        self._resync_script = self._reader.register_script(_RESYNC_LUA)
        try:
            await self._resync()
            self._down = False
        except _REDIS_ERRORS:
            log.warning("event broker: Redis unreachable at start; serving local clients only")
        self._task = asyncio.create_task(self._read_loop(), name="hub-redis-reader")

    async def _resync(self) -> None:
        """Lift the counter above what we delivered; restart the cursor if the stream reset.

        Run at (re)connection and whenever XREAD waited in vain: a Redis that lost its data
        (restart without persistence, failover) would otherwise leave the cursor above
        every new id, and this replica deaf.
        """
        keys = [self._counter, self._stream]
        tail = bytes(await self._resync_script(keys=keys, args=[self._history.latest_id]))
        if self._cursor is None:
            self._cursor = tail
        elif _id_number(tail) < _id_number(self._cursor):
            log.warning("event broker: the Redis stream was reset; reading it from the start")
            self._cursor = b"0-0"

    async def publish(self, accepted: Accepted) -> Published:
        if not self._down:
            keys = [self._counter, self._stream]
            floor = self._history.latest_id
            args = [max(self._history_size, 1), accepted.type, accepted.payload, floor]
            if accepted.event_key is not None:
                keys.append(self._seen + accepted.event_key)
                args.append(SEEN_KEY_TTL_S)
            try:
                event_id, fresh = await self._script(keys=keys, args=args)
            except _REDIS_ERRORS:
                self._mark_down()
            else:
                if fresh:
                    self._wake.set()
                return Published(int(event_id), bool(fresh))
        event = make_event(self._history.latest_id + 1, accepted.type, accepted.payload)
        self._accept(event)
        return Published(event.id)

    async def replay(self, last_id: int) -> Replay:
        if self._down or self._client is None:
            return self._history.replay(last_id)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                if self._history_size:
                    start = f"{last_id + 1}-0"
                    pipe.xrevrange(self._stream, "+", start, count=self._history_size)
                pipe.get(self._counter)
                replies = await pipe.execute()
        except _REDIS_ERRORS:
            self._mark_down()
            return self._history.replay(last_id)
        entries = replies[0] if self._history_size else []
        events = [_event_from(entry_id, fields) for entry_id, fields in reversed(entries)]
        return plan_replay(last_id, events, int(replies[-1] or 0))

    def set_history(self, size: int) -> None:
        self._history_size = size
        self._history.resize(size)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for client in (self._client, self._reader):
            if client is not None:
                await client.aclose()
        self._deliver = None

    def _mark_down(self) -> None:
        if not self._down:
            log.warning("event broker: Redis unreachable; serving local clients only")
        self._down = True

    def _mark_up(self) -> None:
        if self._down:
            log.info("event broker: Redis reachable; cross-replica delivery on")
        self._down = False

    def _accept(self, event: Event) -> None:
        self._history.append(event)
        if self._deliver is not None:
            self._deliver(event)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        delay = 0.05
        while True:
            try:
                if self._down or self._cursor is None:
                    await self._resync()
                    self._mark_up()
                assert self._cursor is not None  # set by _resync
                reply = await self._reader.xread(
                    {self._stream: self._cursor}, count=1000, block=int(self._block * 1000)
                )
                if not reply:
                    await self._resync()
                    continue
            except _REDIS_ERRORS:
                self._mark_down()
                await self._backoff(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            delay = 0.05
            for entry_id, fields in _entries(reply):
                self._cursor = bytes(entry_id)
                self._accept(_event_from(entry_id, fields))

    async def _backoff(self, delay: float) -> None:
        """Wait about `delay` (jittered); a successful publish cuts it short."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), delay * random.uniform(0.5, 1.0))
        except TimeoutError:
            return


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREAD's entries: RESP2 `[[stream, [entry...]]]` or RESP3 `{stream: [[entry...]]}`."""
    if isinstance(reply, dict):
        return [entry for batches in reply.values() for batch in batches for entry in batch]
    return [entry for _name, entries in reply or () for entry in entries]


def _id_number(entry_id: bytes) -> int:
    """The event id of a stream entry id `N-0`."""
    return int(bytes(entry_id).split(b"-", 1)[0])


def _event_from(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    event_id = _id_number(entry_id)
    return make_event(event_id, fields[b"t"].decode(), bytes(fields[b"e"]))
