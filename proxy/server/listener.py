"""The listening sockets, accepting every waiting connection at each readiness.

libuv (under uvloop) accepts ONE connection per event-loop turn since it stopped accepting
in a loop (libuv PR #3696). An idle server does not notice, but a saturated one does: its
turns last milliseconds, so a burst of new connections waits in the kernel's accept queue,
one turn each. Measured here with 256 connections opened at once against a busy sidecar,
the last of them was accepted 0.6-1.2 s after it connected, and those first requests made
the whole run's p99. So the sidecar polls its listening sockets itself and, like nginx's
`multi_accept` or CPython's asyncio, accepts up to `ACCEPT_BATCH` connections per wake-up.

With `ssl_context` set the connections are served over TLS; the context may be swapped at
any time (a rotated certificate) and applies to connections accepted from then on. A
client that does not finish its handshake within `handshake_timeout` is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Callable

log = logging.getLogger("proxy.server")

ACCEPT_BATCH = 512
"""Connections accepted per readiness of a listening socket, at most."""

BACKLOG = 4096
"""The kernel's accept queue (capped by net.core.somaxconn)."""

RETRY_AFTER_S = 0.5
"""Out of file descriptors: how long accepting pauses (the connections wait queued)."""

_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Listener:
    """Listening sockets feeding `protocol_factory`; `close()` stops accepting."""

    ssl_context: ssl.SSLContext | None = None
    handshake_timeout = 10.0

    def __init__(
        self, sockets: list[socket.socket], protocol_factory: Callable[[], asyncio.BaseProtocol]
    ) -> None:
        self.sockets = sockets
        self._factory = protocol_factory
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._out_of_files = False
        """In a streak of failed accepts (logged once, at its start)."""
        self._streak_began = 0.0
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    @classmethod
    async def open(
        cls,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None,
        port: int,
        reuse_port: bool = False,
    ) -> Listener:
        """Bind every address of `host` (None: all interfaces), as `create_server` does."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                try:
                    sock = socket.socket(family, kind, proto)
                except OSError:
                    continue  # a family this host lacks (IPv6 turned off): as asyncio does
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        if not sockets:
            raise OSError(errno.EAFNOSUPPORT, f"no address of {host!r} can be listened on")
        return cls(sockets, protocol_factory)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno not in _OUT_OF_FILES:
                    raise
                self._pause_accepting(sock, error)
                return
            conn.setblocking(False)
            self._loop.create_task(self._connect(conn, sock, self._loop.time()))

    def _pause_accepting(self, sock: socket.socket, error: OSError) -> None:
        """Out of file descriptors: the connections stay queued in the kernel; accept again
        a little later rather than spin on a socket that stays readable. Logged once per
        streak, which ends when a connection accepted after its start is served."""
        if not self._out_of_files:
            self._out_of_files = True
            self._streak_began = self._loop.time()
            log.error("cannot accept connections: %s", error.strerror)
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock.fileno())
        self._loop.call_later(RETRY_AFTER_S, self._resume, sock)

    async def _connect(self, conn: socket.socket, sock: socket.socket, accepted: float) -> None:
        context = self.ssl_context
        try:
            if context is None:
                await self._loop.connect_accepted_socket(self._factory, conn)
            else:
                await self._loop.connect_accepted_socket(
                    self._factory, conn, ssl=context, ssl_handshake_timeout=self.handshake_timeout
                )
        except OSError as error:
            # The client left between accept and here, its TLS handshake failed or took too
            # long (ssl.SSLError and the handshake timeout are OSErrors too), or the loop had
            # no descriptor left for the transport: nothing to serve.
            conn.close()
            if error.errno in _OUT_OF_FILES and not self._closed:
                self._pause_accepting(sock, error)
            return
        if self._out_of_files and accepted > self._streak_began:
            self._out_of_files = False
            log.info("accepting connections again")

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting; connections already accepted are not touched."""
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock.fileno())
            sock.close()
