"""The listener accepts a burst of connections at once, even under uvloop (libuv accepts
one per loop turn), and stops accepting when closed."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from proxy.server.listener import Listener


class Recorder(asyncio.Protocol):
    made: list[Recorder]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(self)


def recorder_factory() -> tuple[list[Recorder], type[Recorder]]:
    made: list[Recorder] = []
    return made, type("Rec", (Recorder,), {"made": made})


def connect_now(port: int, n: int) -> list[socket.socket]:
    """Blocking connects: the kernel completes each handshake without the server's loop."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]


async def burst_accepted_within(turns: int, n: int, open_server: str) -> int:
    made, factory = recorder_factory()
    loop = asyncio.get_running_loop()
    if open_server == "listener":
        listener = await Listener.open(factory, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        close = listener.close
    else:
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        close = server.close
    clients = connect_now(port, n)
    try:
        for _ in range(turns):
            await asyncio.sleep(0)
        return len(made)
    finally:
        close()
        for client in clients:
            client.close()


def test_a_burst_of_connections_is_accepted_in_a_few_loop_turns() -> None:
    assert uvloop.run(burst_accepted_within(10, 100, "listener")) == 100


def test_uvloop_own_server_would_take_one_turn_per_connection() -> None:
    """Why the listener exists: if this starts failing, libuv accepts in batches again."""
    assert uvloop.run(burst_accepted_within(10, 100, "create_server")) < 20


async def test_close_stops_accepting() -> None:
    made, factory = recorder_factory()
    listener = await Listener.open(factory, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    listener.close()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    assert made == []


async def test_a_port_in_use_is_an_error_and_leaves_no_socket_open() -> None:
    _, factory = recorder_factory()
    first = await Listener.open(factory, "127.0.0.1", 0)
    port = first.sockets[0].getsockname()[1]
    try:
        with pytest.raises(OSError):
            await Listener.open(factory, "127.0.0.1", port)
    finally:
        first.close()


async def test_no_host_listens_on_every_interface() -> None:
    _, factory = recorder_factory()
    listener = await Listener.open(factory, None, 0)
    try:
        bound = {sock.getsockname()[0] for sock in listener.sockets}
        assert "0.0.0.0" in bound
    finally:
        listener.close()
