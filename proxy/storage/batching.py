"""A Redis client that sends the script calls of one event-loop turn as one write.

One `EVALSHA` through redis-py costs about 190 us of client CPU, and this runs on every
request. So calls are not sent one by one: the first call of an event-loop tick schedules
a flush task, every call made before that task runs joins its batch, and the batch goes out
as ONE write on one pooled connection, its replies read back in order (a non-transactional
pipeline). Each call comes encoded by its caller (`resp`), so a call that cannot be encoded
fails alone, never its whole batch. Batches do not wait for each other (each takes its own
pooled connection), so a slow batch never delays the next.

Failures: each batch is bounded by `timeout`; any Redis error, refused connection or
timeout reaches every caller of the batch as `StoreUnavailable`, all with the same cause
(`FallbackStore` counts one failed batch as one failure). The client makes no retries of
its own. Scripts are sent by SHA; a `NOSCRIPT` (first use, Redis restarted,
`SCRIPT FLUSH`) loads every script of the registry and re-sends the affected calls within
the same batch's time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from proxy.storage.base import StoreUnavailable, resolve_once
from proxy.storage.resp import bulk, command, command_parts

log = logging.getLogger("proxy.storage")

LUA_DIR = Path(__file__).with_name("lua")


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


_NO_REPLY = command(b"CLIENT", b"REPLY", b"SKIP")
"""Sent before a fire-and-forget call: Redis answers neither, so no reply is read."""


class ScriptCall:
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


def unavailable(cause: BaseException) -> StoreUnavailable:
    """Redis's messages name the host and port, never the password of the URL."""
    error = StoreUnavailable(f"redis: {type(cause).__name__} {cause}".rstrip())
    error.__cause__ = cause
    return error


class BatchingClient:
    """Script calls batched per event-loop turn on one server's redis-py connection pool
    (a `Redis`, or the one Sentinel's `master_for` gives)."""

    __slots__ = ("_batches", "_client", "_pending", "_scripts", "_timeout", "extra_calls")

    def __init__(self, client: Any, *, timeout: float, scripts: Sequence[LuaScript]) -> None:
        self._client = client
        """A redis-py client: `Redis`, or `RedisCluster` for `ClusterBatchingClient`."""
        self._timeout = timeout
        self._scripts = tuple(scripts)
        """The registry: every script loaded again after a NOSCRIPT."""
        self._pending: list[ScriptCall] = []
        self._batches: set[asyncio.Task[None]] = set()
        self.extra_calls: Callable[[], list[ScriptCall]] | None = None
        """Asked at each flush for calls that wait to ride along (put first in the batch)."""

    @property
    def idle(self) -> bool:
        """No call waits for the next flush."""
        return not self._pending

    def submit(self, call: ScriptCall) -> None:
        """Queue `call` for this turn's batch; its `on_reply` hears the answer later."""
        pending = self._pending
        pending.append(call)
        if len(pending) == 1:
            self.flush_soon()

    async def call(self, script: LuaScript, payload: bytes) -> Any:
        """One call in the next batch, awaited; raises `StoreUnavailable`."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.submit(ScriptCall(script, payload, resolve_once(future)))
        reply = await future
        if isinstance(reply, StoreUnavailable):
            raise reply
        return reply

    def flush_soon(self) -> None:
        """One flush per event-loop turn takes everything queued until it runs."""
        task = asyncio.get_running_loop().create_task(self._flush())
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.ping()
        except Exception:
            return False
        return True

    async def close(self) -> None:
        """Let the batches in flight finish (each is bounded by the timeout), disconnect."""
        while self._batches:
            await asyncio.gather(*self._batches)
        await self._client.aclose()

    async def _flush(self) -> None:
        """Send every call queued since the last flush; every caller gets an answer."""
        batch, self._pending = self._pending, []
        if self.extra_calls is not None:
            extra = self.extra_calls()
            if extra:
                batch = extra + batch  # a read in this batch sees them
        awaited = [call for call in batch if call.on_reply is not None]
        replies: Iterable[Any]
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._execute(batch, awaited)
        except asyncio.CancelledError as exc:
            settle(awaited, [exc] * len(awaited))
            raise
        except Exception as exc:  # whatever broke, no caller may be left waiting
            replies = [exc] * len(awaited)
        settle(awaited, replies)

    async def _execute(self, batch: list[ScriptCall], awaited: list[ScriptCall]) -> list[Any]:
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
            loads = [command(b"SCRIPT", b"LOAD", script.text) for script in self._scripts]
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


class ClusterBatchingClient(BatchingClient):
    """The same batches on a Redis Cluster: redis-py's cluster pipeline splits each batch
    per node (by the slot of its keys) and follows MOVED/ASK during slot migrations.

    Calls are handed over as arguments (the cluster client routes by key), not as bytes;
    fire-and-forget calls are sent like the others and their replies dropped.
    """

    async def _execute(self, batch: list[ScriptCall], awaited: list[ScriptCall]) -> list[Any]:
        """As on one server; here every call's reply is read, so a fire-and-forget call
        that met a NOSCRIPT is sent again too."""
        replies = await self._pipeline(batch)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            for script in self._scripts:
                await self._client.script_load(script.text)  # on every primary
            again = await self._pipeline([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        pairs = zip(batch, replies, strict=True)
        return [reply for call, reply in pairs if call.on_reply is not None]

    async def _pipeline(self, calls: list[ScriptCall]) -> list[Any]:
        """Replies in order; a lost node fails the whole batch, as one server's outage
        does (its callers fall back together, and it counts as one failure)."""
        pipe = self._client.pipeline(transaction=False)
        for call in calls:
            name, sha, numkeys, *rest = command_parts(call.payload)
            pipe.execute_command(name.decode(), sha.decode(), int(numkeys), *rest)
        replies = list(await pipe.execute(raise_on_error=False))
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
                raise reply
        return replies


def settle(batch: list[ScriptCall], replies: Iterable[Any]) -> None:
    """Every awaited call hears its reply (an error as `StoreUnavailable`), whatever
    another caller's continuation does."""
    for call, reply in zip(batch, replies, strict=True):
        on_reply = call.on_reply
        if on_reply is None:
            continue
        try:
            on_reply(unavailable(reply) if isinstance(reply, BaseException) else reply)
        except Exception:
            log.exception("a rate-limit decision's continuation failed")
