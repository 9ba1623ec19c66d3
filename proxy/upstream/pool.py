"""A keep-alive connection pool per upstream, with its `max_in_flight` bound.

Idle connections are reused last-in first-out (the most recently used socket is the least
likely to have been closed by the upstream's own idle timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from policies.model import UpstreamPolicy
from policies.tls_files import client_context
from proxy.upstream.connection import (
    BodyTimeouts,
    ConnectFailure,
    HeadTimeouts,
    UpstreamConnection,
    tls_failure,
)

log = logging.getLogger("proxy.upstream")

MAX_IDLE = 256


class UpstreamPool:
    """An upstream's connections; for an https:// URL, its one `SSLContext` (built here, at
    load, from the files the policy names)."""

    __slots__ = (
        "_idle",
        "bodies",
        "host",
        "host_header",
        "in_flight",
        "max_in_flight",
        "policy",
        "port",
        "server_hostname",
        "ssl_context",
        "timeout",
        "timeouts",
    )

    def __init__(
        self, policy: UpstreamPolicy, on_body_timeout: Callable[[str], None] | None = None
    ) -> None:
        """`on_body_timeout` hears the upstream's name when a body is cut for its silence."""
        self.policy = policy
        self.timeout = policy.timeout
        """The policy's values read on every request, as fields (compiled: no lookup by
        name on the policy object)."""
        self.max_in_flight = policy.max_in_flight
        parts = urlsplit(policy.url)
        self.host = parts.hostname or "127.0.0.1"
        https = parts.scheme == "https"
        self.port = parts.port or (443 if https else 80)
        self.ssl_context: ssl.SSLContext | None = None
        self.server_hostname: str | None = None
        if https:
            self.ssl_context = client_context(policy.tls)
            tls = policy.tls
            named = tls.server_name if tls is not None else None
            self.server_hostname = named or self.host
        self.host_header = parts.netloc.encode()
        self._idle: list[UpstreamConnection] = []
        self.in_flight = 0
        self.timeouts = HeadTimeouts()
        self.bodies = BodyTimeouts(policy.body_timeout, policy.name, on_body_timeout)

    def keeps(self, policy: UpstreamPolicy) -> bool:
        """True when `policy` reaches the upstream as this pool does (URL and TLS alike)."""
        return policy.url == self.policy.url and policy.tls == self.policy.tls

    def reconfigure(self, policy: UpstreamPolicy) -> None:
        """A reload that keeps the URL and TLS settings keeps the warm connections."""
        self.policy = policy
        self.timeout = policy.timeout
        self.max_in_flight = policy.max_in_flight
        self.bodies.seconds = policy.body_timeout

    @property
    def full(self) -> bool:
        return self.in_flight >= self.max_in_flight

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
        timeout = self.policy.connect_timeout
        try:
            if self.ssl_context is None:
                connecting = loop.create_connection(self._new_protocol, self.host, self.port)
            else:
                connecting = loop.create_connection(
                    self._new_protocol, self.host, self.port, ssl=self.ssl_context,
                    server_hostname=self.server_hostname, ssl_handshake_timeout=timeout,
                )  # fmt: skip
            _, protocol = await asyncio.wait_for(connecting, timeout)
        except ssl.SSLError as error:
            failure = tls_failure(error)
            log.warning("upstream '%s': %s", self.policy.name, failure)
            raise failure from error
        except (OSError, TimeoutError) as error:
            raise ConnectFailure(f"cannot connect to upstream '{self.policy.name}'") from error
        return cast(UpstreamConnection, protocol)

    def _new_protocol(self) -> asyncio.BaseProtocol:
        # The loop only calls the protocol's methods: the (compiled) class need not inherit.
        conn = UpstreamConnection(self._forget, self.timeouts, self.bodies)
        return cast(asyncio.BaseProtocol, conn)

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
