"""A real redis-server shared by every test that needs one: one per session, empty at each
test's start.

Outage tests stop or pause `redis_server`; the `redis_url` fixture of the next test brings
it back, so a failed outage test never breaks the tests after it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The running server's URL, its data flushed and its command statistics reset."""
    redis_server.ensure_running()
    redis_server.command("FLUSHALL")
    redis_server.command("CONFIG", "RESETSTAT")
    return redis_server.url
