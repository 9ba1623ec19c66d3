"""One WebSocket connection: every message and close code of CONTRACT section 6."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from datetime import datetime

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from policies.model import AlertsPolicy
from tests.hub.hubkit import (
    FakeVerifier,
    HubFactory,
    RawClient,
    close_code,
    make_token,
    recv_json,
    recv_type,
    wait_for,
)


async def test_welcome_on_each_channel(make_hub: HubFactory) -> None:
    running = await make_hub()
    for channel in ("notifications", "alerts"):
        async with connect(running.url(channel)) as ws:
            welcome = await recv_json(ws)
            assert welcome["type"] == "welcome"
            assert welcome["channel"] == channel
            assert welcome["authenticated"] is False
            assert isinstance(welcome["connection_id"], str) and welcome["connection_id"]
            assert datetime.fromisoformat(welcome["server_time"]).tzinfo is not None


async def test_ping_gets_pong(make_hub: HubFactory) -> None:
    running = await make_hub()
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        await ws.send('{"type":"ping"}')
        pong = await recv_json(ws)
        assert pong["type"] == "pong"
        assert datetime.fromisoformat(pong["timestamp"]).tzinfo is not None


async def test_bad_json_and_unknown_types_answer_error_and_stay_open(
    make_hub: HubFactory,
) -> None:
    running = await make_hub()
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        for text in ("{not json", '{"type":"launch"}', "[1, 2]", '"ping"'):
            await ws.send(text)
            error = await recv_json(ws)
            assert error["type"] == "error" and error["message"]
        await ws.send('{"type":"ping"}')
        assert (await recv_json(ws))["type"] == "pong"


async def test_protocol_pings_and_fragmented_messages(make_hub: HubFactory) -> None:
    running = await make_hub()
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        await asyncio.wait_for(await ws.ping(), 5)
        await ws.send(['{"type":', '"ping"}'])
        assert (await recv_json(ws))["type"] == "pong"


async def test_auth_message_ok_then_error_leaves_socket_open(make_hub: HubFactory) -> None:
    running = await make_hub()
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        await ws.send(orjson.dumps({"type": "auth", "token": make_token("42", "vendedor")}))
        assert await recv_json(ws) == {"type": "auth_ok", "user_id": "42", "role": "vendedor"}
        assert running.hub.connections()["authenticated"] == 1
        for token in ("garbage", "", None):
            await ws.send(orjson.dumps({"type": "auth", "token": token}))
            error = await recv_json(ws)
            assert error["type"] == "auth_error" and error["message"]
            assert "garbage" not in error["message"]
        await ws.send('{"type":"ping"}')
        assert (await recv_json(ws))["type"] == "pong"


async def test_authorization_header(make_hub: HubFactory) -> None:
    running = await make_hub()
    headers = {"Authorization": f"Bearer {make_token('7', 'admin')}"}
    async with connect(running.url(), additional_headers=headers) as ws:
        assert (await recv_json(ws))["authenticated"] is True
        assert running.hub.connections()["authenticated"] == 1


async def test_bad_header_token_is_auth_error_when_auth_is_optional(
    make_hub: HubFactory,
) -> None:
    running = await make_hub()
    async with connect(running.url(), additional_headers={"Authorization": "Bearer x"}) as ws:
        assert (await recv_json(ws))["authenticated"] is False
        assert (await recv_json(ws))["type"] == "auth_error"
        await ws.send('{"type":"ping"}')
        assert (await recv_json(ws))["type"] == "pong"


async def test_subprotocol_token_selects_bearer(make_hub: HubFactory) -> None:
    running = await make_hub()
    token = make_token("9", "viewer")
    async with connect(running.url(), subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "bearer"
        assert (await recv_json(ws))["authenticated"] is True


async def test_origin_outside_the_list_is_closed_1008(make_hub: HubFactory) -> None:
    running = await make_hub(allowed_origins=("https://shop.example",))
    async with connect(running.url(), origin="https://evil.example") as ws:  # type: ignore[arg-type]
        assert await close_code(ws) == 1008
    async with connect(running.url(), origin="https://Shop.example/") as ws:  # type: ignore[arg-type]
        assert (await recv_json(ws))["type"] == "welcome"
    async with connect(running.url()) as ws:  # no Origin: not a browser
        assert (await recv_json(ws))["type"] == "welcome"


async def test_require_auth_closes_1008_after_auth_timeout(make_hub: HubFactory) -> None:
    running = await make_hub(require_auth=True, auth_timeout=0.2)
    async with connect(running.url()) as ws:
        assert (await recv_json(ws))["authenticated"] is False
        assert await close_code(ws) == 1008


async def test_require_auth_failed_auth_closes_1008(make_hub: HubFactory) -> None:
    running = await make_hub(require_auth=True)
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        await ws.send('{"type":"auth","token":"forged"}')
        assert (await recv_json(ws))["type"] == "auth_error"
        assert await close_code(ws) == 1008
    async with connect(running.url(), additional_headers={"Authorization": "Bearer x"}) as ws:
        assert await close_code(ws) == 1008


async def test_require_auth_gets_events_only_once_authenticated(make_hub: HubFactory) -> None:
    running = await make_hub(require_auth=True)
    headers = {"Authorization": f"Bearer {make_token()}"}
    async with (
        connect(running.url()) as ws,
        connect(running.url(), additional_headers=headers) as witness,
    ):
        await recv_type(ws, "welcome")
        await recv_type(witness, "welcome")
        await ws.send('{"type":"resume","last_event_id":0}')
        assert (await recv_json(ws))["type"] == "error"
        await running.publish({"type": "before_auth"})
        # Once the authenticated witness has it, the fan-out of that event is over.
        assert (await recv_json(witness))["type"] == "before_auth"
        await ws.send(orjson.dumps({"type": "auth", "token": make_token()}))
        assert (await recv_json(ws))["type"] == "auth_ok"
        await running.publish({"type": "after_auth"})
        event = await recv_json(ws)
        assert (event["type"], event["id"]) == ("after_auth", 2)


async def test_token_expiry_sends_auth_expired_then_closes_4401(make_hub: HubFactory) -> None:
    running = await make_hub(token_expiry_grace=0.2)
    token = make_token(ttl=0.5)
    async with connect(
        running.url(), additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        assert (await recv_json(ws))["authenticated"] is True
        assert (await recv_json(ws)) == {"type": "auth_expired"}
        assert running.hub.connections()["authenticated"] == 0
        assert await close_code(ws) == 4401


async def test_refresh_within_grace_keeps_the_socket(make_hub: HubFactory) -> None:
    grace = 0.4
    running = await make_hub(token_expiry_grace=grace)
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        await ws.send(orjson.dumps({"type": "auth", "token": make_token(ttl=0.5)}))
        assert (await recv_json(ws))["type"] == "auth_ok"
        assert await recv_json(ws) == {"type": "auth_expired"}
        grace_ends = time.monotonic() + grace
        await ws.send(orjson.dumps({"type": "auth", "token": make_token(ttl=60)}))
        assert (await recv_json(ws))["type"] == "auth_ok"
        await wait_for(lambda: time.monotonic() > grace_ends + 0.2)
        await ws.send('{"type":"ping"}')
        assert (await recv_json(ws))["type"] == "pong"


async def test_leeway_delays_expiry(make_hub: HubFactory) -> None:
    running = await make_hub(token_expiry_grace=0.1, hub_kwargs={"leeway": 0.6})
    started = time.monotonic()
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        await ws.send(orjson.dumps({"type": "auth", "token": make_token(ttl=0.3)}))
        await recv_type(ws, "auth_ok")
        assert await recv_json(ws) == {"type": "auth_expired"}
        assert time.monotonic() - started >= 0.85


async def test_client_frame_over_max_message_bytes_closes_1009(make_hub: HubFactory) -> None:
    running = await make_hub(max_message_bytes=1024)
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        at_limit = '{"type":"ping","pad":"' + "x" * (1024 - 24) + '"}'
        assert len(at_limit) == 1024
        await ws.send(at_limit)
        assert (await recv_json(ws))["type"] == "pong"
        await ws.send('{"type":"ping","pad":"' + "é" * 600 + '"}')
        assert await close_code(ws) == 1009
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        await ws.send(["x" * 600, "y" * 600])
        assert await close_code(ws) == 1009


async def test_heartbeats_keep_live_clients_and_close_silent_ones(make_hub: HubFactory) -> None:
    running = await make_hub(heartbeat=0.15)
    silent = await RawClient.connect(running.port)
    try:
        async with connect(running.url(), ping_interval=None) as ws:
            await recv_type(ws, "welcome")
            code, messages = await silent.close_code()
            assert code == 1001
            assert [m["type"] for m in messages].count("heartbeat") >= 1
            # The library client answered the protocol pings: alive after the silent one.
            beat = await recv_type(ws, "heartbeat")
            assert datetime.fromisoformat(beat["timestamp"]).tzinfo is not None
            await ws.send('{"type":"ping"}')
            assert (await recv_type(ws, "pong"))["type"] == "pong"
    finally:
        silent.close()


async def test_heartbeats_are_spread_over_the_period(make_hub: HubFactory) -> None:
    """One beat per period for each socket, the first about a period after it connected,
    so not every socket in the same instant: an event arriving then would wait behind a
    burst of writes to all of them."""
    running = await make_hub(heartbeat=0.4)  # four slices, 0.1 s apart
    loop = asyncio.get_running_loop()

    async def two_beats(ws: ClientConnection) -> tuple[float, float]:
        await recv_type(ws, "heartbeat")
        first = loop.time()
        await recv_type(ws, "heartbeat")
        return first, loop.time()

    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(8):  # connected over about half a period
            clients.append(
                await stack.enter_async_context(connect(running.url(), ping_interval=None))
            )
            await asyncio.sleep(0.025)
        beats = await asyncio.wait_for(asyncio.gather(*(two_beats(ws) for ws in clients)), 10)
    firsts = sorted(first for first, _ in beats)
    assert firsts[-1] - firsts[0] >= 0.05, "every socket beaten in the same slice"
    for first, second in beats:
        assert 0.2 <= second - first <= 1.2, "not one beat per period"


async def test_client_close_and_connection_counts(make_hub: HubFactory) -> None:
    running = await make_hub()
    token = make_token()
    async with (
        connect(running.url()) as first,
        connect(running.url()) as second,
        connect(running.url("alerts"), additional_headers={"Authorization": f"Bearer {token}"}),
    ):
        await recv_type(first, "welcome")
        await recv_type(second, "welcome")
        await wait_for(lambda: running.hub.connections()["total"] == 3)
        assert running.hub.connections() == {
            "total": 3,
            "by_channel": {"notifications": 2, "alerts": 1},
            "authenticated": 1,
        }
        await first.close()
        assert first.close_code == 1000
        await wait_for(lambda: running.hub.connections()["total"] == 2)
    await wait_for(lambda: running.hub.connections()["total"] == 0)
    assert running.observer.counts["opened", "notifications"] == 2
    assert running.observer.counts["closed", "notifications"] == 2


async def test_shutdown_closes_with_1001(make_hub: HubFactory) -> None:
    running = await make_hub()
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        closing = asyncio.create_task(running.hub.close())
        assert await close_code(ws) == 1001
        await closing


async def test_reload_keeps_open_sockets(make_hub: HubFactory) -> None:
    running = await make_hub()
    hub = running.hub
    async with connect(running.url()) as ws:
        await recv_type(ws, "welcome")
        stricter = hub.ws_policy.__class__(require_auth=True, auth_timeout=0.1, heartbeat=5.0)
        hub.reconfigure(stricter, AlertsPolicy(), FakeVerifier(), ("admin",), "t")
        await running.hub.ingest(b'{"type":"still_here"}', b"Bearer t")
        assert (await recv_json(ws))["type"] == "still_here"
        assert hub.connections()["total"] == 1


async def test_unknown_path_and_bad_handshake_are_refused(make_hub: HubFactory) -> None:
    running = await make_hub()
    with pytest.raises(InvalidStatus):
        async with connect(f"ws://127.0.0.1:{running.port}/api/v1/ws/other"):
            pass
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(
        b"GET /api/v1/ws/notifications HTTP/1.1\r\nHost: x\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 400")
    writer.close()
    assert running.hub.connections()["total"] == 0
