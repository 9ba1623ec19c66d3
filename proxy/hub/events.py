"""Events from `POST /api/v1/events`: validation, ids, timestamps and their wire frames.

An accepted event is encoded to JSON once, without its id (the broker assigns ids, Redis
for several replicas), and the id is spliced in front when the broker hands it out. The
WebSocket frame is built once per event from those bytes: a server frame is unmasked, so
the same bytes are correct for every connection and fan-out never re-encodes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.errors import BadRequest, BodyTooLarge

MAX_EVENT_BYTES = 65_536
MAX_EVENT_KEY_LENGTH = 128
ALERT = "alert"
INVENTORY_UPDATE = "inventory_update"
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

_TYPE_PATTERN = re.compile(r"[a-z_]{1,64}")
_ALERT_STRINGS = ("alert_type", "title", "message")

OPCODE_TEXT = 0x1
OPCODE_PING = 0x9
_FIN = 0x80


def iso_utc(unix_seconds: float) -> str:
    """ISO 8601 in UTC with milliseconds and a `Z`, the form browsers' Date parses."""
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def server_frame(payload: bytes, opcode: int = OPCODE_TEXT) -> bytes:
    """One final, unmasked frame (RFC 6455 5.2): what wsproto's server side writes too."""
    length = len(payload)
    if length <= 125:
        header = bytes((_FIN | opcode, length))
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", _FIN | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, length)
    return header + payload


def message_frame(message: dict[str, Any]) -> bytes:
    """A server JSON message as a text frame."""
    return server_frame(orjson.dumps(message))


def _invalid(field: str, message: str) -> BadRequest:
    return BadRequest(message, code="invalid_event", field=field)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event before it has an id: `payload` is its JSON object with `timestamp`.

    `event_key` is the sender's name for the event, if it gave one: a resend under the same
    key within the hour is answered with the first id and not published again.
    """

    type: str
    severity: str | None
    payload: bytes
    event_key: str | None = None


@dataclass(frozen=True, slots=True)
class Published:
    """What the broker did with an event: its id, and False when `event_key` was known."""

    id: int
    fresh: bool = True


def parse_event(body: bytes, now_wall: float) -> Accepted:
    """Validate an ingest body (CONTRACT 9 "Events"); errors name the field at fault.

    Client-sent `id` and `timestamp` are replaced: both are the server's promise.
    """
    if len(body) > MAX_EVENT_BYTES:
        raise BodyTooLarge(f"an event body is at most {MAX_EVENT_BYTES} bytes")
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _invalid("body", "the body is not valid JSON") from None
    if not isinstance(event, dict):
        raise _invalid("body", "the body must be a JSON object")
    event_type = event.get("type")
    if not isinstance(event_type, str) or not _TYPE_PATTERN.fullmatch(event_type):
        raise _invalid("type", "type must be a string of a-z and _ (1 to 64 characters)")
    severity = None
    if event_type == ALERT:
        severity = _check_alert(event)
    elif event_type == INVENTORY_UPDATE:
        _check_inventory_update(event)
    event_key = _event_key(event)
    event.pop("id", None)
    event["timestamp"] = iso_utc(now_wall)
    return Accepted(event_type, severity, orjson.dumps(event), event_key)


def _event_key(event: dict[str, Any]) -> str | None:
    key = event.get("event_key")
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_EVENT_KEY_LENGTH:
        raise _invalid(
            "event_key", f"event_key must be a string of 1 to {MAX_EVENT_KEY_LENGTH} characters"
        )
    return key


def _check_alert(event: dict[str, Any]) -> str:
    for name in ("alert_type", "severity", "title", "message"):
        if name not in event:
            raise _invalid(name, f"an alert requires {name}")
        if not isinstance(event[name], str):
            raise _invalid(name, f"{name} must be a string")
    severity: str = event["severity"]
    if severity not in SEVERITY_RANK:
        raise _invalid("severity", "severity must be one of info, warning, critical")
    if "data" in event and not isinstance(event["data"], dict):
        raise _invalid("data", "data must be a JSON object")
    return severity


def _check_inventory_update(event: dict[str, Any]) -> None:
    update_type = event.get("update_type")
    if not isinstance(update_type, str) or not update_type:
        raise _invalid("update_type", "an inventory_update requires update_type (a string)")
    product = event.get("producto_id")
    valid_int = isinstance(product, int) and not isinstance(product, bool)
    if not (valid_int or (isinstance(product, str) and product)):
        raise _invalid("producto_id", "an inventory_update requires producto_id")


def with_id(event_id: int, payload: bytes) -> bytes:
    """The payload object with `"id"` as its first key; `payload` never holds an id."""
    return b'{"id":%d,%s' % (event_id, payload[1:])


@dataclass(frozen=True, slots=True)
class Event:
    """A published event as every replica holds it: its JSON and its ready-made frame."""

    id: int
    type: str
    json: bytes
    frame: bytes

    @property
    def is_alert(self) -> bool:
        return self.type == ALERT


def make_event(event_id: int, event_type: str, payload: bytes) -> Event:
    body = with_id(event_id, payload)
    return Event(event_id, event_type, body, server_frame(body))
