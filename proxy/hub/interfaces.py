"""The interfaces the hub's parts meet at, so each part tests on its own.

`HubObserver` is how the app's metrics hear from the hub (they live in the same layer, so
the hub may not import them); `SessionHost` is all a WebSocket session needs from the hub;
`IdentityLike`/`TokenVerifierLike` are `proxy.core.identity`'s shapes, typed structurally.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from policies.model import WebSocketPolicy
from proxy.clock import Clock
from proxy.hub.events import Event
from proxy.hub.history import Replay

if TYPE_CHECKING:
    from proxy.hub.session import WebSocketSession

NOTIFICATIONS = "notifications"
ALERTS = "alerts"
CHANNELS = (NOTIFICATIONS, ALERTS)
"""The WebSocket channels, also the keys of `connections()["by_channel"]`."""


class IdentityLike(Protocol):
    """What the session reads from a verified token (`proxy.core.identity.Identity`)."""

    @property
    def user_id(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def expires_at(self) -> float | None: ...

    @property
    def authenticated(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class ChannelBatch:
    """Events fanned out together: `frames` is their frames joined, written as one."""

    frames: bytes
    events: tuple[Event, ...]


class SessionHost(Protocol):
    """What a session needs from the hub (kept narrow so sessions test on their own)."""

    @property
    def ws_policy(self) -> WebSocketPolicy: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def leeway(self) -> float: ...

    @property
    def close_timeout(self) -> float: ...

    @property
    def closing(self) -> bool: ...

    def origin_allowed(self, origin: str) -> bool: ...

    def authenticate(self, authorization: str) -> IdentityLike | None: ...

    def attach(self, session: WebSocketSession) -> None: ...

    def subscribe(self, session: WebSocketSession) -> None: ...

    def detach(self, session: WebSocketSession) -> None: ...

    def finished(self, session: WebSocketSession) -> None: ...

    def replay(self, last_id: int) -> Awaitable[Replay]: ...

    def slow_consumer(self, session: WebSocketSession) -> None: ...


class TokenVerifierLike(Protocol):
    """`proxy.core.identity.TokenVerifier`: raises `InvalidToken` for a bad token."""

    def verify(self, authorization: bytes | str | None, /) -> IdentityLike: ...


class HubObserver(Protocol):
    """What the hub reports; the app turns it into the contract's metrics."""

    def connection_opened(self, channel: str) -> None: ...

    def connection_closed(self, channel: str) -> None: ...

    def event_published(self, event_type: str) -> None: ...

    def events_delivered(self, channel: str, count: int) -> None: ...

    def slow_consumer_closed(self, channel: str) -> None: ...

    def sink_delivery(self, sink: str, outcome: str) -> None: ...

    def sink_dropped(self, sink: str) -> None: ...


class NoopObserver:
    """For a hub nobody measures (tests, the benchmark)."""

    __slots__ = ()

    def connection_opened(self, channel: str) -> None:
        pass

    def connection_closed(self, channel: str) -> None:
        pass

    def event_published(self, event_type: str) -> None:
        pass

    def events_delivered(self, channel: str, count: int) -> None:
        pass

    def slow_consumer_closed(self, channel: str) -> None:
        pass

    def sink_delivery(self, sink: str, outcome: str) -> None:
        pass

    def sink_dropped(self, sink: str) -> None:
        pass


NOOP_OBSERVER = NoopObserver()
