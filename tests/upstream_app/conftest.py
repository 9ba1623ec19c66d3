"""Fixtures: one app process and one event receiver per test module, a client per test.

Tests in a module share the app, so each creates the products it changes. Tests that need
a special configuration start their own app with `start`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from upstream_harness import Api, EventSink, RunningApp, start_app


@pytest.fixture(scope="module")
def sink() -> Iterator[EventSink]:
    """The events receiver the module's app publishes to."""
    receiver = EventSink()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def app(sink: EventSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The module's app, publishing to `sink`."""
    running = start_app(tmp_path_factory.mktemp("app"), events_url=sink.url)
    yield running
    running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for this test's event loop."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(http: aiohttp.ClientSession, app: RunningApp) -> Api:
    """A client for the module's app."""
    return Api(http, app)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., RunningApp]]:
    """Start extra apps (stopped at teardown), each in its own directory."""
    started: list[RunningApp] = []

    def launch(**kwargs: Any) -> RunningApp:
        running = start_app(tmp_path / f"app{len(started)}", **kwargs)
        started.append(running)
        return running

    yield launch
    for running in started:
        running.stop()
