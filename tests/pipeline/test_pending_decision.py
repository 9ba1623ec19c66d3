"""A request waiting for a store that answers later (Redis) goes on from the store's
callback: a failure there answers that request with an error and leaves the pipeline's
count of requests in flight right; a client that left first is not answered at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from policies.load import load_policy
from proxy.app import Sidecar
from proxy.core.identity import ANONYMOUS
from proxy.core.tracecontext import RequestTrace
from proxy.pipeline.chain import PendingDecision
from proxy.pipeline.observe import RequestNote
from proxy.server.http11 import ClientConnection
from proxy.server.request import RequestHead
from proxy.storage.base import StoreUnavailable


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default


def waiting_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Sidecar, Transport, PendingDecision]:
    monkeypatch.setenv("JWT_SECRET", "pending-decision-test-secret-0123456789abcdef")
    path = tmp_path / "policy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "upstreams": {"inventory": {"url": "http://127.0.0.1:9"}},
                "routes": [{"name": "inventory", "path_prefix": "/", "upstream": "inventory"}],
            }
        )
    )
    sidecar = Sidecar(load_policy(str(path)), str(path))
    conn = ClientConnection(sidecar.server_state)
    transport = Transport()
    conn.connection_made(transport)
    head = RequestHead(b"GET", b"/x", [], "1.1", True, "127.0.0.1", 0.0)
    head.request_id = b"r1"
    route = sidecar.runtime.routes.match(b"/x")
    assert route is not None
    pipeline = sidecar.pipeline
    pipeline.in_flight += 1  # as `fast()` counts a request it takes
    note = RequestNote(RequestTrace(None, None, 0.0, False), "127.0.0.1")
    pending = PendingDecision(pipeline, conn, head, route, ANONYMOUS, b"127.0.0.1", note)
    conn.active = pending
    return sidecar, transport, pending


async def test_a_store_failure_answers_500_and_frees_the_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sidecar, transport, pending = waiting_request(tmp_path, monkeypatch)
    pending.decided(StoreUnavailable("redis: down"))
    assert transport.written.startswith(b"HTTP/1.1 500 ")
    assert b"X-Request-Id: r1\r\n" in transport.written
    assert sidecar.pipeline.in_flight == 0
    pending.cancel()  # the client leaving afterwards changes nothing
    assert sidecar.pipeline.in_flight == 0


async def test_a_client_gone_before_the_decision_gets_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sidecar, transport, pending = waiting_request(tmp_path, monkeypatch)
    pending.cancel()
    assert sidecar.pipeline.in_flight == 0
    pending.decided(StoreUnavailable("redis: down"))
    assert transport.written == b""
    assert sidecar.pipeline.in_flight == 0
