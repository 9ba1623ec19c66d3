"""Sink formats (CONTRACT 13): each body as its receiver takes it, sent to real receivers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiohttp import web

from policies.model import SinkPolicy
from proxy.hub.sink_formats import (
    SinkFormatError,
    alertmanager_body,
    render,
    slack_escape,
)
from proxy.hub.sinks import AiohttpSinkSender, SinkDispatcher
from tests.hub.hubkit import RecordingObserver, wait_for

HOSTILE = "<script>alert(1)</script> & <b>bold</b>"

EVENT: dict[str, Any] = {
    "id": 7,
    "type": "alert",
    "alert_type": "stock_bajo",
    "severity": "critical",
    "title": "Stock Bajo: " + HOSTILE,
    "message": "Stock actual: 5 <unidades> & más",
    "data": {"producto_id": 123, "nested": {"x": 1}, "flag": True, "bad-name": "x"},
    "timestamp": "2026-12-03T14:00:00.000Z",
}
RAW = orjson.dumps(EVENT)


def sink(fmt: str, **fields: Any) -> SinkPolicy:
    return SinkPolicy(upstream="hook", path=f"/{fmt}", min_severity="info", format=fmt, **fields)  # type: ignore[arg-type]


def test_json_is_the_event_unchanged() -> None:
    assert render(sink("json"), RAW, {}) == RAW


def test_slack_escapes_the_three_characters_in_mrkdwn_only() -> None:
    body = orjson.loads(render(sink("slack"), RAW, {}))
    assert set(body) == {"text", "blocks"}
    text = body["text"]
    assert "<" not in text and ">" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;" in text
    assert "[CRITICAL]" in text
    header, section, context = body["blocks"]
    assert header["type"] == "header"
    assert header["text"] == {"type": "plain_text", "text": EVENT["title"]}
    assert section["text"]["type"] == "mrkdwn"
    assert "CRITICAL" in section["text"]["text"]
    assert "&lt;unidades&gt; &amp; más" in section["text"]["text"]
    assert "stock_bajo" in context["elements"][0]["text"]
    assert slack_escape("a&b<c>d") == "a&amp;b&lt;c&gt;d"


def test_slack_header_is_cut_to_slacks_limit() -> None:
    long = dict(EVENT, title="x" * 400)
    header = orjson.loads(render(sink("slack"), orjson.dumps(long), {}))["blocks"][0]
    assert len(header["text"]["text"]) == 150


def test_pagerduty_takes_the_key_from_the_environment() -> None:
    policy = sink("pagerduty", routing_key_env="PD_KEY")
    body = orjson.loads(render(policy, RAW, {"PD_KEY": "R0UT1NGKEY"}))
    assert body["routing_key"] == "R0UT1NGKEY"
    assert body["event_action"] == "trigger"
    assert body["dedup_key"]
    payload = body["payload"]
    assert payload["severity"] == "critical"
    assert payload["summary"].startswith("Stock Bajo: <script>")
    assert payload["source"]
    assert payload["custom_details"]["data"]["producto_id"] == 123
    assert payload["custom_details"]["alert_type"] == "stock_bajo"


def test_pagerduty_without_its_key_is_an_error_naming_the_variable_only() -> None:
    with pytest.raises(SinkFormatError, match="PD_KEY") as caught:
        render(sink("pagerduty", routing_key_env="PD_KEY"), RAW, {"OTHER": "secret"})
    assert "secret" not in str(caught.value)


def test_pagerduty_dedup_key_follows_an_event_key() -> None:
    keyed = orjson.dumps(dict(EVENT, event_key="sale-42"))
    body = orjson.loads(render(sink("pagerduty", routing_key_env="K"), keyed, {"K": "k"}))
    assert body["dedup_key"] == "sale-42"


def test_alertmanager_is_one_alert_with_label_safe_scalar_data() -> None:
    (alert,) = orjson.loads(render(sink("alertmanager"), RAW, {}))
    labels = alert["labels"]
    assert labels["alertname"] == "stock_bajo"
    assert labels["severity"] == "critical"
    assert labels["producto_id"] == "123"
    assert "nested" not in labels and "bad-name" not in labels and "flag" not in labels
    assert all(isinstance(v, str) for v in labels.values())
    assert alert["annotations"]["summary"] == EVENT["title"]
    assert alert["annotations"]["description"] == EVENT["message"]
    datetime.fromisoformat(alert["startsAt"])


def test_alertmanager_data_never_overrides_the_alert_name() -> None:
    (alert,) = alertmanager_body(dict(EVENT, data={"alertname": "x", "severity": "info"}))
    assert alert["labels"]["alertname"] == "stock_bajo"
    assert alert["labels"]["severity"] == "critical"


class Receivers:
    """Loopback HTTP receivers: one path per format, recording what arrives."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[Any]] = {}
        self.content_types: dict[str, str] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        name = request.path.strip("/")
        self.bodies.setdefault(name, []).append(orjson.loads(await request.read()))
        self.content_types[name] = request.headers.get("Content-Type", "")
        if name == "rejects":
            return web.json_response({"error": "bad request"}, status=400)
        return web.json_response({"status": "success"}, status=202)


