"""Logs: JSON lines; access lines only with --access-log; never a token or secret."""

from __future__ import annotations

import json

import aiohttp

from tests.support.processes import TEST_SECRET
from tests.support.tokens import token


async def test_access_log_lines_and_no_secrets(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, "--access-log")
    secret_token = token("31", "viewer")
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{sidecar.url}/echo", headers={"Authorization": f"Bearer {secret_token}"}
        ) as resp:
            request_id = resp.headers["X-Request-Id"]
        async with http.get(
            f"{sidecar.url}/echo", headers={"Authorization": "Bearer forged.token.here"}
        ) as resp:
            assert resp.status == 401
    sidecar.proc.stop_gracefully()
    output = sidecar.proc.output()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "proxy.access"]
    assert any(
        line["request_id"] == request_id and line["status"] == 200 and line["route"] == "inventory"
        for line in access
    )
    assert secret_token not in output and "forged.token.here" not in output
    assert TEST_SECRET not in output


async def test_no_access_lines_without_the_flag(upstream, sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/echo") as resp:
            assert resp.status == 200
    sidecar.proc.stop_gracefully()
    assert '"logger":"proxy.access"' not in sidecar.proc.output()
