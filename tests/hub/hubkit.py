"""Hub test kit: a tiny upgrade server, tokens, a fake verifier, a recording observer.

The tiny server does exactly what the sidecar's server does at an upgrade: read the
request head, map the path to a channel, hand the transport and the bytes to
`hub.upgrade`. So these tests need nothing of the real server.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import jwt
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from proxy.errors import InvalidToken
from proxy.hub.hub import Hub

SECRET = "hub-test-secret-0123456789abcdef0123"
SERVICE_TOKEN = "service-token-for-hub-tests"
CHANNEL_PATHS = {"/api/v1/ws/notifications": "notifications", "/api/v1/ws/alerts": "alerts"}
DEADLINE_S = 5.0


def make_token(sub: str = "u1", role: str = "viewer", ttl: float = 3600.0) -> str:
    now = time.time()
    return jwt.encode({"sub": sub, "role": role, "exp": now + ttl}, SECRET, algorithm="HS256")


@dataclass(frozen=True, slots=True)
class FakeIdentity:
    user_id: str
    role: str
    expires_at: float | None
    authenticated: bool


class FakeVerifier:
    """HS256 with no leeway of its own: the hub adds the policy's leeway for sockets."""

    def verify(self, authorization_value: bytes | str | None) -> FakeIdentity:
        if authorization_value is None:
            return FakeIdentity("", "anonymous", None, False)
        value = (
            authorization_value.decode()
            if isinstance(authorization_value, bytes)
            else authorization_value
        )
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return FakeIdentity("", "anonymous", None, False)
        try:
            # pyjwt truncates exp to whole seconds; tests use sub-second lifetimes.
            options = {"verify_exp": False}
            claims = jwt.decode(token.strip(), SECRET, algorithms=["HS256"], options=options)
        except jwt.PyJWTError:
            raise InvalidToken() from None
        if float(claims["exp"]) <= time.time():
            raise InvalidToken()
        return FakeIdentity(claims["sub"], claims["role"], float(claims["exp"]), True)


class RecordingObserver:
    """Counts every report, keyed by (method, label)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def connection_opened(self, channel: str) -> None:
        self.counts["opened", channel] += 1

    def connection_closed(self, channel: str) -> None:
        self.counts["closed", channel] += 1

    def event_published(self, event_type: str) -> None:
        self.counts["published", event_type] += 1

    def events_delivered(self, channel: str, count: int) -> None:
        self.counts["delivered", channel] += count

    def slow_consumer_closed(self, channel: str) -> None:
        self.counts["slow", channel] += 1

    def sink_delivery(self, sink: str, outcome: str) -> None:
        self.counts[f"sink:{outcome}", sink] += 1

    def sink_dropped(self, sink: str) -> None:
        self.counts["sink_dropped", sink] += 1


class UpgradeProtocol(asyncio.Protocol):
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        if b"\r\n\r\n" not in self._buffer:
            return
        path = self._buffer.split(b" ", 2)[1].split(b"?", 1)[0].decode()
        channel = CHANNEL_PATHS.get(path)
        if channel is None:
            self._transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            self._transport.close()
            return
        peer = self._transport.get_extra_info("peername")[0]
        self._hub.upgrade(self._transport, self._buffer, channel, peer)


@dataclass
class RunningHub:
    hub: Hub
    observer: RecordingObserver
    port: int

    def url(self, channel: str = "notifications") -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws/{channel}"

    async def publish(self, event: dict[str, Any]) -> int:
        status, body = await self.hub.ingest(
            orjson.dumps(event), f"Bearer {SERVICE_TOKEN}".encode()
        )
        assert status == 202
        return int(body["id"])


async def recv_json(ws: ClientConnection, timeout: float = DEADLINE_S) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    decoded: dict[str, Any] = orjson.loads(message)
    return decoded


async def recv_type(ws: ClientConnection, kind: str, timeout: float = DEADLINE_S) -> dict[str, Any]:
    """The next message of this type, skipping heartbeats and others before it."""
    async with asyncio.timeout(timeout):
        while True:
            message = await recv_json(ws, timeout)
            if message["type"] == kind:
                return message


async def wait_for(condition: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    """Poll a condition with a deadline (no fixed sleeps)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


HubFactory = Callable[..., Awaitable[RunningHub]]


async def close_code(ws: ClientConnection, timeout: float = DEADLINE_S) -> int:
    """Read (and drop) messages until the server closes; the code it sent."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code


class RawClient:
    """A WebSocket client by hand: it can stay silent, or never read (a slow consumer)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, channel: str = "notifications", receive_buffer: int | None = None
    ) -> RawClient:
        sock = socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        writer.write(
            f"GET /api/v1/ws/{channel} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self, timeout: float = DEADLINE_S) -> tuple[int, bytes]:
        """The next (opcode, payload) the server sent (server frames are unmasked)."""
        async with asyncio.timeout(timeout):
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await self.reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self.reader.readexactly(8), "big")
            return first & 0x0F, await self.reader.readexactly(length)

    async def close_code(self, timeout: float = DEADLINE_S) -> tuple[int, list[dict[str, Any]]]:
        """Read until the close frame: its code, and the JSON messages before it."""
        messages = []
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.frame(timeout)
                if opcode == 0x8:
                    return int.from_bytes(payload[:2], "big"), messages
                if opcode == 0x1:
                    messages.append(orjson.loads(payload))

    def close(self) -> None:
        self.writer.close()
