"""Identity is optional: `auth: {}` or no `auth` key verifies nothing, through the real sidecar."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import free_port, start_sidecar


@pytest.mark.parametrize("auth", [{}, None], ids=["auth-empty", "auth-absent"])
async def test_without_identity_every_request_is_anonymous(
    upstream, tmp_path: Path, auth: dict[str, object] | None
) -> None:
    port = free_port()
    doc = make_policy(port, upstream.url)
    if auth is None:
        del doc["auth"]
    else:
        doc["auth"] = auth
    doc["rate_limits"]["roles"]["anonymous"] = "3/min"
    config = write_policy(tmp_path / "policy.yaml", doc)
    proc = start_sidecar(config, port, JWT_SECRET="")  # not needed without auth.jwt
    url = f"http://127.0.0.1:{port}"
    sent = {
        "Authorization": "Bearer not-a-jwt-the-app-checks-itself",
        "X-User-Id": "42",
        "X-User-Role": "admin",
    }
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(4):
                async with http.get(f"{url}/echo", headers=sent) as resp:
                    statuses.append(resp.status)
                    if resp.status == 200:
                        echoed = (await resp.json())["headers"]
                    else:
                        refusal = await resp.json()
            assert statuses == [200, 200, 200, 429]
            assert refusal["rule"] == "role:anonymous"
            assert echoed["authorization"] == sent["Authorization"]
            assert "x-user-id" not in echoed and "x-user-role" not in echoed
            # The admin API has no way in without a token source: 401, never open.
            async with http.get(f"{url}/api/v1/resilience/circuit-breakers", headers=sent) as r:
                assert r.status == 401
    finally:
        proc.stop()
