"""One outgoing budget per WebSocket (CONTRACT 14): pongs, answers and events share it."""

from __future__ import annotations

import asyncio

import pytest

from tests.hub.hubkit import HubFactory, RawClient, RunningHub

ZERO_MASK = b"\x00\x00\x00\x00"  # a client frame must be masked; a zero key leaves it as is


def client_frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + ZERO_MASK + payload


PROTOCOL_PING = client_frame(0x9, b"p" * 100)
JSON_PING = client_frame(0x1, b'{"type":"ping"}')


async def close_code(client: RawClient) -> int:
    """Read everything the server sent (fast: raw chunks, parsed after) up to its close frame."""
    data = bytearray()
    async with asyncio.timeout(20):
        while chunk := await client.reader.read(1 << 20):
            data += chunk
    offset = 0
    while offset < len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        offset += 2
        if length == 126:
            length = int.from_bytes(data[offset : offset + 2], "big")
            offset += 2
        elif length == 127:
            length = int.from_bytes(data[offset : offset + 8], "big")
            offset += 8
        if opcode == 0x8:
            return int.from_bytes(data[offset : offset + 2], "big")
        offset += length
    raise AssertionError("no close frame before the end of the stream")


async def flood_until_closed(running: RunningHub, client: RawClient, frame: bytes) -> None:
    """Send `frame` in bursts, never reading, until the hub counts a slow consumer."""
    async with asyncio.timeout(30):
        while running.observer.counts["slow", "notifications"] == 0:
            client.writer.write(frame * 200)
            await asyncio.sleep(0)  # let the hub read (it stops reading once it has closed)


@pytest.mark.parametrize("frame", [PROTOCOL_PING, JSON_PING], ids=["protocol-ping", "json-ping"])
async def test_a_ping_flood_never_read_is_closed_1013(make_hub: HubFactory, frame: bytes) -> None:
    running = await make_hub(send_queue=50)
    client = await RawClient.connect(running.port, receive_buffer=4096)
    try:
        await flood_until_closed(running, client, frame)
        assert await close_code(client) == 1013
        assert running.hub.connections()["total"] == 0
    finally:
        client.close()


async def test_events_past_send_queue_bytes_close_1013(make_hub: HubFactory) -> None:
    running = await make_hub(send_queue=1_000_000, send_queue_bytes=64 * 1024)
    client = await RawClient.connect(running.port, receive_buffer=4096)
    published = 0
    try:
        async with asyncio.timeout(30):
            while running.observer.counts["slow", "notifications"] == 0:
                await running.publish({"type": "bulk", "pad": "x" * 4000})
                published += 1
                await asyncio.sleep(0)
        assert await close_code(client) == 1013
        # Closed by bytes long before the message count: what the transport and the
        # kernel buffers held, plus at most 64 KiB of backlog.
        assert published < 3000
    finally:
        client.close()
