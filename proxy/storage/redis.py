"""The shared store: windows in Redis, one atomic Lua call per decision.

Every replica runs the same script (`lua/sliding_window.lua`) against the same sorted sets,
with Redis `TIME` as the clock, so the limit holds across replicas whatever their clocks.

Batching, because this runs on every request: one `EVALSHA` through redis-py costs about
190 us of client CPU. So calls are not sent one by one: the first call of an event-loop tick
schedules a flush task, every call made before that task runs joins its batch, and the
batch goes out as ONE write on one pooled connection, its replies read back in order (a
non-transactional pipeline). Each call is encoded by its caller as it is made, in RESP
directly: redis-py's generic encoder cost more than everything else here together, and a
call that cannot be encoded then fails alone, never its whole batch. The script answers one
string, which parses in a fraction of what a nested array costs. Batches do not wait for
each other (each takes its own pooled connection), so a slow batch never delays the next.

Keys (prefix `rl:` by default): `rl:w:RULE:KEY` a sorted set of admitted requests per rule
and key, expiring one window after its last admission; `rl:seq` the counter that makes
their members unique; `rl:u:USER` the user's usage window and `rl:u:USER:SLICE` hashes of
path -> count, expiring with the window (see base.py for usage).

Failures: each batch is bounded by `timeout`; any Redis error, refused connection or
timeout reaches every caller of the batch as `StoreUnavailable`. The client makes no
retries of its own (the `redis` breaker and `FallbackStore` decide what happens next).
Scripts are sent by SHA; a `NOSCRIPT` (first use, Redis restarted, `SCRIPT FLUSH`) loads
the script and re-sends the affected calls within the same batch's time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError

from policies.model import StoragePolicy
from proxy.core.window import ADMIT_ALL, conclude
from proxy.storage.base import (
    MAX_USAGE_PATHS,
    OTHER_PATHS,
    USAGE_BUCKETS,
    Decision,
    DecisionDone,
    LimitCheck,
    StoreUnavailable,
    Usage,
    resolve_once,
)

log = logging.getLogger("proxy.storage")

DEFAULT_PREFIX = "rl:"
LUA_DIR = Path(__file__).with_name("lua")
MICROS = 1_000_000

USAGE_DELAY_S = 0.05
"""Usage records wait for the next batch of decisions at most this long."""


def bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def utf8(text: str) -> bytes:
    """Any str, lone surrogates from a hostile token included, encodes and decodes back."""
    return text.encode("utf-8", "surrogatepass")


def bulks(*parts: bytes) -> bytes:
    return b"".join(map(bulk, parts))


def command(*parts: bytes) -> bytes:
    """One RESP command."""
    return b"*%d\r\n%s" % (len(parts), bulks(*parts))


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script kept as a `.lua` file, addressed by its SHA1 as `SCRIPT LOAD` would give."""

    text: bytes
    sha: str
    evalsha: bytes
    """`EVALSHA <sha>` encoded: the start of every call to this script."""

    @classmethod
    def read(cls, name: str) -> LuaScript:
        text = (LUA_DIR / f"{name}.lua").read_bytes()
        sha = hashlib.sha1(text, usedforsecurity=False).hexdigest()
        return cls(text, sha, bulk(b"EVALSHA") + bulk(sha.encode()))

    def call(self, keys: Sequence[bytes], argv: bytes, argc: int) -> bytes:
        """`EVALSHA` with `keys`; `argv` comes encoded (`argc` bulk strings)."""
        count = 3 + len(keys) + argc
        head = b"*%d\r\n%s%s" % (count, self.evalsha, bulk(b"%d" % len(keys)))
        return b"".join([head, *[bulk(key) for key in keys], argv])


SLIDING_WINDOW = LuaScript.read("sliding_window")
USAGE_RECORD = LuaScript.read("usage_record")
USAGE_SNAPSHOT = LuaScript.read("usage_snapshot")
SCRIPTS = (SLIDING_WINDOW, USAGE_RECORD, USAGE_SNAPSHOT)

_NO_REPLY = command(b"CLIENT", b"REPLY", b"SKIP")
"""Sent before a fire-and-forget call: Redis answers neither, so no reply is read."""


