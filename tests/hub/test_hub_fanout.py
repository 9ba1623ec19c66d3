"""Fan-out: channel filtering, resume, ordering at scale, slow consumers."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from proxy.hub.broker import MemoryBroker
from proxy.hub.history import Replay
from tests.hub.hubkit import (
    HubFactory,
    RawClient,
    RunningHub,
    recv_json,
    recv_type,
    wait_for,
)

ALERT = {
    "type": "alert",
    "alert_type": "stock_bajo",
    "severity": "warning",
    "title": "Stock Bajo",
    "message": "m",
}
UPDATE = {"type": "inventory_update", "update_type": "venta", "producto_id": 1}


async def welcomed(running: RunningHub, channel: str = "notifications", **kw: Any) -> Any:
    ws = await connect(running.url(channel), **kw)
    await recv_type(ws, "welcome")
    return ws


async def test_alerts_channel_gets_alerts_only(make_hub: HubFactory) -> None:
    running = await make_hub()
    notifications = await welcomed(running)
    alerts = await welcomed(running, "alerts")
    for event in (UPDATE, ALERT, {"type": "price_change"}, {**ALERT, "severity": "critical"}):
        await running.publish(event)
    got = [await recv_json(notifications) for _ in range(4)]
    assert [(m["id"], m["type"]) for m in got] == [
        (1, "inventory_update"),
        (2, "alert"),
        (3, "price_change"),
        (4, "alert"),
    ]
    assert got[1] == {**ALERT, "id": 2, "timestamp": got[1]["timestamp"]}
    first, second = await recv_json(alerts), await recv_json(alerts)
    assert [(first["id"], first["severity"]), (second["id"], second["severity"])] == [
        (2, "warning"),
        (4, "critical"),
    ]
    await notifications.close()
    await alerts.close()
    assert running.observer.counts["delivered", "notifications"] == 4
    assert running.observer.counts["delivered", "alerts"] == 2


async def test_resume_replays_missed_events_then_resumed(make_hub: HubFactory) -> None:
    running = await make_hub()
    for n in range(5):
        await running.publish({"type": "tick", "n": n})
    async with await welcomed(running) as ws:
        await ws.send('{"type":"resume","last_event_id":2}')
        replayed = [await recv_json(ws) for _ in range(3)]
        assert [m["id"] for m in replayed] == [3, 4, 5]
        assert await recv_json(ws) == {"type": "resumed", "from": 2, "count": 3}
        await ws.send('{"type":"resume","last_event_id":5}')
        assert await recv_json(ws) == {"type": "resumed", "from": 5, "count": 0}
        await ws.send('{"type":"resume","last_event_id":"5"}')
        assert (await recv_json(ws))["type"] == "error"


async def test_resume_gap_then_what_is_held(make_hub: HubFactory) -> None:
    running = await make_hub(history=3)
    for n in range(6):
        await running.publish({"type": "tick", "n": n})
    async with await welcomed(running) as ws:
        await ws.send('{"type":"resume","last_event_id":1}')
        assert await recv_json(ws) == {"type": "resume_gap", "from": 1, "oldest_available": 4}
        assert [(await recv_json(ws))["id"] for _ in range(3)] == [4, 5, 6]
        assert await recv_json(ws) == {"type": "resumed", "from": 1, "count": 3}


async def test_resume_on_alerts_replays_alerts_only(make_hub: HubFactory) -> None:
    running = await make_hub()
    for event in (ALERT, UPDATE, ALERT, UPDATE):
        await running.publish(event)
    async with await welcomed(running, "alerts") as ws:
        await ws.send('{"type":"resume","last_event_id":0}')
        assert [(await recv_json(ws))["id"] for _ in range(2)] == [1, 3]
        assert await recv_json(ws) == {"type": "resumed", "from": 0, "count": 2}


class GatedReplayBroker(MemoryBroker):
    """A broker whose resume answer waits for the test (as a Redis round trip might)."""

    def __init__(self) -> None:
        super().__init__(100)
        self.gate = asyncio.Event()
        self.asked = asyncio.Event()

    async def replay(self, last_id: int) -> Replay:
        self.asked.set()
        await self.gate.wait()
        return await super().replay(last_id)


async def test_live_events_during_a_resume_follow_it_without_duplicates(
    make_hub: HubFactory,
) -> None:
    broker = GatedReplayBroker()
    running = await make_hub(hub_kwargs={"broker": broker})
    await running.publish({"type": "tick"})
    async with await welcomed(running) as ws:
        await ws.send('{"type":"resume","last_event_id":0}')
        await asyncio.wait_for(broker.asked.wait(), 5)
        await running.publish({"type": "tick"})
        await running.publish({"type": "tick"})
        broker.gate.set()
        seen = [await recv_json(ws) for _ in range(4)]
        assert [m.get("id", m["type"]) for m in seen] == [1, 2, 3, "resumed"]
        await running.publish({"type": "tick"})
        assert (await recv_json(ws))["id"] == 4


async def collect(ws: ClientConnection, count: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < count:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if "id" in message:
            ids.append(message["id"])
    return ids


async def collect_until_closed(ws: ClientConnection, ids: list[int]) -> None:
    async for message in ws:
        decoded = orjson.loads(message)
        if "id" in decoded:
            ids.append(decoded["id"])


async def test_hundred_clients_get_hundred_events_in_order(make_hub: HubFactory) -> None:
    running = await make_hub(hub_kwargs={"yield_every": 7})
    clients = await asyncio.gather(*(welcomed(running) for _ in range(100)))
    receivers = [asyncio.create_task(collect(ws, 100)) for ws in clients]
    for n in range(100):
        await running.publish({"type": "tick", "n": n})
    results = await asyncio.wait_for(asyncio.gather(*receivers), 30)
    assert all(ids == list(range(1, 101)) for ids in results)
    assert running.observer.counts["delivered", "notifications"] == 100 * 100
    await asyncio.gather(*(ws.close() for ws in clients))


async def test_slow_consumer_is_closed_1013_and_fast_one_keeps_receiving(
    make_hub: HubFactory,
) -> None:
    running = await make_hub(send_queue=4)
    slow = await RawClient.connect(running.port, receive_buffer=4096)
    fast = await welcomed(running, max_queue=None)
    published: list[int] = []
    received: list[int] = []
    receiver = asyncio.create_task(collect_until_closed(fast, received))
    padding = "x" * 16_000
    try:
        async with asyncio.timeout(20):
            while running.observer.counts["slow", "notifications"] == 0:
                published.append(await running.publish({"type": "bulk", "pad": padding}))
                await asyncio.sleep(0)
        assert running.hub.connections()["total"] == 1
        code, messages = await slow.close_code(timeout=10)
        assert code == 1013
        slow_ids = [m["id"] for m in messages if "id" in m]
        assert slow_ids == published[: len(slow_ids)]
        assert len(slow_ids) < len(published)
        await wait_for(lambda: len(received) >= len(published), timeout=10)
        assert received == published
    finally:
        slow.close()
        await fast.close()
        receiver.cancel()


async def test_broadcast_writes_one_shared_frame(make_hub: HubFactory) -> None:
    """Every subscriber gets the very bytes built once for the event."""
    running = await make_hub()
    clients = [await RawClient.connect(running.port) for _ in range(3)]
    for client in clients:
        await client.frame()  # welcome
    event_id = await running.publish({"type": "tick"})
    payloads = {(await client.frame())[1] for client in clients}
    assert len(payloads) == 1
    assert orjson.loads(payloads.pop())["id"] == event_id
    for client in clients:
        client.close()


async def test_a_large_fan_out_lets_other_callbacks_run_midway(make_hub: HubFactory) -> None:
    running = await make_hub(hub_kwargs={"yield_every": 5})
    clients = [await welcomed(running) for _ in range(20)]
    await running.publish({"type": "tick"})
    seen_midway: list[int] = []
    counts = running.observer.counts
    # Queued after the fan-out task's wake-up: without yielding it would see all 20.
    asyncio.get_running_loop().call_soon(
        lambda: seen_midway.append(counts["delivered", "notifications"])
    )
    await wait_for(lambda: counts["delivered", "notifications"] == 20)
    assert seen_midway == [0]
    assert [(await recv_json(ws))["id"] for ws in clients] == [1] * 20
    await asyncio.gather(*(ws.close() for ws in clients))


async def test_a_socket_that_fails_to_write_is_dropped_and_the_rest_still_get_events(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    running = await make_hub()
    broken, healthy = await welcomed(running), await welcomed(running)
    await wait_for(lambda: running.hub.connections()["total"] == 2)
    first = next(iter(running.hub._subscribers["notifications"]))  # the first to connect

    class BrokenTransport:
        """Writes fail; everything else is the real transport's."""

        def __init__(self, real: Any) -> None:
            self._real = real

        def write(self, data: bytes) -> None:
            raise RuntimeError("transport gone")

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

    monkeypatch.setattr(first, "_transport", BrokenTransport(first._transport))
    await running.publish({"type": "tick"})
    assert (await recv_json(healthy))["id"] == 1
    await running.publish({"type": "tick"})
    assert (await recv_json(healthy))["id"] == 2
    assert "write failed" in caplog.text
    await wait_for(lambda: running.hub.connections()["total"] == 1)
    await broken.close()
    await healthy.close()
