"""Replicas sharing a real 3-master Redis Cluster: the stream and its id counter live in one
slot (one hash tag), so publishing, fan-out and resume work as on one server."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import connect

from proxy.hub.broker import RedisBroker
from proxy.storage.connect import RedisTarget
from tests.hub.hubkit import HubFactory, recv_json, recv_type
from tests.support.redis_cluster import RedisCluster


@pytest.fixture
def replicas(make_hub: HubFactory, redis_cluster: RedisCluster) -> Any:
    target = RedisTarget("", tuple(redis_cluster.addresses))

    async def start() -> list[Any]:
        hubs = []
        for _ in range(2):
            broker = RedisBroker(target, history=100, prefix="t:events", block=0.2)
            hubs.append(await make_hub(history=100, hub_kwargs={"broker": broker}))
        return hubs

    return start


def test_the_stream_and_its_counter_share_a_slot(redis_cluster: RedisCluster) -> None:
    broker = RedisBroker("redis://unused", history=1)
    slots = {
        redis_cluster.nodes[0].command("CLUSTER", "KEYSLOT", key)
        for key in (broker._counter, broker._stream)
    }
    assert len(slots) == 1


async def test_events_cross_replicas_and_resume_on_another(replicas: Any) -> None:
    a, b = await replicas()
    async with connect(a.url()) as on_a, connect(b.url()) as on_b:
        await recv_type(on_a, "welcome")
        await recv_type(on_b, "welcome")
        for n in range(3):
            await (a if n % 2 else b).publish({"type": "tick", "n": n})
        assert [(await recv_json(on_a))["id"] for _ in range(3)] == [1, 2, 3]
        assert [(await recv_json(on_b))["id"] for _ in range(3)] == [1, 2, 3]
    async with connect(b.url()) as ws:
        await recv_type(ws, "welcome")
        await ws.send('{"type":"resume","last_event_id":1}')
        assert [(await recv_json(ws))["id"] for _ in range(2)] == [2, 3]
        assert await recv_json(ws) == {"type": "resumed", "from": 1, "count": 2}
