"""Identity and rate limiting through the real sidecar."""

from __future__ import annotations

import re

import aiohttp

from tests.support.tokens import bearer, token


async def test_verified_identity_reaches_upstream_and_forged_headers_do_not(
    upstream, sidecar
) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {**bearer("42", "vendedor"), "X-User-Role": "admin", "X-User-Id": "1"}
        async with http.get(f"{sidecar.url}/echo", headers=headers) as resp:
            seen = (await resp.json())["headers"]
        assert seen["x-user-id"] == "42" and seen["x-user-role"] == "vendedor"
        assert seen["authorization"].startswith("Bearer ")  # forwarded unchanged
        async with http.get(
            f"{sidecar.url}/echo", headers={"X-User-Role": "admin", "X-User-Id": "1"}
        ) as resp:
            seen = (await resp.json())["headers"]
        assert "x-user-role" not in seen and "x-user-id" not in seen


async def test_bad_tokens_get_401_json(upstream, sidecar) -> None:
    bad = [
        "Bearer not-a-jwt",
        f"Bearer {token(ttl=-3600)}",
        "Bearer " + token()[:-4] + "AAAA",
        "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwicm9sZSI6ImFkbWluIn0.",
    ]
    async with aiohttp.ClientSession() as http:
        for value in bad:
            async with http.get(f"{sidecar.url}/echo", headers={"Authorization": value}) as r:
                assert r.status == 401, value
                assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
                body = await r.json()
                assert body["error"] == "invalid_token"
                assert value.split()[-1] not in str(body)
    assert upstream.hits("/echo") == []


async def test_invalid_token_anonymous_mode(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, auth={"invalid_token": "anonymous"})
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{sidecar.url}/echo", headers={"Authorization": "Bearer junk"}
        ) as resp:
            assert resp.status == 200
            assert "x-user-id" not in (await resp.json())["headers"]


async def test_role_limit_answers_429_with_headers(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(
        upstream.url, rate_limits={"roles": {"viewer": "3/min", "anonymous": "2/min"}}
    )
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(4):
            async with http.get(f"{sidecar.url}/echo", headers=bearer("9", "viewer")) as resp:
                statuses.append(resp.status)
                last_headers = resp.headers
                body = await resp.json()
        assert statuses == [200, 200, 200, 429]
        assert body["error"] == "rate_limited" and body["rule"] == "role:viewer"
        assert 0 < body["retry_after_s"] <= 60
        assert int(last_headers["Retry-After"]) >= 1
        assert last_headers["X-RateLimit-Limit"] == "3"
        assert last_headers["X-RateLimit-Remaining"] == "0"
        assert last_headers["X-RateLimit-Window"] == "60"
        assert re.fullmatch(r'"role:viewer";q=3;w=60', last_headers["RateLimit-Policy"])
        assert re.fullmatch(r'"role:viewer";r=0;t=\d+', last_headers["RateLimit"])
        # Another user has their own window; anonymous clients are keyed by IP.
        async with http.get(f"{sidecar.url}/echo", headers=bearer("10", "viewer")) as resp:
            assert resp.status == 200
            assert resp.headers["X-RateLimit-Remaining"] == "2"
        for expected in (200, 200, 429):
            async with http.get(f"{sidecar.url}/echo") as resp:
                assert resp.status == expected


async def test_endpoint_rule_by_ip_is_tighter_and_rejections_use_no_quota(
    upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(
        upstream.url,
        rate_limits={
            "roles": {"viewer": "5/min"},
            "endpoints": [{"name": "login", "path": "/echo/login", "limit": "2/min", "key": "ip"}],
        },
    )
    async with aiohttp.ClientSession() as http:
        codes = []
        for _ in range(4):
            async with http.post(f"{sidecar.url}/echo/login", headers=bearer("3")) as resp:
                codes.append(resp.status)
                if resp.status == 429:
                    assert (await resp.json())["rule"] == "login"
        assert codes == [200, 200, 429, 429]
        # The two refused requests used none of the role quota: 3 of 5 remain.
        async with http.get(f"{sidecar.url}/echo", headers=bearer("3")) as resp:
            assert resp.headers["X-RateLimit-Remaining"] == "2"


async def test_shadow_mode_admits_and_counts(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(
        upstream.url, rate_limits={"mode": "shadow", "roles": {"anonymous": "1/min"}}
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(f"{sidecar.url}/echo") as resp:
                assert resp.status == 200
                assert resp.headers["X-RateLimit-Limit"] == "1"
        async with http.get(f"{sidecar.url}/metrics") as resp:
            text = await resp.text()
    assert (
        'resilience_proxy_rate_limit_decisions_total{decision="shadow_limited",'
        'rule="role:anonymous"} 2.0' in text
    )


async def test_usage_endpoint(upstream, sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/echo/a", "/echo/a?q=1", "/echo/b"):
            async with http.get(f"{sidecar.url}{path}", headers=bearer("5", "viewer")):
                pass
        url = f"{sidecar.url}/api/v1/resilience/rate-limit/user/5"
        async with http.get(url, headers=bearer("5", "viewer")) as resp:
            assert resp.status == 200
            assert await resp.json() == {
                "user_id": "5",
                "endpoints": {"/echo/a": 2, "/echo/b": 1},
                "total_requests": 3,
            }
        async with http.get(url, headers=bearer("1", "admin")) as resp:
            assert resp.status == 200
        async with http.get(url, headers=bearer("6", "viewer")) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "forbidden"
        async with http.get(url) as resp:
            assert resp.status == 401


async def test_admin_endpoints_need_an_admin_token(upstream, sidecar) -> None:
    paths = [
        "/api/v1/resilience/circuit-breakers",
        "/api/v1/resilience/circuit-breakers/inventory",
        "/api/v1/resilience/policy",
    ]
    async with aiohttp.ClientSession() as http:
        for path in paths:
            async with http.get(f"{sidecar.url}{path}") as resp:
                assert resp.status == 401, path
                assert resp.headers["WWW-Authenticate"] == "Bearer"
                assert (await resp.json())["error"] == "invalid_token"
            async with http.get(f"{sidecar.url}{path}", headers=bearer("2", "vendedor")) as resp:
                assert resp.status == 403, path
            async with http.get(f"{sidecar.url}{path}", headers=bearer("1", "admin")) as resp:
                assert resp.status == 200, path


async def test_policy_endpoint_masks_secrets(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(
        upstream.url, storage={"redis_url": "redis://:hunter2@127.0.0.1:6390/0"}
    )
    async with aiohttp.ClientSession() as http:
        url = f"{sidecar.url}/api/v1/resilience/policy"
        async with http.get(url, headers=bearer("1", "admin")) as resp:
            text = await resp.text()
            doc = await resp.json()
    assert "hunter2" not in text
    assert re.fullmatch(r"[0-9a-f]{64}", doc["hash"])
    assert doc["source"].endswith(".yaml") and doc["loaded_at"]
    assert doc["policy"]["upstreams"]["inventory"]["url"] == upstream.url
