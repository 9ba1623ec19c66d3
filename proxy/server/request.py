"""A parsed client request: its head, and its body as a bounded stream.

The body is streamed upstream as it arrives and kept (it is at most `max_body_bytes`) so a
retry can resend it. Reading pauses the client socket when the consumer falls behind.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from proxy.core.headers import Headers
from proxy.errors import BadRequest, BodyTooLarge, ProxyError, RequestTimeout

HIGH_WATER = 256 * 1024


class RequestHead:
    """What the server parsed before the body: method, target, headers (names lower-cased).

    No `__slots__`: the fields most requests never set (framing, and the first value of
    the headers every stage asks about) are class-level defaults, so building a head sets
    only what the request has.
    """

    content_length: int | None = None
    chunked = False
    expect_continue = False
    websocket = False
    """An upgrade without a body (any protocol, not only WebSocket): the hub takes it over
    on its paths; one that reaches the pipeline is tunnelled to the upstream."""
    request_id = b""
    # The first value of headers the stages look at, found while parsing so that no stage
    # scans the header list again.
    authorization: bytes | None = None
    forwarded_for: bytes | None = None
    forwarded_proto: bytes | None = None
    idempotency_key: bytes | None = None
    connection: bytes | None = None
    upgrade: bytes | None = None
    traceparent: bytes | None = None
    """The one `traceparent` sent (b"" when sent twice: malformed, so a new trace)."""
    tracestate: bytes | None = None
    """Every `tracestate` line, joined with commas as the recommendation says."""

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        http_version: str,
        keep_alive: bool,
        peer_ip: str,
        received_at: float,
    ) -> None:
        self.method = method
        self.target = target
        q = target.find(b"?")
        self.path = target if q < 0 else target[:q]
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.peer_ip = peer_ip
        self.received_at = received_at

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (name lower-case)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class RequestBody:
    """The request body as it arrives: read chunk by chunk, kept whole for a retry."""

    __slots__ = (
        "_buffered",
        "_error",
        "_pause",
        "_paused",
        "_queue",
        "_resume",
        "_waiter",
        "done",
        "idle_timeout",
        "kept",
        "limit",
        "size",
    )

    def __init__(
        self,
        limit: int,
        pause: Callable[[], None],
        resume: Callable[[], None],
        idle_timeout: float = 10.0,
    ) -> None:
        self.limit = limit
        self.idle_timeout = idle_timeout
        """`client_body_timeout`: longest wait between two bytes of the client's body."""
        self._pause = pause
        self._resume = resume
        self._paused = False
        self._queue: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: ProxyError | None = None
        self.kept: list[bytes] = []
        self.size = 0
        self.done = False

    def feed(self, chunk: bytes) -> None:
        if self._error is not None:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.fail(BodyTooLarge(f"request body is larger than {self.limit} bytes"))
            return
        self.kept.append(chunk)
        self._queue.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, error: ProxyError) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def abort(self) -> None:
        """The client went away before the body was complete."""
        self.fail(BadRequest("client closed the connection during the body", code="client_gone"))

    @property
    def error(self) -> ProxyError | None:
        return self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_chunk(self) -> bytes | None:
        """The next chunk, or None at the end; raises the body's error (e.g. too large, or
        408 when the client sends no byte for `idle_timeout`: a streamed body that stalls
        is the client's fault, CONTRACT 14)."""
        while True:
            if self._error is not None:
                raise self._error
            if self._queue:
                chunk = self._queue.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < HIGH_WATER // 2:
                    self._paused = False
                    self._resume()
                return chunk
            if self.done:
                return None
            await self._wait_for_bytes(self.idle_timeout)

    async def wait_buffered(self, limit: int, idle_timeout: float) -> None:
        """Wait, consuming nothing, until the body is complete or more than `limit` bytes
        came; RequestTimeout (408) when no byte arrives for `idle_timeout` seconds."""
        while not self.done and self._error is None and self.size <= limit:
            await self._wait_for_bytes(idle_timeout)
        if self._error is not None:
            raise self._error

    async def _wait_for_bytes(self, idle_timeout: float) -> None:
        """Wait for the next byte, the end or an error; past `idle_timeout` without any,
        fail the body with RequestTimeout."""
        loop = asyncio.get_running_loop()
        size = self.size
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(idle_timeout, _wake_up, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self.size == size and not self.done and self._error is None:
            self.fail(RequestTimeout("request body not received in time"))

    async def read_all(self) -> bytes:
        """The whole body (for the sidecar's own endpoints, which are small)."""
        while await self.next_chunk() is not None:
            pass
        return b"".join(self.kept)

    async def wait_complete(self) -> None:
        """Wait until the whole body has arrived (needed before a retry resends it)."""
        while not self.done:
            if self._error is not None:
                raise self._error
            await self.next_chunk()
        if self._error is not None:
            raise self._error


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
