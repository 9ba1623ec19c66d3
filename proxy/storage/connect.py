"""Which Redis the storage settings name, and a client for it.

One server (`redis_url`), a Redis Cluster (`redis_cluster_nodes`: a few nodes to learn the
slot map from; redis-py's cluster client follows MOVED/ASK itself), or the master that
Sentinel names (`redis_sentinels` + `redis_sentinel_master`: each new connection asks the
sentinels, so after a failover the next connection reaches the promoted replica).

Clients never retry on their own: a failure reaches the caller at once, whose breaker and
fallback decide (a retry would only stretch the wait past `storage.timeout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from policies.model import StoragePolicy


class SentinelMaster(Redis):
    """The master's client; closing it closes the connections to the sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


def host_port(address: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`), as the policy checks wrote it."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """One server, a cluster, or a Sentinel-watched master."""

    url: str
    cluster_nodes: tuple[str, ...] = ()
    sentinels: tuple[str, ...] = ()
    sentinel_master: str | None = None

    @classmethod
    def from_policy(cls, storage: StoragePolicy) -> RedisTarget:
        return cls(
            storage.redis_url,
            storage.redis_cluster_nodes,
            storage.redis_sentinels,
            storage.redis_sentinel_master,
        )

    @property
    def cluster(self) -> bool:
        return bool(self.cluster_nodes)

    def client(self, *, connect_timeout: float, read_timeout: float | None) -> Any:
        """A `Redis` (one server, Sentinel) or `RedisCluster` with no retries of its own."""
        options: dict[str, Any] = {
            "socket_timeout": read_timeout,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if self.cluster_nodes:
            nodes = [ClusterNode(*host_port(node)) for node in self.cluster_nodes]
            return RedisCluster(startup_nodes=nodes, **options)
        if self.sentinels:
            sentinel = Sentinel(
                [host_port(node) for node in self.sentinels],
                sentinel_kwargs={
                    "socket_timeout": connect_timeout,
                    "socket_connect_timeout": connect_timeout,
                },
            )
            name = self.sentinel_master or ""
            return sentinel.master_for(name, redis_class=SentinelMaster, **options)
        return Redis.from_url(self.url, driver_info=None, **options)