class _Call:
    """One script call of a batch. Made per request: a plain class, as a frozen dataclass
    would set each field through `object.__setattr__`."""

    __slots__ = ("on_reply", "payload", "script")

    def __init__(
        self, script: LuaScript, payload: bytes, on_reply: Callable[[Any], None] | None
    ) -> None:
        self.script = script
        self.payload = payload
        """The whole EVALSHA command, encoded."""
        self.on_reply = on_reply
        """Hears the reply, or the `StoreUnavailable` that stands for it. None for
        fire-and-forget calls (usage records): sent with `CLIENT REPLY SKIP`."""


class _DecisionReply:
    """Turns a decision call's reply into the `Decision` its caller waits for."""

    __slots__ = ("checks", "done")

    def __init__(self, checks: Sequence[LimitCheck], done: DecisionDone) -> None:
        self.checks = checks
        self.done = done

    def __call__(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            self.done(reply)
            return
        try:
            decision = decision_from_reply(self.checks, reply)
        except Exception as exc:  # a reply the script never gives: not Redis being down
            self.done(exc)
            return
        self.done(decision)


def _unavailable(cause: BaseException) -> StoreUnavailable:
    """Redis's messages name the host and port, never the password of the URL."""
    error = StoreUnavailable(f"redis: {type(cause).__name__} {cause}".rstrip())
    error.__cause__ = cause
    return error


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


class RedisStore:
    """Exact sliding windows shared by every replica (`LimitStore`)."""

    __slots__ = (
        "_argv",
        "_batches",
        "_client",
        "_pending",
        "_seq_key",
        "_timeout",
        "_usage",
        "_usage_prefix",
        "_usage_timer",
        "_window_prefix",
    )

    def __init__(self, client: Redis, *, timeout: float, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._timeout = timeout
        self._seq_key = utf8(f"{prefix}seq")
        self._window_prefix = f"{prefix}w:"
        self._usage_prefix = f"{prefix}u:"
        self._argv: dict[tuple[int, float, bool], bytes] = {}
        self._pending: list[_Call] = []
        self._usage: dict[tuple[str, str, float], int] = {}
        """Usage records since the last flush, summed per (user, path, window)."""
        self._usage_timer: asyncio.TimerHandle | None = None
        self._batches: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, *, timeout: float, prefix: str = DEFAULT_PREFIX) -> RedisStore:
        """A client that never retries on its own; every wait is bounded by `timeout`.

        No socket read timeout: redis-py would arm one per reply, and each batch's own
        `asyncio.timeout` already bounds the whole exchange.
        """
        client = Redis.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            driver_info=None,
        )
        return cls(client, timeout=timeout, prefix=prefix)

    @classmethod
    def from_policy(cls, policy: StoragePolicy, *, prefix: str = DEFAULT_PREFIX) -> RedisStore:
        return cls.from_url(policy.redis_url, timeout=policy.timeout, prefix=prefix)

    def decide(self, checks: Sequence[LimitCheck], later: DecisionDone) -> Decision | None:
        """Known now only without checks; otherwise `later` hears the batch's answer."""
        if not checks:
            return ADMIT_ALL
        prefix = self._window_prefix
        keys = [self._seq_key]
        argv = []
        for check in checks:
            keys.append(utf8(f"{prefix}{check.rule}:{check.key}"))
            argv.append(self._rule_argv(check))
        payload = SLIDING_WINDOW.call(keys, b"".join(argv), 3 * len(checks))
        self._submit(_Call(SLIDING_WINDOW, payload, _DecisionReply(checks, later)))
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
        if self._usage and not self._pending:
            self._schedule_flush()

    def _usage_calls(self, usage: dict[tuple[str, str, float], int]) -> list[_Call]:
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
            payload = USAGE_RECORD.call((utf8(f"{self._usage_prefix}{user_id}"),), argv, 6)
            calls.append(_Call(USAGE_RECORD, payload, None))
        return calls

    async def usage(self, user_id: str) -> Usage:
        key = utf8(f"{self._usage_prefix}{user_id}")
        payload = USAGE_SNAPSHOT.call((key,), bulk(b"%d" % USAGE_BUCKETS), 1)
        reply = await self._call(USAGE_SNAPSHOT, payload)
        counts: dict[str, int] = {}
        for i in range(0, len(reply), 2):
            path = reply[i].decode("utf-8", "surrogatepass")
            counts[path] = counts.get(path, 0) + int(reply[i + 1])
        return Usage.from_counts(counts)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.ping()
        except Exception:
            return False
        return True

    async def close(self) -> None:
        """Send what is queued, let the batches in flight finish (each is bounded by the
        timeout), then disconnect."""
        if self._usage_timer is not None:
            self._usage_timer.cancel()
            self._usage_due()
        while self._batches:
            await asyncio.gather(*self._batches)
        await self._client.aclose()

    def _rule_argv(self, check: LimitCheck) -> bytes:
        """limit, window in microseconds, shadow: encoded once per rule configuration."""
        config = (check.limit, check.window_s, check.shadow)
        encoded = self._argv.get(config)
        if encoded is None:
            window_us = round(check.window_s * MICROS)
            shadow = b"1" if check.shadow else b"0"
            encoded = bulks(b"%d" % check.limit, b"%d" % window_us, shadow)
            self._argv[config] = encoded
        return encoded

    async def _call(self, script: LuaScript, payload: bytes) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit(_Call(script, payload, resolve_once(future)))
        reply = await future
        if isinstance(reply, StoreUnavailable):
            raise reply
        return reply

    def _submit(self, call: _Call) -> None:
        pending = self._pending
        pending.append(call)
        if len(pending) == 1:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        """One flush per event-loop turn takes everything queued until it runs."""
        task = asyncio.get_running_loop().create_task(self._flush())
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _flush(self) -> None:
        """Send every call queued since the last flush; every caller gets an answer."""
        batch, self._pending = self._pending, []
        if self._usage:
            usage, self._usage = self._usage, {}
            batch = self._usage_calls(usage) + batch  # a read in this batch sees them
        awaited = [call for call in batch if call.on_reply is not None]
        replies: Iterable[Any]
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._execute(batch, awaited)
        except asyncio.CancelledError as exc:
            self._settle(awaited, [exc] * len(awaited))
            raise
        except Exception as exc:  # whatever broke, no caller may be left waiting
            replies = [exc] * len(awaited)
        self._settle(awaited, replies)

    async def _execute(self, batch: list[_Call], awaited: list[_Call]) -> list[Any]:
        """Replies to the `awaited` calls of `batch`, in order.

        After a NOSCRIPT (a restarted or flushed Redis) every script is loaded again, the
        fire-and-forget ones too: a usage record lost in between is best effort's price.
        """
        payloads = [
            call.payload if call.on_reply is not None else _NO_REPLY + call.payload
            for call in batch
        ]
        replies = await self._exchange(payloads, len(awaited))
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            loads = [command(b"SCRIPT", b"LOAD", script.text) for script in SCRIPTS]
            again = await self._exchange(
                loads + [awaited[i].payload for i in missing], len(loads) + len(missing)
            )
            for i, reply in zip(missing, again[len(loads) :], strict=True):
                replies[i] = reply
        return replies

    async def _exchange(self, payloads: list[bytes], expected: int) -> list[Any]:
        """Write every command at once on one pooled connection; read `expected` replies.

        Calls sent after `CLIENT REPLY SKIP` have none.

        A reply that is a Redis error is returned in its place; a broken or cancelled
        exchange raises, and redis-py disconnects the connection before it goes back.
        """
        pool = self._client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(b"".join(payloads), check_health=False)
            replies: list[Any] = []
            for _ in range(expected):
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        finally:
            await pool.release(connection)

    @staticmethod
    def _settle(batch: list[_Call], replies: Iterable[Any]) -> None:
        """Every awaited call hears its reply (an error as `StoreUnavailable`), whatever
        another caller's continuation does."""
        for call, reply in zip(batch, replies, strict=True):
            on_reply = call.on_reply
            if on_reply is None:
                continue
            try:
                on_reply(_unavailable(reply) if isinstance(reply, BaseException) else reply)
            except Exception:
                log.exception("a rate-limit decision's continuation failed")
