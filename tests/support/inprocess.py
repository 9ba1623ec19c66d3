"""The sidecar's request path in-process: real protocol objects, fake sockets.

A `Harness` builds a real `Sidecar` from a policy document, connects a `ClientConnection`
to a `FakeTransport`, and puts upstream connections (`UpstreamConnection` on a
`FakeTransport`) into the pool. A test writes the client's bytes with `send`, answers
as the upstream with `answer`, and reads what the sidecar wrote. Nothing listens on a
socket, so these tests take milliseconds; `bench/hotpath.py` drives the same objects.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import yaml

from policies.load import load_policy
from proxy.app import Sidecar
from proxy.server.http11 import ClientConnection
from proxy.upstream.connection import UpstreamConnection

PEER = ("127.0.0.1", 50000)


class FakeTransport(asyncio.Transport):
    """Keeps what is written (unless `keep` is False: it only counts writes), and records
    closing, aborting and reading paused; `push_back()` makes the protocol pause writing."""

    def __init__(
        self, peer: tuple[str, int] | None = PEER, protocol: object = None, keep: bool = True
    ) -> None:
        super().__init__()
        self.peer = peer
        self.protocol = protocol
        self.keep = keep
        self.written = bytearray()
        self.writes = 0
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        if self.keep:
            self.written += data

    def take(self) -> bytes:
        """What was written since the last `take`."""
        data = bytes(self.written)
        self.written.clear()
        return data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def push_back(self) -> None:
        self.protocol.pause_writing()  # type: ignore[attr-defined]

    def drained(self) -> None:
        self.protocol.resume_writing()  # type: ignore[attr-defined]


def policy_doc(upstream: dict[str, object] | None = None, **sections: object) -> dict[str, object]:
    """One upstream `inventory` (on a port nothing listens on: the harness gives it warm
    connections) behind one route for every path, HS256 tokens signed with $JWT_SECRET;
    `upstream` adds to the upstream's
    settings, `sections` adds or replaces top-level sections."""
    doc: dict[str, object] = {
        "version": 1,
        "upstreams": {"inventory": {"url": "http://127.0.0.1:9", **(upstream or {})}},
        "routes": [{"name": "inventory", "path_prefix": "/", "upstream": "inventory"}],
        "auth": {"jwt": {"algorithms": ["HS256"], "secret_env": "JWT_SECRET"}},
    }
    doc.update(sections)
    return doc


def build_sidecar(doc: dict[str, object]) -> Sidecar:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.yaml"
        path.write_text(yaml.safe_dump(doc))
        return Sidecar(load_policy(str(path)), str(path))


class Harness:
    """One sidecar, one client connection, and upstream connections put in its pool."""

    def __init__(self, doc: dict[str, object], keep: bool = True) -> None:
        self.sidecar = build_sidecar(doc)
        self.client = ClientConnection(self.sidecar.server_state)
        self.client_transport = FakeTransport(PEER, self.client, keep)
        self.client.connection_made(self.client_transport)
        self.pool = self.sidecar.runtime.pools["inventory"]
        self.keep = keep
        self.upstreams: list[tuple[UpstreamConnection, FakeTransport]] = []

    def connect(self) -> tuple[ClientConnection, FakeTransport]:
        """Another client connection to the same sidecar."""
        conn = ClientConnection(self.sidecar.server_state)
        transport = FakeTransport(PEER, conn, self.keep)
        conn.connection_made(transport)
        return conn, transport

    def idle_upstream(self) -> tuple[UpstreamConnection, FakeTransport]:
        """A warm keep-alive upstream connection, idle in the pool."""
        conn = UpstreamConnection(lambda _conn: None, self.pool.timeouts)
        transport = FakeTransport(None, conn, self.keep)
        conn.connection_made(transport)
        conn.complete = True  # as after an exchange: the pool takes it as idle
        self.pool.release(conn, True)
        self.upstreams.append((conn, transport))
        return conn, transport

    def send(self, data: bytes) -> None:
        self.client.data_received(data)

    def answer(self, data: bytes, which: int = -1) -> None:
        """The upstream connection `which` (default: the last made) receives `data`."""
        self.upstreams[which][0].data_received(data)

    def written(self) -> bytes:
        return self.client_transport.take()

    @property
    def in_flight(self) -> int:
        return self.sidecar.pipeline.in_flight


async def settle(turns: int = 5) -> None:
    """Let tasks and callbacks already scheduled run (a few loop turns, no waiting)."""
    for _ in range(turns):
        await asyncio.sleep(0)
