"""The event hub: WebSocket registry, ordered fan-out, event ingest, heartbeats.

One fan-out task sends events in the order the broker delivers them; each batch is one
pre-built frame string written to every subscriber, so the per-connection cost is one
`transport.write`. The loop yields to the event loop every `yield_every` connections so
proxied HTTP keeps flowing during a 10,000-socket fan-out, and because only that one task
writes events, yielding never reorders them.

Metrics stay out (same layer): the hub reports to a `HubObserver` the app wires to them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from policies.model import AlertsPolicy, WebSocketPolicy
from proxy.clock import SYSTEM_CLOCK, Clock
from proxy.errors import AuthRequired, Forbidden, InvalidToken, ProxyError
from proxy.hub.broker import Broker, MemoryBroker
from proxy.hub.events import (
    ALERT,
    OPCODE_PING,
    Event,
    iso_utc,
    message_frame,
    parse_event,
    server_frame,
    with_id,
)
from proxy.hub.history import Replay
from proxy.hub.interfaces import (
    ALERTS,
    CHANNELS,
    NOOP_OBSERVER,
    NOTIFICATIONS,
    ChannelBatch,
    HubObserver,
    IdentityLike,
    TokenVerifierLike,
)
from proxy.hub.seen_keys import SeenKeys
from proxy.hub.session import GOING_AWAY, WebSocketSession
from proxy.hub.sinks import AiohttpSinkSender, SendFn, SinkDispatcher

log = logging.getLogger("proxy.hub")

MAX_BATCH = 64
"""Events written to a connection in one frame string (bounded so a burst stays counted)."""

_PING_FRAME = server_frame(b"", OPCODE_PING)

HEARTBEAT_TICK_S = 0.1
"""The shortest time between two heartbeat slices."""
MAX_HEARTBEAT_SLICES = 30
"""A period's beats go out in up to this many slices, one per tick, each socket in the
slice it attached in: every socket still gets one beat per period, but 10,000 sockets are
not written in one burst that an event arriving then would wait behind (about one
fan-out's time)."""


def heartbeat_slices(period: float) -> int:
    """How many slices a heartbeat period is spread over (1 for periods under two ticks)."""
    return max(1, min(MAX_HEARTBEAT_SLICES, int(period / HEARTBEAT_TICK_S)))


class Hub:
    """Owns every WebSocket session and the event flow; see the module docstring."""

    def __init__(
        self,
        ws_policy: WebSocketPolicy,
        alerts_policy: AlertsPolicy,
        *,
        verifier: TokenVerifierLike,
        admin_roles: Iterable[str],
        ingest_token: str | None,
        leeway: float = 30.0,
        broker: Broker | None = None,
        sink_send: SendFn | None = None,
        sink_urls: Mapping[str, str] | None = None,
        observer: HubObserver = NOOP_OBSERVER,
        clock: Clock = SYSTEM_CLOCK,
        close_timeout: float = 5.0,
        yield_every: int = 500,
    ) -> None:
        self._observer = observer
        self._clock = clock
        self._close_timeout = close_timeout
        self._yield_every = max(1, yield_every)
        self._broker = broker if broker is not None else MemoryBroker(ws_policy.history)
        self._seen = SeenKeys(clock)
        self._own_sender: AiohttpSinkSender | None = None
        if sink_send is None:
            self._own_sender = sink_send = AiohttpSinkSender(sink_urls or {})
        self._sinks = SinkDispatcher(alerts_policy.sinks, sink_send, observer)
        self._attached: dict[str, dict[WebSocketSession, None]] = {c: {} for c in CHANNELS}
        self._subscribers: dict[str, dict[WebSocketSession, None]] = {c: {} for c in CHANNELS}
        self._live: set[WebSocketSession] = set()
        self._beat_tick = 0
        """Heartbeat ticks so far; a socket is beaten every `slices` ticks from its attach."""
        self._pending: list[Event] = []
        self._wakeup = asyncio.Event()
        self._all_gone = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._leeway = leeway
        self.reconfigure(ws_policy, alerts_policy, verifier, admin_roles, ingest_token)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        await self._broker.start(self._on_event)
        self._sinks.start()
        self._tasks = [
            asyncio.create_task(self._fanout_loop(), name="hub-fanout"),
            asyncio.create_task(self._heartbeat_loop(), name="hub-heartbeat"),
        ]

    async def close(self) -> None:
        """Close every socket with 1001, wait (bounded) for the handshakes, stop tasks."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in tuple(self._live):
            session.close(GOING_AWAY, "server shutting down")
        if self._live:
            try:
                await asyncio.wait_for(self._all_gone.wait(), self._close_timeout)
            except TimeoutError:
                for session in tuple(self._live):
                    session.abort()
        await self._broker.close()
        await self._sinks.close()
        if self._own_sender is not None:
            await self._own_sender.close()

    def reconfigure(
        self,
        ws_policy: WebSocketPolicy,
        alerts_policy: AlertsPolicy,
        verifier: TokenVerifierLike,
        admin_roles: Iterable[str],
        ingest_token: str | None,
        leeway: float | None = None,
    ) -> None:
        """Apply a reloaded policy; open sockets stay open and read it from now on."""
        self._ws_policy = ws_policy
        self._origins = frozenset(_normal_origin(o) for o in ws_policy.allowed_origins)
        self._verifier = verifier
        self._admin_roles = frozenset(admin_roles)
        self._ingest_token = ingest_token.encode() if ingest_token else None
        if leeway is not None:
            self._leeway = leeway
        self._broker.set_history(ws_policy.history)
        self._sinks.reconfigure(alerts_policy.sinks)

    # -- the server's entry points ----------------------------------------------------

    def upgrade(
        self, transport: asyncio.Transport, raw: bytes, channel: str, client_ip: str
    ) -> None:
        """Take over a connection whose request head (plus anything after it) is `raw`."""
        if channel not in self._attached:
            raise ValueError(f"unknown WebSocket channel {channel!r}")
        session = WebSocketSession(self, transport, channel, client_ip)
        self._live.add(session)
        self._all_gone.clear()
        transport.set_protocol(session)
        session.start(raw)

    async def ingest(self, body: bytes, authorization: bytes | None) -> tuple[int, dict[str, Any]]:
        """`POST /api/v1/events`: authorize, validate, publish; (202, {"id": N})."""
        self._authorize_ingest(authorization)
        accepted = parse_event(body, self._clock.wall())
        key = accepted.event_key
        if key is not None:
            first_id = self._seen.first_id(key)
            if first_id is not None:
                return 202, {"id": first_id}
        published = await self._broker.publish(accepted)
        if key is not None:
            self._seen.remember(key, published.id)
        if not published.fresh:
            return 202, {"id": published.id}
        self._observer.event_published(accepted.type)
        if accepted.type == ALERT and accepted.severity is not None:
            self._sinks.offer(accepted.severity, with_id(published.id, accepted.payload))
        return 202, {"id": published.id}

    async def publish_alert(self, event: dict[str, Any]) -> int:
        """The sidecar's own alert: validated and published like an ingested one."""
        accepted = parse_event(orjson.dumps(event), self._clock.wall())
        event_id = (await self._broker.publish(accepted)).id  # no event_key: always fresh
        self._observer.event_published(accepted.type)
        if accepted.severity is not None:
            self._sinks.offer(accepted.severity, with_id(event_id, accepted.payload))
        return event_id

    def connections(self) -> dict[str, Any]:
        by_channel = {channel: len(sessions) for channel, sessions in self._attached.items()}
        authenticated = sum(
            1 for sessions in self._attached.values() for s in sessions if s.identity is not None
        )
        return {
            "total": sum(by_channel.values()),
            "by_channel": by_channel,
            "authenticated": authenticated,
        }

    @property
    def live_sessions(self) -> int:
        """WebSockets this process holds, closing ones included (for `max_connections`)."""
        return len(self._live)

    @property
    def degraded(self) -> bool:
        """True while events cannot reach other replicas (for /readyz)."""
        return self._broker.degraded

    def _authorize_ingest(self, authorization: bytes | None) -> None:
        if not authorization or not authorization.strip():
            raise AuthRequired()
        scheme, _, token = authorization.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise InvalidToken()
        if self._ingest_token is not None and hmac.compare_digest(token, self._ingest_token):
            return
        identity = self._verifier.verify(authorization)
        if not identity.authenticated:
            raise InvalidToken()
        if identity.role not in self._admin_roles:
            raise Forbidden("publishing events needs the service token or an admin role")

    # -- SessionHost ------------------------------------------------------------------

    @property
    def ws_policy(self) -> WebSocketPolicy:
        return self._ws_policy

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def leeway(self) -> float:
        return self._leeway

    @property
    def close_timeout(self) -> float:
        return self._close_timeout

    @property
    def closing(self) -> bool:
        return self._closing

    def origin_allowed(self, origin: str) -> bool:
        return not self._origins or _normal_origin(origin) in self._origins

    def authenticate(self, authorization: str) -> IdentityLike | None:
        try:
            identity = self._verifier.verify(authorization)
        except ProxyError:
            return None
        return identity if identity.authenticated else None

    def attach(self, session: WebSocketSession) -> None:
        session.beat_slot = self._beat_tick
        self._attached[session.channel][session] = None
        self._observer.connection_opened(session.channel)

    def subscribe(self, session: WebSocketSession) -> None:
        if session in self._attached[session.channel]:
            self._subscribers[session.channel][session] = None

    def detach(self, session: WebSocketSession) -> None:
        attached = self._attached[session.channel]
        if session in attached:
            del attached[session]
            self._observer.connection_closed(session.channel)
        self._subscribers[session.channel].pop(session, None)

    def finished(self, session: WebSocketSession) -> None:
        self._live.discard(session)
        if not self._live:
            self._all_gone.set()

    async def replay(self, last_id: int) -> Replay:
        return await self._broker.replay(last_id)

    def slow_consumer(self, session: WebSocketSession) -> None:
        log.info("ws %s %s: slow consumer closed", session.connection_id, session.channel)
        self._observer.slow_consumer_closed(session.channel)

    # -- fan-out and heartbeats -------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        self._pending.append(event)
        self._wakeup.set()

    async def _fanout_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                events = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._broadcast(events)

    async def _broadcast(self, events: list[Event]) -> None:
        batch = ChannelBatch(b"".join(e.frame for e in events), tuple(events))
        await self._send_to(NOTIFICATIONS, batch)
        alerts = tuple(e for e in events if e.is_alert)
        if len(alerts) == len(events):
            await self._send_to(ALERTS, batch)
        elif alerts:
            await self._send_to(ALERTS, ChannelBatch(b"".join(e.frame for e in alerts), alerts))

    async def _send_to(self, channel: str, batch: ChannelBatch) -> None:
        sessions = tuple(self._subscribers[channel])
        every = self._yield_every
        for start in range(0, len(sessions), every):
            for session in sessions[start : start + every]:
                try:
                    session.deliver(batch)
                except Exception:  # one broken socket must not stop the fan-out for all
                    self._drop(session)
            await asyncio.sleep(0)
        if sessions:
            self._observer.events_delivered(channel, len(sessions) * len(batch.events))

    async def _heartbeat_loop(self) -> None:
        """Each socket is beaten about one period after it attached, then every period
        (like a timer of its own); the loop wakes once per slice of the period."""
        while True:
            period = self._ws_policy.heartbeat
            slices = heartbeat_slices(period)
            await asyncio.sleep(period / slices)
            beat = message_frame({"type": "heartbeat", "timestamp": iso_utc(self._clock.wall())})
            frames = beat + _PING_FRAME
            silent_since = self._clock.monotonic() - 2 * period
            self._beat_tick = tick = self._beat_tick + 1
            sessions = [
                s for channel in self._attached.values() for s in channel
                if (tick - s.beat_slot) % slices == 0
            ]  # fmt: skip
            for index, session in enumerate(sessions, 1):
                try:
                    session.heartbeat(frames, silent_since)
                except Exception:
                    self._drop(session)
                if index % self._yield_every == 0:
                    await asyncio.sleep(0)

    def _drop(self, session: WebSocketSession) -> None:
        log.exception("ws %s: write failed; dropping the socket", session.connection_id)
        session.abort()


def _normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()
