"""Replicas sharing a real redis-server: cross-replica fan-out, resume anywhere, outages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect

from proxy.hub.broker import RedisBroker
from tests.hub.hubkit import HubFactory, RunningHub, recv_json, recv_type, wait_for
from tests.support.redis_server import RedisServer


@pytest.fixture
def replicas(make_hub: HubFactory, redis_url: str) -> Any:
    async def start(history: int = 100) -> tuple[RunningHub, RunningHub]:
        hubs = []
        for _ in range(2):
            broker = RedisBroker(
                redis_url, history=history, prefix="t:events", block=0.2, max_backoff=0.2
            )
            hubs.append(await make_hub(history=history, hub_kwargs={"broker": broker}))
        return hubs[0], hubs[1]

    return start


async def test_event_ingested_at_a_reaches_clients_on_a_and_b(replicas: Any) -> None:
    a, b = await replicas()
    async with connect(a.url()) as on_a, connect(b.url("alerts")) as on_b:
        await recv_type(on_a, "welcome")
        await recv_type(on_b, "welcome")
        await a.publish({"type": "inventory_update", "update_type": "v", "producto_id": 1})
        await b.publish(
            {"type": "alert", "alert_type": "x", "severity": "info", "title": "t", "message": "m"}
        )
        assert [(await recv_json(on_a))["id"] for _ in range(2)] == [1, 2]
        alert = await recv_json(on_b)
        assert (alert["id"], alert["type"]) == (2, "alert")


async def test_client_moving_from_a_to_b_resumes_without_loss(replicas: Any) -> None:
    a, b = await replicas()
    async with connect(a.url()) as ws:
        await recv_type(ws, "welcome")
        for n in range(3):
            await a.publish({"type": "tick", "n": n})
        seen = [(await recv_json(ws))["id"] for _ in range(3)]
    for n in range(3, 6):
        await a.publish({"type": "tick", "n": n})
    async with connect(b.url()) as ws:
        await recv_type(ws, "welcome")
        await ws.send(f'{{"type":"resume","last_event_id":{seen[-1]}}}')
        replayed = [await recv_json(ws) for _ in range(3)]
        assert [(m["id"], m["n"]) for m in replayed] == [(4, 3), (5, 4), (6, 5)]
        assert await recv_json(ws) == {"type": "resumed", "from": 3, "count": 3}
        await a.publish({"type": "tick", "n": 6})
        assert (await recv_json(ws))["id"] == 7


async def test_resume_gap_is_computed_from_redis(replicas: Any) -> None:
    a, b = await replicas(history=3)
    for n in range(10):
        await a.publish({"type": "tick", "n": n})
    async with connect(b.url()) as ws:
        await recv_type(ws, "welcome")
        await ws.send('{"type":"resume","last_event_id":2}')
        assert await recv_json(ws) == {"type": "resume_gap", "from": 2, "oldest_available": 8}
        assert [(await recv_json(ws))["id"] for _ in range(3)] == [8, 9, 10]
        assert (await recv_json(ws))["type"] == "resumed"


async def test_redis_outage_keeps_local_delivery_and_recovers(
    replicas: Any, redis_server: RedisServer
) -> None:
    a, b = await replicas()
    async with connect(a.url()) as on_a, connect(b.url()) as on_b:
        await recv_type(on_a, "welcome")
        await recv_type(on_b, "welcome")
        await a.publish({"type": "before"})
        assert (await recv_json(on_a))["id"] == (await recv_json(on_b))["id"] == 1

        redis_server.stop()
        during = await a.publish({"type": "during"})
        assert a.hub.degraded
        local = await recv_json(on_a)
        assert (local["type"], local["id"]) == ("during", during) == ("during", 2)
        await on_a.send('{"type":"resume","last_event_id":0}')
        assert [(await recv_json(on_a))["id"] for _ in range(2)] == [1, 2]
        assert (await recv_json(on_a))["type"] == "resumed"

        redis_server.start()  # same port, empty: the ids must still grow on A
        await wait_for(lambda: not a.hub.degraded and not b.hub.degraded, timeout=10)
        after = await a.publish({"type": "after"})
        assert after > during
        assert (await recv_type(on_a, "after"))["id"] == after
        assert (await recv_type(on_b, "after"))["id"] == after


async def test_redis_down_at_start_serves_local_clients(make_hub: HubFactory) -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0", history=10, timeout=0.2, max_backoff=0.2)
    running = await make_hub(hub_kwargs={"broker": broker})
    assert running.hub.degraded
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        assert await running.publish({"type": "alone"}) == 1
        assert (await recv_json(ws))["type"] == "alone"


async def test_reader_picks_up_events_published_while_it_waited(replicas: Any) -> None:
    a, b = await replicas()
    async with connect(b.url()) as ws:
        await recv_type(ws, "welcome")
        ids = await asyncio.gather(*(a.publish({"type": "burst"}) for _ in range(50)))
        assert sorted(ids) == list(range(1, 51))
        assert [(await recv_json(ws))["id"] for _ in range(50)] == list(range(1, 51))


async def test_a_redis_that_lost_its_data_is_followed(
    replicas: Any, make_hub: HubFactory, redis_server: RedisServer
) -> None:
    a, b = await replicas()
    async with connect(b.url()) as on_b:
        await recv_type(on_b, "welcome")
        for _ in range(3):
            await a.publish({"type": "tick"})
        assert [(await recv_json(on_b))["id"] for _ in range(3)] == [1, 2, 3]
        redis_server.command("FLUSHALL")
        # A replica that never saw those ids publishes first into the empty stream.
        fresh = RedisBroker(redis_server.url, history=100, prefix="t:events", block=0.2)
        c = await make_hub(hub_kwargs={"broker": fresh})
        await c.publish({"type": "after_reset"})
        assert (await recv_type(on_b, "after_reset"))["type"] == "after_reset"
        assert await a.publish({"type": "tick"}) > 3


async def test_an_event_resent_to_another_replica_is_published_once(
    replicas: Any, redis_server: RedisServer
) -> None:
    a, b = await replicas()
    event = {"type": "tick", "event_key": "app-42"}
    async with connect(a.url()) as on_a, connect(b.url()) as on_b:
        await recv_type(on_a, "welcome")
        await recv_type(on_b, "welcome")
        first = await a.publish(event)
        # Resent to B (the app's first answer was lost), and concurrently to both.
        again = await asyncio.gather(b.publish(event), a.publish(event), b.publish(event))
        assert list(again) == [first] * 3
        await a.publish({"type": "marker"})
        for ws in (on_a, on_b):
            assert (await recv_json(ws))["type"] == "tick"
            assert (await recv_json(ws))["type"] == "marker"
    assert b.observer.counts["published", "tick"] == 0
    (seen_key,) = [k for k in redis_server.command("KEYS", "*").split(b"\r\n") if b"app-42" in k]
    assert seen_key.endswith(b":seen:app-42")
    ttl = int(redis_server.command("TTL", seen_key.decode()).strip().lstrip(b":"))
    assert 3500 < ttl <= 3600


async def test_concurrent_resends_to_fresh_replicas_publish_once(replicas: Any) -> None:
    a, b = await replicas()
    event = {"type": "tick", "event_key": "race"}
    ids = await asyncio.gather(*(hub.publish(event) for hub in (a, b) for _ in range(5)))
    assert len(set(ids)) == 1
    replay = await a.hub.replay(0)
    assert [e.id for e in replay.events] == [ids[0]]
