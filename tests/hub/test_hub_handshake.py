"""The upgrade request: accepted or refused, and the credential and Origin it carries."""

from __future__ import annotations

import asyncio

import orjson
from wsproto.frame_protocol import FrameProtocol

from proxy.hub.handshake import answer_upgrade
from tests.hub.hubkit import HubFactory, RawClient

HEAD = (
    b"GET /api/v1/ws/notifications HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)


def test_incomplete_head_waits_for_more() -> None:
    assert answer_upgrade(HEAD) is None


def test_accepts_and_keeps_what_follows_the_head() -> None:
    upgrade = answer_upgrade(HEAD + b"Origin: https://a.example\r\n\r\nEARLY")
    assert upgrade is not None and upgrade.connection is not None
    assert upgrade.response.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in upgrade.response
    assert (upgrade.origin, upgrade.credential, upgrade.rest) == (
        "https://a.example",
        None,
        b"EARLY",
    )


def test_bearer_subprotocol_is_selected_and_carries_the_token() -> None:
    upgrade = answer_upgrade(HEAD + b"Sec-WebSocket-Protocol: bearer, abc.def.ghi\r\n\r\n")
    assert upgrade is not None
    assert b"Sec-WebSocket-Protocol: bearer\r\n" in upgrade.response
    assert upgrade.credential == "Bearer abc.def.ghi"


def test_authorization_header_wins_over_the_subprotocol() -> None:
    upgrade = answer_upgrade(
        HEAD + b"Authorization: Bearer from-header\r\nSec-WebSocket-Protocol: bearer, other\r\n\r\n"
    )
    assert upgrade is not None and upgrade.credential == "Bearer from-header"


def test_other_subprotocols_are_not_selected() -> None:
    upgrade = answer_upgrade(HEAD + b"Sec-WebSocket-Protocol: chat\r\n\r\n")
    assert upgrade is not None and b"Sec-WebSocket-Protocol" not in upgrade.response


def test_a_request_that_is_no_upgrade_is_refused() -> None:
    upgrade = answer_upgrade(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert upgrade is not None and upgrade.connection is None
    assert upgrade.response.startswith(b"HTTP/1.1 400 ")


async def test_frames_sent_with_the_head_are_not_lost(make_hub: HubFactory) -> None:
    running = await make_hub()
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    ping = FrameProtocol(client=True, extensions=[]).send_data('{"type":"ping"}', fin=True)
    writer.write(HEAD + b"\r\n" + bytes(ping))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    client = RawClient(reader, writer)
    kinds = [orjson.loads((await client.frame())[1])["type"] for _ in range(2)]
    assert kinds == ["welcome", "pong"]
    client.close()
