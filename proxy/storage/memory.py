"""The in-process store: one replica's windows, for `backend: memory` and the Redis fallback.

Memory stays bounded without a background task. Keys live in an ordered map, the most
recently used last. Every decision moves the keys it touches to the end (a key at most once
per `RECENT_OPS` operations) and looks at a few keys at the front (one more than it could
have created): an idle key (nothing left in its window) is dropped, a live one goes to the
back. So every key is revisited and dropped soon after it goes idle. Past the hard cap the
least recently used key is evicted even if it is live: that key then starts afresh (its
client may get up to one extra window of requests), the price of a memory bound under a
flood of distinct keys.

`scale` is for the fallback: while Redis is down each of `expected_replicas` replicas admits
`limit // scale` (at least 1), so together they stay near the shared limit. Results then
report the scaled limit, which is the one this replica enforces.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from proxy.clock import SYSTEM_CLOCK, Clock
from proxy.core.window import ADMIT_ALL, SlidingLog, decide
from proxy.storage.base import (
    MAX_USAGE_PATHS,
    OTHER_PATHS,
    USAGE_BUCKETS,
    Decision,
    DecisionDone,
    LimitCheck,
    Usage,
)

DEFAULT_MAX_KEYS = 1_000_000
DEFAULT_MAX_USERS = 100_000


class _Expiring(Protocol):
    def idle(self, now: float) -> bool: ...


K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=_Expiring)


SWEEP_EVERY = 64
"""Operations between two periodic sweeps of `SWEEP_VISITS` entries."""

SWEEP_VISITS = 8
"""Besides, every new key pays for sweeping two old ones: idle keys leave as fast as new
ones come, so memory follows the live keys, not every key ever seen."""


RECENT_OPS = 256
"""A key used again within this many operations keeps its place: moving it costs more than
the rest of a lookup. So the order is least recently used to within that many operations."""


class _Slot(Generic[V]):
    __slots__ = ("touched", "value")

    def __init__(self, value: V, touched: int) -> None:
        self.value = value
        self.touched = touched
        """The operation count when the key last moved to the back."""


class IdleSweptMap(Generic[K, V]):
    """A map with a hard size cap whose idle values are swept a few at a time."""

    __slots__ = ("_entries", "_ops", "_ops_total", "max_size")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._entries: OrderedDict[K, _Slot[V]] = OrderedDict()
        self._ops = 0
        self._ops_total = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The value, marked as just used."""
        slot = self._entries.get(key)
        if slot is None:
            return None
        if self._ops_total - slot.touched >= RECENT_OPS:
            self._entries.move_to_end(key)
            slot.touched = self._ops_total
        return slot.value

    def peek(self, key: K) -> V | None:
        """The value, without changing the order (for reads that do not make a key live)."""
        slot = self._entries.get(key)
        return None if slot is None else slot.value

    def put(self, key: K, value: V) -> None:
        entries = self._entries
        if len(entries) >= self.max_size and key not in entries:
            entries.popitem(last=False)
        entries[key] = _Slot(value, self._ops_total)

    def tick(self, now: float, created: int) -> None:
        """Call once per operation, after it used its values (a new one may look idle
        until then): two visits per key it `created`, `SWEEP_VISITS` every `SWEEP_EVERY`."""
        visits = 2 * created
        self._ops_total += 1
        self._ops += 1
        if self._ops >= SWEEP_EVERY:
            self._ops = 0
            visits += SWEEP_VISITS
        if visits:
            self.sweep(now, visits)

    def sweep(self, now: float, visits: int) -> None:
        """Look at up to `visits` least recently used entries: drop the idle, rotate the rest."""
        entries = self._entries
        for _ in range(min(visits, len(entries))):
            key, slot = entries.popitem(last=False)
            if not slot.value.idle(now):
                entries[key] = slot


