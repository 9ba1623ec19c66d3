"""The app logs JSON lines like the sidecar, with request ids (CONTRACT 11), real process."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from upstream_harness import Api, RunningApp


def json_lines(app: RunningApp) -> list[dict[str, Any]]:
    """Every line the process wrote, decoded: a line that is not JSON fails the test."""
    return [json.loads(line) for line in app.log_text().splitlines() if line.strip()]


async def test_every_line_is_json_and_requests_carry_their_id(
    http: aiohttp.ClientSession, start: Callable[..., RunningApp]
) -> None:
    app = start(env={"JWT_SECRET": None})  # a warning at start, too
    api = Api(http, app)
    request_id = f"req-{uuid.uuid4()}"
    reply = await api.call(
        "GET", "/api/v1/productos?limit=1", user=None, headers={"X-Request-Id": request_id}
    )
    assert reply.status == 401
    app.stop()
    lines = json_lines(app)
    assert lines
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line), line
        assert line["ts"].endswith("Z") and line["level"] in {"debug", "info", "warning", "error"}
    assert any(
        line["level"] == "warning" and "JWT_SECRET is not set" in line["msg"] for line in lines
    )
    access = [line for line in lines if line.get("request_id") == request_id]
    assert len(access) == 1
    assert access[0]["logger"] == "upstream_app.access"
    assert (access[0]["method"], access[0]["path"], access[0]["status"]) == (
        "GET",
        "/api/v1/productos",
        401,
    )
    assert isinstance(access[0]["duration_ms"], float | int)


async def test_lines_written_while_handling_a_request_carry_its_id(
    http: aiohttp.ClientSession, start: Callable[..., RunningApp]
) -> None:
    app = start()
    api = Api(http, app)
    producto_id = await api.new_product(lots=((5, 30),))
    request_id = f"req-{uuid.uuid4()}"
    headers = {"Idempotency-Key": "k1", "X-Request-Id": request_id}
    for _ in range(2):
        await api.call(
            "POST",
            "/api/v1/ventas",
            user="vendedor",
            json_body={"producto_id": producto_id, "cantidad": 1},
            headers=headers,
        )
    # The next request on the same connection sends no id: its line has none.
    assert (await api.call("GET", "/healthz")).status == 200
    app.stop()
    lines = [line for line in json_lines(app) if line.get("request_id") == request_id]
    assert {line["logger"] for line in lines} == {
        "upstream_app.access",
        "upstream_app.idempotency",
    }
    (health,) = [line for line in json_lines(app) if line.get("path") == "/healthz"][-1:]
    assert "request_id" not in health
