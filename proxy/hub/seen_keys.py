"""The `event_key`s ingested in the last hour, so a resent event is not published twice.

Keys expire `ttl` after they were first seen. Entries are kept in insertion order, which
is also expiry order (one ttl for all), so forgetting is always from the front: O(1) per
event. Memory is bounded by `capacity`: past it the oldest key is forgotten early (a
resend that late would be published again, which is what an unbounded set would have
prevented at the cost of memory an ingest flood could exhaust). Across replicas sharing
Redis, the broker keeps the same memory in Redis; this set answers resends to this
replica without a round trip and serves alone while Redis is down.
"""

from __future__ import annotations

from collections import OrderedDict

from proxy.clock import Clock

TTL_S = 3600.0
CAPACITY = 50_000


class SeenKeys:
    """Event key -> the id it was first published under, for `ttl` seconds."""

    def __init__(self, clock: Clock, ttl: float = TTL_S, capacity: int = CAPACITY) -> None:
        self._clock = clock
        self._ttl = ttl
        self._capacity = max(1, capacity)
        self._entries: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def first_id(self, key: str) -> int | None:
        """The id `key` was published under, if it was seen within the ttl."""
        self._expire()
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def remember(self, key: str, event_id: int) -> None:
        """Record that `key` was published as `event_id` (a key already held keeps its id)."""
        self._expire()
        if key in self._entries:
            return
        self._entries[key] = (self._clock.monotonic() + self._ttl, event_id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        now = self._clock.monotonic()
        entries = self._entries
        while entries:
            key, (expires, _) = next(iter(entries.items()))
            if expires > now:
                return
            del entries[key]
