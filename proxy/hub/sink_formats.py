"""The bodies a sink POSTs, in its receiver's format (CONTRACT 13, `alerts.sinks[].format`).

Rendered in the sink's worker, off the ingest path, from the alert event's JSON as clients
get it (with `id` and `timestamp`):

- `json`: that JSON unchanged;
- `slack`: an incoming-webhook body (`text` as the notification's fallback, `blocks`);
  Slack's mrkdwn reads `&`, `<` and `>` as markup (links, mentions), so text taken from
  the alert is escaped as Slack asks (`&amp;`, `&lt;`, `&gt;`), nothing else;
- `pagerduty`: an Events API v2 trigger; the routing key is read from the environment
  variable the sink names, at send time, and never logged;
- `alertmanager`: the one-element array `POST /api/v2/alerts` takes.

PagerDuty and Alertmanager take plain JSON strings and escape them where they render
HTML, so the JSON encoding is all they need.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import Any

import orjson

from policies.model import SinkPolicy

SOURCE = "resilience-sidecar"
"""`source`/`instance` of the alerts sent, with the host name when it is known."""

SLACK_HEADER_MAX = 150
SLACK_TEXT_MAX = 3000
PAGERDUTY_SUMMARY_MAX = 1024
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEVERITY_MARK = {"info": ":information_source: INFO", "warning": ":warning: WARNING",
                  "critical": ":rotating_light: CRITICAL"}  # fmt: skip


class SinkFormatError(Exception):
    """The alert cannot be rendered for this sink (e.g. the routing key is not set)."""


def _host() -> str:
    try:
        return socket.gethostname() or SOURCE
    except OSError:
        return SOURCE


HOST = _host()


def _text(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    return value if isinstance(value, str) else ""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    """What Slack asks of text in mrkdwn: `&`, `<`, `>` as entities, nothing else."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(event: Mapping[str, Any]) -> dict[str, Any]:
    severity = _text(event, "severity")
    mark = _SEVERITY_MARK.get(severity, severity.upper())
    title, message = _text(event, "title"), _text(event, "message")
    stamp = _text(event, "timestamp")
    context = f"{_text(event, 'alert_type')} · event {event.get('id')} · {stamp}"
    return {
        "text": _cut(f"[{severity.upper()}] {slack_escape(title)}: {slack_escape(message)}", 3000),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _cut(title or "alert", SLACK_HEADER_MAX)},
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _cut(f"*{mark}*\n{slack_escape(message)}", SLACK_TEXT_MAX),
                },
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": slack_escape(context)}]},
        ],
    }


def pagerduty_body(event: Mapping[str, Any], routing_key: str) -> dict[str, Any]:
    title, message = _text(event, "title"), _text(event, "message")
    summary = f"{title}: {message}" if message else title
    event_key = event.get("event_key")
    dedup = event_key if isinstance(event_key, str) and event_key else f"{SOURCE}-{event.get('id')}"
    details: dict[str, Any] = {
        "alert_type": _text(event, "alert_type"),
        "title": title,
        "message": message,
        "event_id": event.get("id"),
    }
    if isinstance(event.get("data"), dict):
        details["data"] = event["data"]
    payload: dict[str, Any] = {
        "summary": _cut(summary or "alert", PAGERDUTY_SUMMARY_MAX),
        "severity": _text(event, "severity") or "info",
        "source": HOST,
        "component": SOURCE,
        "custom_details": details,
    }
    if _text(event, "timestamp"):
        payload["timestamp"] = _text(event, "timestamp")
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": payload,
    }


def alertmanager_body(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One alert; scalar `data` entries with label-safe names become labels too (grouping
    by product or breaker), never overriding `alertname`, `severity` or `instance`."""
    labels = {
        "alertname": _text(event, "alert_type") or "alert",
        "severity": _text(event, "severity") or "info",
        "instance": HOST,
        "source": SOURCE,
    }
    data = event.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
            if scalar and _LABEL_NAME.fullmatch(key) and key not in labels:
                labels[key] = str(value)
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": _text(event, "title"),
            "description": _text(event, "message"),
            "event_id": str(event.get("id")),
        },
    }
    if _text(event, "timestamp"):
        alert["startsAt"] = _text(event, "timestamp")
    return [alert]


def render(sink: SinkPolicy, event_json: bytes, env: Mapping[str, str]) -> bytes:
    """The body to POST to `sink` for one alert event (its JSON as clients get it)."""
    if sink.format == "json":
        return event_json
    event = orjson.loads(event_json)
    if sink.format == "slack":
        return orjson.dumps(slack_body(event))
    if sink.format == "alertmanager":
        return orjson.dumps(alertmanager_body(event))
    if sink.format == "pagerduty":
        name = sink.routing_key_env or ""
        key = env.get(name, "")
        if not key:
            raise SinkFormatError(f"the routing key variable {name} is not set")
        return orjson.dumps(pagerduty_body(event, key))
    raise SinkFormatError(f"unknown sink format {sink.format!r}")
