"""The shared store: windows in Redis, one atomic Lua call per decision.

Every replica runs the same script (`lua/sliding_window.lua`) against the same sorted sets,
with Redis `TIME` as the clock, so the limit holds across replicas whatever their clocks.
Calls go through a `BatchingClient` (one write per event-loop turn); this module only turns
checks into script calls and replies into decisions. The script answers one string, which
parses in a fraction of what a nested array costs.

Keys (prefix `rl:` by default): `rl:w:RULE:KEY` a sorted set of admitted requests per rule
and key, expiring one window after its last admission; `rl:seq` the counter that makes
their members unique; `rl:u:USER` the user's usage window and `rl:u:USER:SLICE` hashes of
path -> count, expiring with the window (see base.py for usage).

In a Redis Cluster a script may only touch keys of one slot, so the keys of one decision
share the hash tag of the request's identity (`LimitCheck.tag`: user id, or client IP):
`rl:{i:TAG}:seq` (a counter per identity) and `rl:{i:TAG}:w:RULE:KEY`, and a user's usage
keys share `rl:u:{u:USER}`. The price: a rule keyed by IP counts a signed-in user's
requests per (user, IP) there, not per IP (anonymous requests are keyed by IP throughout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from policies.model import StoragePolicy
from proxy.core.window import ADMIT_ALL, conclude
from proxy.storage.base import (
    MAX_USAGE_PATHS,
    OTHER_PATHS,
    USAGE_BUCKETS,
    Decision,
    DecisionDone,
    LimitCheck,
    Usage,
)
from proxy.storage.batching import BatchingClient, ClusterBatchingClient, LuaScript, ScriptCall
from proxy.storage.connect import RedisTarget
from proxy.storage.resp import bulk, bulks, utf8

DEFAULT_PREFIX = "rl:"
MICROS = 1_000_000

USAGE_DELAY_S = 0.05
"""Usage records wait for the next batch of decisions at most this long."""

SLIDING_WINDOW = LuaScript.read("sliding_window")
USAGE_RECORD = LuaScript.read("usage_record")
USAGE_SNAPSHOT = LuaScript.read("usage_snapshot")
SCRIPTS = (SLIDING_WINDOW, USAGE_RECORD, USAGE_SNAPSHOT)


class _DecisionReply:
    """Turns a decision call's reply into the `Decision` its caller waits for."""

    __slots__ = ("checks", "context", "done")

    def __init__(self, checks: Sequence[LimitCheck], done: DecisionDone, context: Any) -> None:
        self.checks = checks
        self.done = done
        self.context = context

    def __call__(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            self.done(self.context, reply)
            return
        try:
            decision = decision_from_reply(self.checks, reply)
        except Exception as exc:  # a reply the script never gives: not Redis being down
            self.done(self.context, exc)
            return
        self.done(self.context, decision)


def decision_from_reply(checks: Sequence[LimitCheck], reply: bytes) -> Decision:
    """Read `sliding_window.lua`'s reply: admitted, now, then (count, oldest) per rule
    (times in microseconds; the oldest is a sorted-set score, -1 when there is none)."""
    fields = reply.split()
    counts: list[int] = []
    oldest: list[float | None] = []
    for i in range(2, len(fields), 2):
        counts.append(int(fields[i]))
        first = fields[i + 1]
        oldest.append(float(first) / MICROS if first != b"-1" else None)
    return conclude(list(checks), counts, oldest, fields[0] == b"1", int(fields[1]) / MICROS)


def rule_args(check: LimitCheck) -> list[bytes]:
    """The script's arguments for one rule: limit, window in microseconds, shadow."""
    window_us = round(check.window_s * MICROS)
    return [b"%d" % check.limit, b"%d" % window_us, b"1" if check.shadow else b"0"]


def window_keys(prefix: str, checks: Sequence[LimitCheck], tagged: bool = False) -> list[bytes]:
    """The script's keys for one decision: the member counter, then one set per check;
    `tagged` (Redis Cluster): all with the identity's hash tag."""
    if tagged:
        first = checks[0]
        prefix = f"{prefix}{{i:{first.tag or first.key}}}:"
    keys = [utf8(f"{prefix}seq")]
    for check in checks:
        keys.append(utf8(f"{prefix}w:{check.rule}:{check.key}"))
    return keys


class RedisStore:
    """Exact sliding windows shared by every replica (`LimitStore`)."""

    __slots__ = (
        "_argv",
        "_client",
        "_prefix",
        "_tagged",
        "_usage",
        "_usage_prefix",
        "_usage_timer",
    )

    def __init__(
        self, client: BatchingClient, *, prefix: str = DEFAULT_PREFIX, tagged: bool = False
    ) -> None:
        self._client = client
        client.extra_calls = self._usage_calls
        self._prefix = prefix
        self._tagged = tagged
        """Keys carry hash tags (a Redis Cluster)."""
        self._usage_prefix = f"{prefix}u:"
        self._argv: dict[tuple[int, float, bool], bytes] = {}
        self._usage: dict[tuple[str, str, float], int] = {}
        """Usage records since the last flush, summed per (user, path, window)."""
        self._usage_timer: asyncio.TimerHandle | None = None

    @classmethod
    def connect(
        cls, target: RedisTarget, *, timeout: float, prefix: str = DEFAULT_PREFIX
    ) -> RedisStore:
        """No socket read timeout: redis-py would arm one per reply, and each batch's own
        `asyncio.timeout` already bounds the whole exchange."""
        redis = target.client(connect_timeout=timeout, read_timeout=None)
        kind = ClusterBatchingClient if target.cluster else BatchingClient
        client = kind(redis, timeout=timeout, scripts=SCRIPTS)
        return cls(client, prefix=prefix, tagged=target.cluster)

    @classmethod
    def from_url(cls, url: str, *, timeout: float, prefix: str = DEFAULT_PREFIX) -> RedisStore:
        return cls.connect(RedisTarget(url), timeout=timeout, prefix=prefix)

    @classmethod
    def from_policy(cls, policy: StoragePolicy, *, prefix: str = DEFAULT_PREFIX) -> RedisStore:
        target = RedisTarget.from_policy(policy)
        return cls.connect(target, timeout=policy.timeout, prefix=prefix)

    def decide(
        self, checks: Sequence[LimitCheck], later: DecisionDone, context: Any
    ) -> Decision | None:
        """Known now only without checks; otherwise `later` hears the batch's answer."""
        if not checks:
            return ADMIT_ALL
        keys = window_keys(self._prefix, checks, self._tagged)
        argv = [self._rule_argv(check) for check in checks]
        payload = SLIDING_WINDOW.call(keys, b"".join(argv), 3 * len(checks))
        self._client.submit(
            ScriptCall(SLIDING_WINDOW, payload, _DecisionReply(checks, later, context))
        )
        return None

    def record_usage(self, user_id: str, path: str, window_s: float) -> None:
        """Counted into the next batch of decisions (or sent within `USAGE_DELAY_S` when no
        decision comes): the requests of one user on one path by then become one record
        with their count. Its outcome is not awaited (usage is best effort)."""
        usage = self._usage
        key = (user_id, path, window_s)
        usage[key] = usage.get(key, 0) + 1
        if self._usage_timer is None:
            self._usage_timer = asyncio.get_running_loop().call_later(
                USAGE_DELAY_S, self._usage_due
            )

    def _usage_due(self) -> None:
        self._usage_timer = None
        if self._usage and self._client.idle:
            self._client.flush_soon()

    def _usage_calls(self) -> list[ScriptCall]:
        """The usage records since the last batch, as fire-and-forget calls."""
        if not self._usage:
            return []
        usage, self._usage = self._usage, {}
        calls = []
        for (user_id, path, window_s), count in usage.items():
            argv = bulks(
                utf8(path),
                b"%d" % max(1, round(window_s * 1000)),
                b"%d" % USAGE_BUCKETS,
                b"%d" % MAX_USAGE_PATHS,
                OTHER_PATHS.encode(),
                b"%d" % count,
            )
            payload = USAGE_RECORD.call((self._usage_key(user_id),), argv, 6)
            calls.append(ScriptCall(USAGE_RECORD, payload, None))
        return calls

    async def usage(self, user_id: str) -> Usage:
        key = self._usage_key(user_id)
        payload = USAGE_SNAPSHOT.call((key,), bulk(b"%d" % USAGE_BUCKETS), 1)
        reply = await self._client.call(USAGE_SNAPSHOT, payload)
        counts: dict[str, int] = {}
        for i in range(0, len(reply), 2):
            path = reply[i].decode("utf-8", "surrogatepass")
            counts[path] = counts.get(path, 0) + int(reply[i + 1])
        return Usage.from_counts(counts)

    async def ping(self) -> bool:
        return await self._client.ping()

    async def close(self) -> None:
        """Send what is queued, let the batches in flight finish, then disconnect."""
        if self._usage_timer is not None:
            self._usage_timer.cancel()
            self._usage_due()
        await self._client.close()

    def _usage_key(self, user_id: str) -> bytes:
        """In a cluster, tagged: the script reads the user's slices next to it (one slot)."""
        if self._tagged:
            return utf8(f"{self._usage_prefix}{{u:{user_id}}}")
        return utf8(f"{self._usage_prefix}{user_id}")

    def _rule_argv(self, check: LimitCheck) -> bytes:
        """limit, window in microseconds, shadow: encoded once per rule configuration."""
        config = (check.limit, check.window_s, check.shadow)
        encoded = self._argv.get(config)
        if encoded is None:
            encoded = bulks(*rule_args(check))
            self._argv[config] = encoded
        return encoded