@pytest.fixture
async def receivers() -> AsyncIterator[Receivers]:
    found = Receivers()
    app = web.Application()
    app.router.add_post("/{name}", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield found
    await runner.cleanup()


async def test_each_format_reaches_a_real_receiver(
    receivers: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_PD_ROUTING_KEY", "k-123")
    sinks = (
        sink("json"),
        sink("slack"),
        sink("pagerduty", routing_key_env="TEST_PD_ROUTING_KEY"),
        sink("alertmanager"),
    )
    sender = AiohttpSinkSender({"hook": receivers.url}, timeout=5)
    observer = RecordingObserver()
    dispatcher = SinkDispatcher(sinks, sender, observer)
    dispatcher.start()
    try:
        dispatcher.offer("critical", RAW)
        await wait_for(lambda: observer.counts["sink:success", "hook"] == 4)
    finally:
        await dispatcher.close()
        await sender.close()
    got = {name: bodies[0] for name, bodies in receivers.bodies.items()}
    assert got["json"] == EVENT
    assert {"text", "blocks"} <= set(got["slack"])
    pd = got["pagerduty"]
    assert pd["routing_key"] == "k-123" and pd["event_action"] == "trigger"
    assert {"summary", "severity", "source", "custom_details"} <= set(pd["payload"])
    assert pd["payload"]["severity"] in ("critical", "error", "warning", "info")
    (alert,) = got["alertmanager"]
    assert {"alertname", "severity"} <= set(alert["labels"])
    assert {"summary", "description"} <= set(alert["annotations"])
    assert "startsAt" in alert
    assert all(ct.startswith("application/json") for ct in receivers.content_types.values())
    assert len(receivers.bodies) == 4


async def test_a_missing_routing_key_fails_that_alert_and_keeps_the_sink_working(
    receivers: Receivers, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("TEST_PD_ROUTING_KEY", raising=False)
    policy = sink("pagerduty", routing_key_env="TEST_PD_ROUTING_KEY")
    sender = AiohttpSinkSender({"hook": receivers.url}, timeout=5)
    observer = RecordingObserver()
    dispatcher = SinkDispatcher((policy,), sender, observer)
    dispatcher.start()
    try:
        dispatcher.offer("critical", RAW)
        await wait_for(lambda: observer.counts["sink:failure", "hook"] == 1)
        monkeypatch.setenv("TEST_PD_ROUTING_KEY", "now-set")
        dispatcher.offer("critical", RAW)
        await wait_for(lambda: len(receivers.bodies.get("pagerduty", [])) == 1)
    finally:
        await dispatcher.close()
        await sender.close()
    assert receivers.bodies["pagerduty"][0]["routing_key"] == "now-set"
    assert "TEST_PD_ROUTING_KEY" in caplog.text


async def test_a_receiver_answering_4xx_is_a_failure_sent_once(receivers: Receivers) -> None:
    policy = SinkPolicy(upstream="hook", path="/rejects", min_severity="info")
    sender = AiohttpSinkSender({"hook": receivers.url}, timeout=5)
    observer = RecordingObserver()
    dispatcher = SinkDispatcher((policy,), sender, observer)
    dispatcher.start()
    try:
        dispatcher.offer("warning", RAW)
        await wait_for(lambda: observer.counts["sink:failure", "hook"] == 1)
    finally:
        await dispatcher.close()
        await sender.close()
    assert len(receivers.bodies["rejects"]) == 1
