"""A bounded LRU of verdicts that expire: the token verifier's memory of recent tokens.

Every operation is O(1) (an `OrderedDict` kept in recency order). Each entry carries its own
deadline, so a verdict is never served after the moment the token itself would be refused;
the size bound keeps memory fixed whatever clients send. Not thread-safe: one cache belongs
to one verifier on one event loop, which is how the server runs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class TokenCache(Generic[V]):
    """At most `max_entries` values, each valid while `now < valid_until`."""

    __slots__ = ("_entries", "_max_entries")

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("a token cache holds at least one entry")
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[V, float]] = OrderedDict()

    def get(self, key: bytes, now: float) -> V | None:
        """The value under `key` if still valid at `now` (it becomes the most recent)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, valid_until = entry
        if now >= valid_until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: bytes, value: V, valid_until: float) -> None:
        """Store `value` until `valid_until`, evicting the least recently used past the bound."""
        self._entries[key] = (value, valid_until)
        self._entries.move_to_end(key)
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
