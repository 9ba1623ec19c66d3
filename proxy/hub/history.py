"""The last `websocket.history` events and what a `resume` replays from them.

Ids are consecutive (one counter), so a client that saw up to N misses nothing exactly
when the oldest event still held is at most N + 1. Brokers hold events differently (a
local ring, a Redis stream) but answer a resume with the same rule, `plan_replay`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.hub.events import Event


@dataclass(frozen=True, slots=True)
class Replay:
    """What to send for `resume`: `gap_oldest` is set when events after N were lost."""

    events: tuple[Event, ...]
    gap_oldest: int | None = None


def plan_replay(last_id: int, held_after: Sequence[Event], latest_id: int) -> Replay:
    """The replay for a client that saw up to `last_id`.

    `held_after` are the held events with id > last_id, oldest first; `latest_id` is the
    newest id ever assigned, so an empty history still tells a client it missed some.
    """
    if held_after:
        oldest = held_after[0].id
        gap = oldest if oldest > last_id + 1 else None
        return Replay(tuple(held_after), gap)
    if latest_id > last_id:
        return Replay((), latest_id + 1)
    return Replay(())


class History:
    """A ring of the newest events in the order this process delivered them."""

    __slots__ = ("_events", "latest_id")

    def __init__(self, size: int) -> None:
        self._events: deque[Event] = deque(maxlen=size)
        self.latest_id = 0

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: Event) -> None:
        self._events.append(event)
        self.latest_id = max(self.latest_id, event.id)

    def resize(self, size: int) -> None:
        """Apply a reloaded `history`, keeping the newest events that still fit."""
        if size != self._events.maxlen:
            self._events = deque(self._events, maxlen=size)

    def replay(self, last_id: int) -> Replay:
        return plan_replay(last_id, [e for e in self._events if e.id > last_id], self.latest_id)
