"""Hub fixtures: hubs behind the tiny upgrade server, and a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from policies.model import AlertsPolicy, WebSocketPolicy
from proxy.hub.hub import Hub
from tests.hub.hubkit import (
    SERVICE_TOKEN,
    FakeVerifier,
    HubFactory,
    RecordingObserver,
    RunningHub,
    UpgradeProtocol,
)


@pytest.fixture
async def make_hub() -> AsyncIterator[HubFactory]:
    """Start hubs (policy fields as keyword overrides); all are closed at teardown."""
    started: list[tuple[Hub, asyncio.Server]] = []

    async def factory(
        *,
        alerts: AlertsPolicy | None = None,
        hub_kwargs: dict[str, Any] | None = None,
        **ws_fields: Any,
    ) -> RunningHub:
        observer = RecordingObserver()
        kwargs: dict[str, Any] = {
            "verifier": FakeVerifier(),
            "admin_roles": ("admin",),
            "ingest_token": SERVICE_TOKEN,
            "leeway": 0.0,
            "observer": observer,
            "close_timeout": 2.0,
        }
        kwargs.update(hub_kwargs or {})
        hub = Hub(replace(WebSocketPolicy(), **ws_fields), alerts or AlertsPolicy(), **kwargs)
        await hub.start()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: UpgradeProtocol(hub), "127.0.0.1", 0)
        started.append((hub, server))
        return RunningHub(hub, observer, server.sockets[0].getsockname()[1])

    yield factory
    for hub, server in started:
        server.close()
        await hub.close()
        await server.wait_closed()
