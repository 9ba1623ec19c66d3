"""Fixtures: a fault-injecting upstream in the test loop and the real sidecar process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_upstream import FaultUpstream
from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import Process, free_port, start_sidecar


@pytest.fixture
async def upstream() -> AsyncIterator[FaultUpstream]:
    server = await FaultUpstream().start()
    yield server
    await server.stop()


class Sidecar:
    def __init__(self, proc: Process, port: int, config: Path) -> None:
        self.proc = proc
        self.port = port
        self.config = config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    started: list[Process] = []

    def start(
        upstream_url: str, *args: str, env: dict[str, str] | None = None, **overrides: Any
    ) -> Sidecar:
        port = free_port()
        config = write_policy(
            tmp_path / f"policy-{port}.yaml", make_policy(port, upstream_url, **overrides)
        )
        proc = start_sidecar(config, port, *args, **(env or {}))
        started.append(proc)
        return Sidecar(proc, port, config)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def sidecar(sidecar_factory: Callable[..., Sidecar], upstream: FaultUpstream) -> Sidecar:
    return sidecar_factory(upstream.url)
