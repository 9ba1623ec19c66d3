"""Event validation (CONTRACT 9 "Events") and the frames built once per event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from proxy.errors import BadRequest, BodyTooLarge
from proxy.hub.events import (
    MAX_EVENT_BYTES,
    OPCODE_PING,
    iso_utc,
    make_event,
    parse_event,
    server_frame,
)

NOW = 1_700_000_000.25
ALERT = {
    "type": "alert",
    "alert_type": "stock_bajo",
    "severity": "warning",
    "title": "Stock Bajo: Omega 3",
    "message": "Stock actual: 5 unidades. Minimo requerido: 10",
    "data": {"producto_id": 123, "stock_actual": 5, "umbral_min": 10},
}
UPDATE = {"type": "inventory_update", "update_type": "venta", "producto_id": 789}


def field_at_fault(event: Any) -> str:
    with pytest.raises(BadRequest) as caught:
        parse_event(orjson.dumps(event), NOW)
    assert caught.value.code == "invalid_event"
    assert caught.value.status == 400
    body = orjson.loads(caught.value.body())
    assert body["error"] == "invalid_event" and body["message"]
    return str(body["field"])


@pytest.mark.parametrize("name", ["alert_type", "severity", "title", "message"])
def test_each_missing_alert_field_is_named(name: str) -> None:
    event = dict(ALERT)
    del event[name]
    assert field_at_fault(event) == name


@pytest.mark.parametrize("name", ["alert_type", "severity", "title", "message"])
def test_each_non_string_alert_field_is_named(name: str) -> None:
    assert field_at_fault({**ALERT, name: 5}) == name


def test_severity_outside_the_three_levels() -> None:
    assert field_at_fault({**ALERT, "severity": "fatal"}) == "severity"


def test_alert_data_must_be_an_object() -> None:
    assert field_at_fault({**ALERT, "data": [1, 2]}) == "data"


@pytest.mark.parametrize("name", ["update_type", "producto_id"])
def test_inventory_update_required_fields(name: str) -> None:
    event = dict(UPDATE)
    del event[name]
    assert field_at_fault(event) == name


def test_producto_id_must_be_an_id() -> None:
    assert field_at_fault({**UPDATE, "producto_id": True}) == "producto_id"
    assert field_at_fault({**UPDATE, "producto_id": None}) == "producto_id"
    assert parse_event(orjson.dumps({**UPDATE, "producto_id": "A-1"}), NOW).type == UPDATE["type"]


@pytest.mark.parametrize("event_type", [None, 5, "", "Alert", "with-dash", "x" * 65, "spaces here"])
def test_type_must_match_the_pattern(event_type: Any) -> None:
    event = {} if event_type is None else {"type": event_type}
    assert field_at_fault(event) == "type"


def test_body_must_be_a_json_object() -> None:
    assert field_at_fault([ALERT]) == "body"
    with pytest.raises(BadRequest) as caught:
        parse_event(b"{not json", NOW)
    assert caught.value.fields["field"] == "body"


def test_other_types_are_accepted_as_they_are() -> None:
    accepted = parse_event(orjson.dumps({"type": "price_change", "x": [1]}), NOW)
    assert accepted.type == "price_change" and accepted.severity is None
    assert orjson.loads(accepted.payload)["x"] == [1]


def test_body_over_64_kib_is_413_and_64_kib_is_accepted() -> None:
    filler = "x" * (MAX_EVENT_BYTES - len(orjson.dumps({"type": "t", "p": ""})))
    exact = orjson.dumps({"type": "t", "p": filler})
    assert len(exact) == MAX_EVENT_BYTES
    assert parse_event(exact, NOW).type == "t"
    with pytest.raises(BodyTooLarge) as caught:
        parse_event(exact + b" ", NOW)
    assert caught.value.status == 413


def test_server_sets_timestamp_and_id_over_what_the_client_sent() -> None:
    sent = {**ALERT, "id": 999, "timestamp": "yesterday"}
    accepted = parse_event(orjson.dumps(sent), NOW)
    assert accepted.severity == "warning"
    event = make_event(42, accepted.type, accepted.payload)
    decoded = orjson.loads(event.json)
    assert decoded["id"] == 42
    assert decoded["timestamp"] == "2023-11-14T22:13:20.250Z"
    assert {k: v for k, v in decoded.items() if k not in ("id", "timestamp")} == ALERT
    assert event.is_alert
    assert event.frame.endswith(event.json)


def test_iso_utc_round_trips() -> None:
    text = iso_utc(NOW)
    assert text.endswith("Z")
    assert datetime.fromisoformat(text).timestamp() == NOW


@given(st.binary(max_size=70_000))
def test_text_frames_are_the_bytes_wsproto_writes(payload: bytes) -> None:
    text = payload.decode("latin-1")
    expected = FrameProtocol(client=False, extensions=[]).send_data(text, fin=True)
    assert server_frame(text.encode()) == bytes(expected)


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_frame_length_boundaries(size: int) -> None:
    text = "a" * size
    expected = FrameProtocol(client=False, extensions=[]).send_data(text, fin=True)
    assert server_frame(text.encode()) == bytes(expected)


def test_ping_frame_is_wsprotos() -> None:
    assert server_frame(b"", OPCODE_PING) == bytes(FrameProtocol(False, []).ping(b""))
    assert Opcode.PING == OPCODE_PING
