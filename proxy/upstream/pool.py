"""A keep-alive connection pool per upstream, with its `max_in_flight` bound.

Idle connections are reused last-in first-out (the most recently used socket is the least
likely to have been closed by the upstream's own idle timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast
from urllib.parse import urlsplit

from policies.model import UpstreamPolicy
from proxy.upstream.connection import ConnectFailure, HeadTimeouts, UpstreamConnection

MAX_IDLE = 256


class UpstreamPool:
    __slots__ = ("_idle", "host", "host_header", "in_flight", "policy", "port", "timeouts")

    def __init__(self, policy: UpstreamPolicy) -> None:
        self.policy = policy
        parts = urlsplit(policy.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = parts.netloc.encode()
        self._idle: list[UpstreamConnection] = []
        self.in_flight = 0
        self.timeouts = HeadTimeouts()

    def reconfigure(self, policy: UpstreamPolicy) -> None:
        """A reload that keeps the URL keeps the warm connections."""
        self.policy = policy

    @property
    def full(self) -> bool:
        return self.in_flight >= self.policy.max_in_flight

    def take_idle(self) -> UpstreamConnection | None:
        """A warm connection, if one is idle (no waiting: the fast path's way in)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
        return None

    async def acquire(self) -> UpstreamConnection:
        """A warm connection, or a new one within `connect_timeout`."""
        warm = self.take_idle()
        if warm is not None:
            return warm
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(self._new_protocol, self.host, self.port),
                self.policy.connect_timeout,
            )
        except (OSError, TimeoutError) as error:
            raise ConnectFailure(f"cannot connect to upstream '{self.policy.name}'") from error
        return cast(UpstreamConnection, protocol)

    def _new_protocol(self) -> asyncio.BaseProtocol:
        # The loop only calls the protocol's methods: the (compiled) class need not inherit.
        return cast(asyncio.BaseProtocol, UpstreamConnection(self._forget, self.timeouts))

    def release(self, conn: UpstreamConnection, keep_alive: bool) -> None:
        if keep_alive and conn.complete and conn.usable and len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()

    def _forget(self, conn: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
