"""One WebSocket connection, from the upgrade request to the close handshake.

wsproto parses what the client sends (handshake, frames, close); what the server sends is
built once and written as bytes: broadcast frames by the hub, the few per-connection
messages here with the same encoder (`events.server_frame`). Only control frames (close,
pong) go through wsproto's `send`, so its close state stays exact.

Backpressure is the transport's: while it is paused (its buffer past the high-water mark)
messages wait in a backlog. Everything the server sends shares that one budget: events,
heartbeats, answers and protocol pongs (CONTRACT 14). A backlog of more than `send_queue`
messages or `send_queue_bytes` bytes is a slow consumer, closed with 1013, and nothing more
is read from it, so one stalled client (or one that floods pings without reading the
pongs) never holds more than its budget or delays others. Fanned-out frames are queued as
the hub's own bytes objects, shared by every backlog that holds them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import orjson
from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.utilities import LocalProtocolError

from proxy.hub.events import iso_utc, message_frame
from proxy.hub.handshake import MAX_HEAD_BYTES, Upgrade, answer_upgrade
from proxy.hub.history import Replay
from proxy.hub.interfaces import ALERTS, ChannelBatch, IdentityLike, SessionHost

log = logging.getLogger("proxy.hub.session")

GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013
TOKEN_EXPIRED = 4401


class WebSocketSession(asyncio.Protocol):
    """The protocol object a connection's transport is handed to at upgrade."""

    # The slots `deliver` reads come first: one cache line per socket during a fan-out.
    __slots__ = (  # noqa: RUF023
        "_transport",
        "_paused",
        "_closing",
        "_held",
        "_skip_upto",
        "_auth_timer",
        "_backlog",
        "_backlog_bytes",
        "_backlog_count",
        "_close_timer",
        "_conn",
        "_expiry_timer",
        "_head",
        "_host",
        "_last_seen",
        "_loop",
        "_msg_parts",
        "_msg_size",
        "_resume_task",
        "beat_slot",
        "channel",
        "client_ip",
        "connection_id",
        "identity",
    )

    def __init__(
        self, host: SessionHost, transport: asyncio.Transport, channel: str, client_ip: str
    ) -> None:
        self._host = host
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self.channel = channel
        self.client_ip = client_ip
        self.connection_id = secrets.token_hex(8)
        self.beat_slot = 0
        """The hub's heartbeat tick when it attached: it is beaten every period from then."""
        self.identity: IdentityLike | None = None
        self._conn: Connection | None = None
        self._head = b""
        self._closing = False
        self._paused = False
        self._backlog: list[bytes] = []
        self._backlog_count = 0
        self._backlog_bytes = 0
        self._held: list[ChannelBatch] | None = None
        self._skip_upto = 0
        self._msg_parts: list[str | bytes] = []
        self._msg_size = 0
        self._last_seen = host.clock.monotonic()
        self._auth_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._resume_task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last_seen = self._host.clock.monotonic()
        if self._conn is None:
            self.start(data)
        elif self._conn.state is not ConnectionState.CLOSED:
            self._conn.receive_data(data)
            self._process_frames()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timers()
        if self._resume_task is not None:
            self._resume_task.cancel()
        self._backlog.clear()
        self._held = None
        self._host.detach(self)
        self._host.finished(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._closing and not self._transport.is_closing():
            # Past the send budget reading stopped; the output is moving again, so read the
            # client's answer to the close frame.
            self._transport.resume_reading()
        if self._backlog and not self._closing:
            data = b"".join(self._backlog)
            self._backlog.clear()
            self._backlog_count = 0
            self._backlog_bytes = 0
            self._transport.write(data)

    def deliver(self, batch: ChannelBatch) -> None:
        """Write fanned-out events (the fan-out's hot path: four slots tested, one write)."""
        if not (self._paused or self._closing or self._held is not None) and (
            batch.events[0].id > self._skip_upto
        ):
            self._transport.write(batch.frames)
            return
        if self._closing:
            return
        if self._held is not None:
            self._held.append(batch)
            return
        events = batch.events
        if events[0].id > self._skip_upto:
            self._write(batch.frames, len(events))  # the hub's bytes, shared, not copied
            return
        frames = [e.frame for e in events if e.id > self._skip_upto]
        if frames:
            self._write(b"".join(frames), len(frames))

    def heartbeat(self, frames: bytes, silent_since: float) -> None:
        """Send the beat, or close a client that has sent nothing since `silent_since`."""
        if self._last_seen < silent_since:
            self.close(GOING_AWAY, "no frame from the client for two heartbeats")
        else:
            self._write(frames, 1)

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake; the socket is dropped if it is not finished in time."""
        if self._closing or self._conn is None:
            return
        self._begin_closing()
        log.debug("ws %s %s closing: %d %s", self.connection_id, self.client_ip, code, reason)
        if self._transport.is_closing():
            return
        try:
            self._transport.write(self._conn.send(CloseConnection(code=code, reason=reason)))
        except LocalProtocolError:
            self._transport.close()

    def _begin_closing(self) -> None:
        """Out of the hub's lists at once; the socket goes when the client answers or later."""
        self._closing = True
        self._cancel_timers()
        self._backlog.clear()
        self._backlog_count = 0
        self._backlog_bytes = 0
        self._held = None
        self._host.detach(self)
        self._close_timer = self._loop.call_later(self._host.close_timeout, self.abort)

    # -- handshake --------------------------------------------------------------------

    def start(self, data: bytes) -> None:
        """Take over with the request head (and anything after it) the server read."""
        head = self._head + data
        upgrade = answer_upgrade(head)
        if upgrade is None:
            self._head = head
            if len(head) > MAX_HEAD_BYTES:
                self._transport.abort()
            return
        self._head = b""
        self._transport.write(upgrade.response)
        if upgrade.connection is None:
            self._transport.close()
            return
        self._conn = upgrade.connection
        self._host.attach(self)
        self._open(upgrade)
        if upgrade.rest and not self._closing:
            self._conn.receive_data(upgrade.rest)
            self._process_frames()

    def _open(self, upgrade: Upgrade) -> None:
        origin, credential = upgrade.origin, upgrade.credential
        if origin is not None and not self._host.origin_allowed(origin):
            self.close(POLICY_VIOLATION, "origin not allowed")
            return
        if self._host.closing:
            self.close(GOING_AWAY, "server shutting down")
            return
        identity = self._host.authenticate(credential) if credential else None
        self._send(
            {
                "type": "welcome",
                "connection_id": self.connection_id,
                "channel": self.channel,
                "authenticated": identity is not None,
                "server_time": iso_utc(self._host.clock.wall()),
            }
        )
        if identity is not None:
            self._set_identity(identity)
        elif credential is not None:
            self._auth_failed()
        if self._closing:
            return
        if self.identity is None and self._host.ws_policy.require_auth:
            timeout = self._host.ws_policy.auth_timeout
            self._auth_timer = self._loop.call_later(timeout, self._auth_deadline)
        else:
            self._host.subscribe(self)

    # -- frames from the client -------------------------------------------------------

    def _process_frames(self) -> None:
        conn = self._conn
        assert conn is not None
        for event in conn.events():
            if isinstance(event, Message):
                self._message_part(event)
            elif isinstance(event, Ping):
                if conn.state is ConnectionState.OPEN and not self._closing:
                    self._write(conn.send(event.response()), 1)
            elif isinstance(event, CloseConnection):
                self._remote_close(conn, event)

    def _message_part(self, event: Message[Any]) -> None:
        if self._closing:
            return
        data = event.data
        self._msg_size += len(data.encode()) if isinstance(data, str) else len(data)
        if self._msg_size > self._host.ws_policy.max_message_bytes:
            self.close(MESSAGE_TOO_BIG, "message too big")
            return
        self._msg_parts.append(data)
        if event.message_finished:
            parts = self._msg_parts
            self._msg_parts = []
            self._msg_size = 0
            self._on_message(_joined(parts))

    def _remote_close(self, conn: Connection, event: CloseConnection) -> None:
        if conn.state is ConnectionState.OPEN:
            # wsproto reports a frame it could not parse this way: our close, its code.
            self.close(event.code, event.reason or "protocol error")
            return
        if conn.state is ConnectionState.REMOTE_CLOSING:
            # The client started the close: answer it, then hang up.
            self._transport.write(conn.send(event.response()))
            if not self._closing:
                self._begin_closing()
        self._transport.close()

    def _on_message(self, text: str | bytes) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._send({"type": "error", "message": "invalid JSON"})
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "auth":
            self._on_auth(message.get("token"))
        elif kind == "ping":
            self._send({"type": "pong", "timestamp": iso_utc(self._host.clock.wall())})
        elif kind == "resume":
            self._on_resume(message.get("last_event_id"))
        else:
            self._send({"type": "error", "message": "unknown message type"})

    # -- authentication ---------------------------------------------------------------

    def _on_auth(self, token: object) -> None:
        identity = None
        if isinstance(token, str) and token:
            identity = self._host.authenticate(f"Bearer {token}")
        if identity is None:
            self._auth_failed()
            return
        self._send({"type": "auth_ok", "user_id": identity.user_id, "role": identity.role})
        self._set_identity(identity)
        self._host.subscribe(self)

    def _auth_failed(self) -> None:
        self._send({"type": "auth_error", "message": "invalid or expired token"})
        if self._host.ws_policy.require_auth:
            self.close(POLICY_VIOLATION, "authentication failed")

    def _set_identity(self, identity: IdentityLike) -> None:
        self.identity = identity
        self._cancel_timers()
        if identity.expires_at is not None:
            delay = identity.expires_at + self._host.leeway - self._host.clock.wall()
            self._expiry_timer = self._loop.call_later(max(delay, 0.0), self._token_expired)

    def _auth_deadline(self) -> None:
        self._auth_timer = None
        if self.identity is None:
            self.close(POLICY_VIOLATION, "authentication required")

    def _token_expired(self) -> None:
        """exp + leeway passed: warn, and close unless a fresh `auth` comes within grace."""
        self.identity = None
        self._send({"type": "auth_expired"})
        grace = self._host.ws_policy.token_expiry_grace
        self._expiry_timer = self._loop.call_later(grace, self._grace_over)

    def _grace_over(self) -> None:
        self._expiry_timer = None
        self.close(TOKEN_EXPIRED, "token expired")

    # -- resume -----------------------------------------------------------------------

    def _on_resume(self, last_id: object) -> None:
        if not isinstance(last_id, int) or isinstance(last_id, bool) or last_id < 0:
            self._send({"type": "error", "message": "last_event_id must be an integer >= 0"})
        elif self.identity is None and self._host.ws_policy.require_auth:
            self._send({"type": "error", "message": "authenticate before resuming"})
        elif self._held is not None:
            self._send({"type": "error", "message": "a resume is already in progress"})
        else:
            self._held = []
            self._resume_task = asyncio.create_task(self._resume(last_id))

    async def _resume(self, last_id: int) -> None:
        """Replay, then `resumed`, then the live events that arrived meanwhile (deduped)."""
        try:
            replay = await self._host.replay(last_id)
        except Exception:
            log.exception("ws %s: resume failed", self.connection_id)
            replay = None
        if self._closing:
            return
        held, self._held = self._held or [], None
        if replay is None:
            self._send({"type": "error", "message": "resume failed; try again"})
        else:
            self._write_replay(last_id, replay)
        for batch in held:
            self.deliver(batch)

    def _write_replay(self, last_id: int, replay: Replay) -> None:
        events = replay.events
        if self.channel == ALERTS:
            events = tuple(e for e in events if e.is_alert)
        frames = []
        if replay.gap_oldest is not None:
            gap = {"type": "resume_gap", "from": last_id, "oldest_available": replay.gap_oldest}
            frames.append(message_frame(gap))
        frames.extend(e.frame for e in events)
        frames.append(message_frame({"type": "resumed", "from": last_id, "count": len(events)}))
        self._write(b"".join(frames), len(frames))
        if replay.events:
            self._skip_upto = max(self._skip_upto, max(e.id for e in replay.events))

    # -- output -----------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if not self._closing:
            self._write(message_frame(message), 1)

    def _write(self, data: bytes, count: int) -> None:
        if self._paused:
            self._backlog.append(data)
            self._backlog_count += count
            self._backlog_bytes += len(data)
            policy = self._host.ws_policy
            if (
                self._backlog_count > policy.send_queue
                or self._backlog_bytes > policy.send_queue_bytes
            ):
                self._slow_consumer()
            return
        if not self._transport.is_closing():
            self._transport.write(data)

    def _slow_consumer(self) -> None:
        """Over the send budget: 1013, and nothing is read while the output stays stuck (a
        client flooding pings would otherwise keep the server parsing what it discards)."""
        self._host.slow_consumer(self)
        self.close(TRY_AGAIN_LATER, "slow consumer: reconnect and resume")
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def _cancel_timers(self) -> None:
        for timer in (self._auth_timer, self._expiry_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._auth_timer = self._expiry_timer = self._close_timer = None

    def abort(self) -> None:
        """Drop the socket without a close handshake (a peer that stopped answering)."""
        self._close_timer = None
        self._transport.abort()


def _joined(parts: list[str | bytes]) -> str | bytes:
    """A fragmented message's parts (all text or all binary) as one."""
    if isinstance(parts[0], str):
        return "".join(p for p in parts if isinstance(p, str))
    return b"".join(p for p in parts if isinstance(p, bytes))
