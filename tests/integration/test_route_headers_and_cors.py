"""Route header rules and CORS through the real sidecar, with an upstream that echoes what
it received: `request_headers` before forwarding, `response_headers` on every answer (the
sidecar's own errors too), preflights answered by the sidecar and never rate limited."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import yaml

from tests.support.policy_files import make_policy
from tests.support.processes import REPO, base_env, free_port

APP = "https://app.example.com"
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "PUT"}

HEADER_RULES = {
    "request_headers": {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]},
    "response_headers": {
        "set": {"Strict-Transport-Security": "max-age=31536000", "X-Frame-Options": "DENY"},
        "remove": ["Server"],
    },
}
CORS = {
    "allow_origins": [APP],
    "allow_methods": ["GET", "POST", "PUT"],
    "allow_headers": ["Authorization", "Content-Type"],
    "expose_headers": ["X-Request-Id", "RateLimit"],
    "allow_credentials": True,
    "max_age": "10m",
}


def routes(**extra: object) -> dict[str, object]:
    """One route for everything, with `extra` settings; a 1/min rule on /echo/limited."""
    route = {"name": "inventory", "path_prefix": "/", "upstream": "inventory", **extra}
    return {
        "routes": [route],
        "rate_limits": {"endpoints": [{"name": "one", "path": "/echo/limited", "limit": "1/min"}]},
    }


async def test_request_headers_are_set_and_removed_before_forwarding(
    upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(upstream.url, **routes(**HEADER_RULES))
    sent = {"X-Env": "dev", "X-Debug": "1", "X-Kept": "yes"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sidecar.url}/echo", headers=sent) as resp,
    ):
        assert resp.status == 200
    seen = upstream.hits("/echo")[-1].headers
    assert seen["x-env"] == "prod"  # replaced, not added next to the client's
    assert "x-debug" not in seen
    assert seen["x-kept"] == "yes"


async def test_request_headers_on_a_request_with_a_body(upstream, sidecar_factory) -> None:
    """A body takes the serving task's path, not the parser's callbacks: same rules."""
    sidecar = sidecar_factory(upstream.url, **routes(**HEADER_RULES))
    sent = {"X-Env": "dev", "X-Debug": "1"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/echo", data=b"x" * 10, headers=sent) as resp:
            assert resp.status == 200
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert "Server" not in resp.headers
    seen = upstream.hits("/echo")[-1]
    assert (seen.method, seen.headers["x-env"], "x-debug" in seen.headers) == (
        "POST",
        "prod",
        False,
    )


async def test_response_headers_on_upstream_answers(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **routes(**HEADER_RULES))
    async with aiohttp.ClientSession() as http, http.get(f"{sidecar.url}/echo") as resp:
        assert resp.status == 200
        assert resp.headers.getall("Strict-Transport-Security") == ["max-age=31536000"]
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "Server" not in resp.headers  # aiohttp's upstream sends one
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{upstream.url}/echo") as direct:
            assert "Server" in direct.headers  # so the removal above is the sidecar's


async def test_response_headers_on_the_sidecars_own_errors(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **routes(**HEADER_RULES))
    async with aiohttp.ClientSession() as http:
        bad_token = {"Authorization": "Bearer forged.token.here"}
        async with http.get(f"{sidecar.url}/echo", headers=bad_token) as resp:
            assert resp.status == 401
            assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert resp.headers["X-Frame-Options"] == "DENY"
        statuses = []
        for _ in range(2):
            async with http.get(f"{sidecar.url}/echo/limited") as resp:
                statuses.append(resp.status)
                assert resp.headers["X-Frame-Options"] == "DENY"
        assert statuses == [200, 429]


async def test_a_route_without_rules_passes_headers_as_they_are(upstream, sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/echo", headers={"X-Debug": "1"}) as resp:
            assert "Server" in resp.headers
            assert "Access-Control-Allow-Origin" not in resp.headers
    assert upstream.hits("/echo")[-1].headers["x-debug"] == "1"


async def test_a_preflight_is_answered_never_forwarded_never_limited(
    upstream, sidecar_factory
) -> None:
    sidecar = sidecar_factory(upstream.url, "--access-log", **routes(cors=CORS))
    async with aiohttp.ClientSession() as http:
        for _ in range(4):  # the route's rule allows 1/min: a preflight does not count
            async with http.options(f"{sidecar.url}/echo/limited", headers=PREFLIGHT) as resp:
                assert resp.status == 204
                assert resp.headers["Access-Control-Allow-Origin"] == APP
                assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT"
                assert resp.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
                assert resp.headers["Access-Control-Max-Age"] == "600"
                assert resp.headers["Access-Control-Allow-Credentials"] == "true"
                assert resp.headers["Vary"] == "Origin"
        async with http.get(f"{sidecar.url}/echo/limited") as resp:
            assert resp.status == 200  # the rule's one request is still there
    assert upstream.seen and all(s.method != "OPTIONS" for s in upstream.seen)
    assert access_reasons(sidecar)["OPTIONS"] == ["cors_preflight"] * 4


async def test_a_preflight_with_a_bad_token_is_still_answered(upstream, sidecar_factory) -> None:
    """Identity comes after the preflight (browsers send no credentials with one), whichever
    way the request is taken."""
    sidecar = sidecar_factory(upstream.url, **routes(cors=CORS, **HEADER_RULES))
    forged = {**PREFLIGHT, "Authorization": "Bearer forged.token.here"}
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{sidecar.url}/echo", headers=forged) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == APP
            assert resp.headers["X-Frame-Options"] == "DENY"  # response_headers here too
        refused = {**forged, "Origin": "https://evil.example"}
        async with http.options(f"{sidecar.url}/echo", headers=refused) as resp:
            assert resp.status == 403
            assert resp.headers["X-Frame-Options"] == "DENY"
    assert upstream.seen == []


async def test_a_preflight_from_another_origin_is_refused(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, "--access-log", **routes(cors=CORS, **HEADER_RULES))
    stranger = {**PREFLIGHT, "Origin": "https://evil.example"}
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{sidecar.url}/echo", headers=stranger) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "cors_forbidden"
            assert "Access-Control-Allow-Origin" not in resp.headers
            assert resp.headers["X-Frame-Options"] == "DENY"
    assert upstream.seen == []
    assert access_reasons(sidecar)["OPTIONS"] == ["cors_forbidden"]


async def test_an_options_without_preflight_headers_is_forwarded(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **routes(cors=CORS))
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{sidecar.url}/echo", headers={"Origin": APP}) as resp:
            assert resp.status == 200
    assert [s.method for s in upstream.seen] == ["OPTIONS"]


async def test_simple_requests_from_allowed_and_other_origins(upstream, sidecar_factory) -> None:
    sidecar = sidecar_factory(upstream.url, **routes(cors=CORS))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/echo", headers={"Origin": APP}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == APP
            assert resp.headers["Vary"] == "Origin"
            assert resp.headers["Access-Control-Expose-Headers"] == "X-Request-Id, RateLimit"
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        async with http.get(
            f"{sidecar.url}/echo", headers={"Origin": "https://evil.example"}
        ) as resp:
            assert resp.status == 200  # the browser, not the sidecar, withholds the answer
            assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
        bad_token = {"Origin": APP, "Authorization": "Bearer forged.token.here"}
        async with http.get(f"{sidecar.url}/echo", headers=bad_token) as resp:
            assert resp.status == 401  # an error the script can read, so it can react
            assert resp.headers["Access-Control-Allow-Origin"] == APP


async def test_any_origin_without_credentials_answers_star(upstream, sidecar_factory) -> None:
    cors = {"allow_origins": ["*"], "allow_methods": ["GET"]}
    sidecar = sidecar_factory(upstream.url, **routes(cors=cors))
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{sidecar.url}/echo", headers=PREFLIGHT) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "*"


def access_reasons(sidecar) -> dict[str, list[str | None]]:
    """method -> the access-log reasons of its requests, in order."""
    sidecar.proc.stop_gracefully()
    reasons: dict[str, list[str | None]] = {}
    for line in sidecar.proc.output().splitlines():
        if line.startswith("{") and '"proxy.access"' in line:
            entry = json.loads(line)
            reasons.setdefault(entry["method"], []).append(entry["reason"])
    return reasons


def validate(tmp_path: Path, **extra: object) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "policy.yaml"
    path.write_text(
        yaml.safe_dump(
            make_policy(free_port(), "http://127.0.0.1:9", **routes(**extra)), sort_keys=False
        )
    )
    return subprocess.run(
        [sys.executable, "-m", "proxy", "validate", "--config", str(path)],
        env=base_env(), cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_validate_refuses_what_the_sidecar_owns(tmp_path: Path) -> None:
    result = validate(
        tmp_path,
        request_headers={"set": {"X-User-Id": "7"}, "remove": ["traceparent", "Connection"]},
        cors={"allow_origins": ["*"], "allow_credentials": True},
    )
    assert result.returncode == 1
    errors = result.stderr
    located = re.escape(str(tmp_path / "policy.yaml")) + r":\d+:\d+: "
    for key in (
        "routes[0].request_headers.set.X-User-Id: 'X-User-Id' may not be changed here",
        "routes[0].request_headers.remove[0]: 'traceparent' may not be changed here",
        "routes[0].request_headers.remove[1]: 'Connection' may not be changed here",
        "routes[0].cors.allow_credentials: cannot be true with allow_origins",
    ):
        assert re.search(located + re.escape(key), errors), errors


def test_validate_accepts_the_contract_example(tmp_path: Path) -> None:
    result = validate(tmp_path, **HEADER_RULES, cors=CORS)
    assert result.returncode == 0, result.stderr
