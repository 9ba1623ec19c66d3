"""`POST /api/v1/events` as the router calls it: `hub.ingest(body, authorization)`."""

from __future__ import annotations

import orjson
import pytest

from policies.model import AlertsPolicy, SinkPolicy
from proxy.clock import FakeClock
from proxy.errors import AuthRequired, BadRequest, BodyTooLarge, Forbidden, InvalidToken
from proxy.hub.events import MAX_EVENT_BYTES
from tests.hub.hubkit import SERVICE_TOKEN, FakeVerifier, HubFactory, make_token, wait_for

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


def keyed(key: object, **fields: object) -> bytes:
    event = {"type": "inventory_update", "update_type": "venta", "producto_id": 7, **fields}
    return orjson.dumps({**event, "event_key": key})


async def test_a_resent_event_key_gets_the_first_id_and_is_not_published_again(
    make_hub: HubFactory,
) -> None:
    running = await make_hub()
    service = f"Bearer {SERVICE_TOKEN}".encode()
    first = await running.hub.ingest(keyed("app-1"), service)
    again = await running.hub.ingest(keyed("app-1"), service)
    other = await running.hub.ingest(keyed("app-2"), service)
    assert (first, again, other) == ((202, {"id": 1}), (202, {"id": 1}), (202, {"id": 2}))
    assert running.observer.counts["published", "inventory_update"] == 2
    replay = await running.hub.replay(0)
    assert [event.id for event in replay.events] == [1, 2]
    assert b'"event_key":"app-1"' in replay.events[0].json


async def test_an_event_key_is_forgotten_after_an_hour(make_hub: HubFactory) -> None:
    clock = FakeClock()
    running = await make_hub(hub_kwargs={"clock": clock})
    service = f"Bearer {SERVICE_TOKEN}".encode()
    assert await running.hub.ingest(keyed("k"), service) == (202, {"id": 1})
    clock.advance(3599)
    assert await running.hub.ingest(keyed("k"), service) == (202, {"id": 1})
    clock.advance(1)
    assert await running.hub.ingest(keyed("k"), service) == (202, {"id": 2})


@pytest.mark.parametrize("key", ["", "x" * 129, 7, ["k"], {"k": 1}, True])
async def test_a_bad_event_key_is_400_naming_the_field(make_hub: HubFactory, key: object) -> None:
    hub = (await make_hub()).hub
    with pytest.raises(BadRequest) as caught:
        await hub.ingest(keyed(key), f"Bearer {SERVICE_TOKEN}".encode())
    assert caught.value.status == 400
    assert caught.value.fields["field"] == "event_key"


async def test_an_event_key_of_128_characters_is_accepted(make_hub: HubFactory) -> None:
    hub = (await make_hub()).hub
    assert (await hub.ingest(keyed("x" * 128), f"Bearer {SERVICE_TOKEN}".encode()))[0] == 202


async def test_a_resent_alert_reaches_the_sinks_once(make_hub: HubFactory) -> None:
    sent: list[bytes] = []

    async def send(sink: SinkPolicy, body: bytes) -> str:
        sent.append(body)
        return "success"

    alerts = AlertsPolicy(sinks=(SinkPolicy(upstream="email_service", path="/send"),))
    running = await make_hub(alerts=alerts, hub_kwargs={"sink_send": send})
    alert = {"type": "alert", "alert_type": "x", "severity": "critical", "title": "t"}
    body = orjson.dumps({**alert, "message": "m", "event_key": "alert-1"})
    for _ in range(3):
        assert await running.hub.ingest(body, f"Bearer {SERVICE_TOKEN}".encode()) == (
            202,
            {"id": 1},
        )
    later = orjson.dumps({**alert, "message": "m", "event_key": "alert-2"})
    await running.hub.ingest(later, f"Bearer {SERVICE_TOKEN}".encode())
    await wait_for(lambda: len(sent) >= 2)  # sinks are sent in order: no copy of 1 after 2
    assert [orjson.loads(body)["id"] for body in sent] == [1, 2]
