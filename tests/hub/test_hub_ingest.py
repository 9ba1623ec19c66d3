"""`POST /api/v1/events` as the router calls it: `hub.ingest(body, authorization)`."""

from __future__ import annotations

import orjson
import pytest

from policies.model import AlertsPolicy
from proxy.errors import AuthRequired, BadRequest, BodyTooLarge, Forbidden, InvalidToken
from proxy.hub.events import MAX_EVENT_BYTES
from tests.hub.hubkit import SERVICE_TOKEN, FakeVerifier, HubFactory, make_token

EVENT = orjson.dumps({"type": "inventory_update", "update_type": "venta", "producto_id": 7})


async def test_service_token_and_admin_jwt_are_accepted(make_hub: HubFactory) -> None:
    running = await make_hub()
    hub = running.hub
    first = await hub.ingest(EVENT, f"Bearer {SERVICE_TOKEN}".encode())
    second = await hub.ingest(EVENT, f"Bearer {make_token(role='admin')}".encode())
    assert first == (202, {"id": 1})
    assert second == (202, {"id": 2})
    assert running.observer.counts["published", "inventory_update"] == 2


async def test_no_token_is_401(make_hub: HubFactory) -> None:
    hub = (await make_hub()).hub
    for authorization in (None, b"", b"  "):
        with pytest.raises(AuthRequired) as caught:
            await hub.ingest(EVENT, authorization)
        assert caught.value.status == 401


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer wrong-token", b"Bearer " + SERVICE_TOKEN.encode() + b"x", b"Basic abc", b"Bearer"],
)
async def test_wrong_token_is_401(make_hub: HubFactory, authorization: bytes) -> None:
    hub = (await make_hub()).hub
    with pytest.raises(InvalidToken) as caught:
        await hub.ingest(EVENT, authorization)
    assert caught.value.status == 401
    assert SERVICE_TOKEN not in caught.value.message


async def test_non_admin_jwt_is_403(make_hub: HubFactory) -> None:
    hub = (await make_hub()).hub
    with pytest.raises(Forbidden) as caught:
        await hub.ingest(EVENT, f"Bearer {make_token(role='vendedor')}".encode())
    assert caught.value.status == 403


async def test_without_a_service_token_only_admins_publish(make_hub: HubFactory) -> None:
    hub = (await make_hub(hub_kwargs={"ingest_token": None})).hub
    with pytest.raises(InvalidToken):
        await hub.ingest(EVENT, b"Bearer ")
    with pytest.raises(InvalidToken):
        await hub.ingest(EVENT, f"Bearer {SERVICE_TOKEN}".encode())
    assert (await hub.ingest(EVENT, f"Bearer {make_token(role='admin')}".encode()))[0] == 202


async def test_validation_error_names_the_field(make_hub: HubFactory) -> None:
    hub = (await make_hub()).hub
    bad = orjson.dumps({"type": "alert", "alert_type": "x", "severity": "loud", "title": "t"})
    with pytest.raises(BadRequest) as caught:
        await hub.ingest(bad, f"Bearer {SERVICE_TOKEN}".encode())
    body = orjson.loads(caught.value.body())
    assert (caught.value.status, body["error"], body["field"]) == (400, "invalid_event", "message")


async def test_over_64_kib_is_413(make_hub: HubFactory) -> None:
    hub = (await make_hub()).hub
    with pytest.raises(BodyTooLarge):
        await hub.ingest(b" " * (MAX_EVENT_BYTES + 1), f"Bearer {SERVICE_TOKEN}".encode())


async def test_authorization_is_checked_before_the_body(make_hub: HubFactory) -> None:
    hub = (await make_hub()).hub
    with pytest.raises(AuthRequired):
        await hub.ingest(b"not json", None)


async def test_reconfigure_swaps_the_service_token(make_hub: HubFactory) -> None:
    running = await make_hub()
    hub = running.hub
    hub.reconfigure(hub.ws_policy, AlertsPolicy(), FakeVerifier(), ("admin",), "new-token")
    with pytest.raises(InvalidToken):
        await hub.ingest(EVENT, f"Bearer {SERVICE_TOKEN}".encode())
    assert (await hub.ingest(EVENT, b"Bearer new-token"))[0] == 202
