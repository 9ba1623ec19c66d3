"""A real redis-server shared by every test that needs one: one per session, empty at each
test's start; and the real sidecar process, started from a test policy.

Outage tests stop or pause `redis_server`; the `redis_url` fixture of the next test brings
it back, so a failed outage test never breaks the tests after it.

The session refuses to start on compiled modules older than their sources: it would test
code that is not the code in the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import build_native
from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import Process, Sidecar, free_port, start_sidecar
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer


def pytest_configure(config: pytest.Config) -> None:
    if build_native.extensions() and not build_native.is_current():
        pytest.exit(
            "the compiled modules are out of date: run .venv/bin/python scripts/build_native.py",
            returncode=4,
        )


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


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real 3-master Redis Cluster, started by the first test that needs it."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisCluster) -> RedisCluster:
    """The running cluster, every node up (a test may kill one), its data and scripts
    flushed."""
    cluster = redis_cluster_session
    cluster.ensure_running()
    for node in cluster.nodes:
        node.command("FLUSHALL")
        node.command("SCRIPT", "FLUSH")
    return cluster


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
