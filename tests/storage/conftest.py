"""A real 3-master Redis Cluster for the storage tests: one per session, empty at each
test's start, every node running (a test may kill one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_cluster import RedisCluster


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisCluster) -> RedisCluster:
    """The running cluster, every node up, its data flushed."""
    cluster = redis_cluster_session
    cluster.ensure_running()
    for node in cluster.nodes:
        node.command("FLUSHALL")
        node.command("SCRIPT", "FLUSH")
    return cluster
