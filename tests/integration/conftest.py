"""Fixtures: a fault-injecting upstream in the test loop, and the sidecar in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.fault_upstream import FaultUpstream
from tests.support.processes import Sidecar


@pytest.fixture
async def upstream() -> AsyncIterator[FaultUpstream]:
    server = await FaultUpstream().start()
    yield server
    await server.stop()


@pytest.fixture
def sidecar(sidecar_factory: Callable[..., Sidecar], upstream: FaultUpstream) -> Sidecar:
    return sidecar_factory(upstream.url)