class UserUsage:
    """One user's request counts per path, in `USAGE_BUCKETS` slices of their window."""

    __slots__ = ("buckets", "width", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.width = window_s / USAGE_BUCKETS
        self.buckets: deque[tuple[int, dict[str, int]]] = deque()

    def record(self, path: str, now: float) -> None:
        index = int(now // self.width)
        buckets = self.buckets
        if not buckets or buckets[-1][0] != index:
            while buckets and buckets[0][0] <= index - USAGE_BUCKETS:
                buckets.popleft()
            buckets.append((index, {}))
        counts = buckets[-1][1]
        if path not in counts and len(counts) >= MAX_USAGE_PATHS:
            path = OTHER_PATHS
        counts[path] = counts.get(path, 0) + 1

    def counts(self, now: float) -> dict[str, int]:
        first = int(now // self.width) - USAGE_BUCKETS + 1
        total: dict[str, int] = {}
        for index, counts in self.buckets:
            if index >= first:
                for path, n in counts.items():
                    total[path] = total.get(path, 0) + n
        return total

    def idle(self, now: float) -> bool:
        buckets = self.buckets
        return not buckets or buckets[-1][0] <= int(now // self.width) - USAGE_BUCKETS


class MemoryUsage:
    """Per-user usage for one process; a user whose role window changed starts afresh."""

    __slots__ = ("_clock", "_users")

    def __init__(self, clock: Clock = SYSTEM_CLOCK, max_users: int = DEFAULT_MAX_USERS) -> None:
        self._clock = clock
        self._users: IdleSweptMap[str, UserUsage] = IdleSweptMap(max_users)

    def __len__(self) -> int:
        return len(self._users)

    def record(self, user_id: str, path: str, window_s: float) -> None:
        now = self._clock.monotonic()
        user = self._users.get(user_id)
        created = user is None or user.window_s != window_s
        if created:
            user = UserUsage(window_s)
            self._users.put(user_id, user)
        assert user is not None
        user.record(path, now)
        self._users.tick(now, int(created))

    def snapshot(self, user_id: str) -> Usage:
        user = self._users.peek(user_id)
        return Usage.from_counts(user.counts(self._clock.monotonic()) if user else {})


class MemoryStore:
    """Exact sliding windows in this process (`LimitStore`)."""

    __slots__ = ("_clock", "_logs", "_usage", "scale")

    def __init__(
        self,
        clock: Clock = SYSTEM_CLOCK,
        *,
        scale: int = 1,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_users: int = DEFAULT_MAX_USERS,
    ) -> None:
        if scale < 1:
            raise ValueError("scale must be at least 1")
        self._clock = clock
        self.scale = scale
        self._logs: IdleSweptMap[tuple[str, str], SlidingLog] = IdleSweptMap(max_keys)
        self._usage = MemoryUsage(clock, max_users)

    @property
    def key_count(self) -> int:
        """(rule, key) windows held now, for tests and the memory bound."""
        return len(self._logs)

    def decide(self, checks: Sequence[LimitCheck], later: DecisionDone, context: Any) -> Decision:
        """Always known now: `later` is never called."""
        if not checks:
            return ADMIT_ALL
        now = self._clock.monotonic()
        logs = self._logs
        scale = self.scale
        rules: list[LimitCheck] = []
        found: list[SlidingLog] = []
        created = 0
        for check in checks:
            if scale > 1:
                limit = max(1, check.limit // scale)
                check = LimitCheck(check.rule, check.key, limit, check.window_s, check.shadow)
            id_ = (check.rule, check.key)
            log = logs.get(id_)
            if log is None:
                log = SlidingLog(check.limit, check.window_s)
                logs.put(id_, log)
                created += 1
            elif log.limit != check.limit or log.window_s != check.window_s:
                log.reconfigure(check.limit, check.window_s)
            rules.append(check)
            found.append(log)
        decision = decide(rules, found, now)
        logs.tick(now, created)
        return decision

    def record_usage(self, user_id: str, path: str, window_s: float) -> None:
        self._usage.record(user_id, path, window_s)

    async def usage(self, user_id: str) -> Usage:
        return self._usage.snapshot(user_id)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        """Nothing to release: the windows die with the process."""
