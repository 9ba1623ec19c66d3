"""Keys that change while the real sidecar runs: a JWKS served over HTTP on loopback and
rotated, key files rewritten on disk (and picked up by SIGHUP alone)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import Process, free_port, start_sidecar

DEADLINE_S = 3.0


@pytest.fixture(scope="module")
def rsa_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in "abc"}


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig"}


def signed(key: rsa.RSAPrivateKey, kid: str | None) -> str:
    now = int(time.time())
    claims = {"sub": "u-1", "role": "viewer", "iat": now, "exp": now + 600}
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


@dataclass
class JwksServer:
    """Serves `keys` as a JWKS, or `status` when it is not 200; counts the fetches."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    fetches: int = 0
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    async def start(self) -> JwksServer:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._serve)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def _serve(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.status != 200:
            return web.json_response({"error": "down"}, status=self.status)
        return web.json_response({"keys": self.keys})


@pytest.fixture
async def jwks_server():
    server = await JwksServer().start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def rs256_policy(port: int, upstream_url: str, **jwt_settings: Any) -> dict[str, Any]:
    doc = make_policy(port, upstream_url)
    doc["auth"] = {"jwt": {"algorithms": ["RS256"], **jwt_settings}}
    return doc


async def status_of(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    async with http.get(f"{url}/echo", headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def until_status(http: aiohttp.ClientSession, url: str, token: str, want: int) -> None:
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        if (await status_of(http, url, token))[0] == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not {want} within {DEADLINE_S}s")


async def metric(http: aiohttp.ClientSession, url: str, name: str, result: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    found = re.search(rf'resilience_proxy_{name}\{{result="{result}"\}} (\S+)', text)
    assert found, f"{name} {result} missing"
    return float(found.group(1))


def assert_no_secret_in(output: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in output


async def test_a_jwks_url_fetched_rotated_and_down(
    upstream, jwks_server, rsa_keys, tmp_path
) -> None:
    jwks_server.status = 503  # the identity provider is not up yet
    port = free_port()
    config = write_policy(
        tmp_path / "policy.yaml",
        rs256_policy(port, upstream.url, jwks_url=jwks_server.url, jwks_refresh="1h"),
    )
    proc = start_sidecar(config, port)
    url = f"http://127.0.0.1:{port}"
    token_a, token_b, token_c = (signed(rsa_keys[k], k) for k in "abc")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/readyz") as resp:
                assert resp.status == 200
                assert (await resp.json())["degraded"] == ["jwks"]
            status, body = await status_of(http, url, token_a)
            assert (status, body["message"]) == (401, "signing keys unavailable")

            # 1. The provider comes up: the first set arrives (retried at 1 s, 2 s ...).
            jwks_server.status = 200
            jwks_server.keys = [public_jwk(rsa_keys["a"], "a")]
            await until_status(http, url, token_a, 200)
            async with http.get(f"{url}/readyz") as resp:
                assert (await resp.json())["degraded"] == []

            # 2. Rotation: a token with the new kid triggers an early fetch and is judged
            #    against the new set at once (its first request passes).
            jwks_server.keys = [public_jwk(rsa_keys["a"], "a"), public_jwk(rsa_keys["b"], "b")]
            fetches = jwks_server.fetches
            assert (await status_of(http, url, token_b))[0] == 200
            assert jwks_server.fetches == fetches + 1

            # 3. Another unknown kid within 30 s: no further early fetch; refused.
            status, body = await status_of(http, url, token_c)
            assert (status, body["message"]) == (401, "unknown key id")
            assert (await status_of(http, url, token_c))[0] == 401
            assert jwks_server.fetches == fetches + 1
            assert await metric(http, url, "jwks_refreshes_total", "success") >= 2
            assert await metric(http, url, "jwks_refreshes_total", "failure") >= 1
    finally:
        proc.stop_gracefully()
        output = proc.output()
        proc.stop()
    assert output.count("cannot refresh the JWKS") == 1  # once per failure streak
    key_n = public_jwk(rsa_keys["a"], "a")["n"]
    assert_no_secret_in(output, token_a, token_b, token_c, key_n)


async def test_a_failing_refresh_keeps_the_last_good_set(
    upstream, jwks_server, rsa_keys, tmp_path
) -> None:
    okp = {
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": "ed",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
    }
    jwks_server.keys = [okp, public_jwk(rsa_keys["a"], "a")]
    port = free_port()
    config = write_policy(
        tmp_path / "policy.yaml",
        rs256_policy(port, upstream.url, jwks_url=jwks_server.url, jwks_refresh="1s"),
    )
    proc = start_sidecar(config, port)
    url = f"http://127.0.0.1:{port}"
    token_a = signed(rsa_keys["a"], "a")
    try:
        async with aiohttp.ClientSession() as http:
            await until_status(http, url, token_a, 200)
            jwks_server.status = 500
            failures = await metric(http, url, "jwks_refreshes_total", "failure")
            end = time.monotonic() + 10
            while await metric(http, url, "jwks_refreshes_total", "failure") < failures + 2:
                assert time.monotonic() < end, "no failed refresh counted"
                await asyncio.sleep(0.1)
            assert (await status_of(http, url, token_a))[0] == 200  # the last good set
            async with http.get(f"{url}/readyz") as resp:
                assert (await resp.json())["degraded"] == []
    finally:
        proc.stop_gracefully()
        output = proc.output()
        proc.stop()
    assert output.count("cannot refresh the JWKS") == 1
    assert output.count("only RSA and EC") == 1  # the Ed25519 key: skipped, said once
    assert_no_secret_in(output, token_a, okp["x"])


async def test_key_files_rewritten_on_disk(upstream, rsa_keys, tmp_path: Path) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [public_jwk(rsa_keys["a"], "a")]}))
    port = free_port()
    config = write_policy(
        tmp_path / "policy.yaml", rs256_policy(port, upstream.url, jwks_file=str(jwks_file))
    )
    proc = start_sidecar(config, port)
    url = f"http://127.0.0.1:{port}"
    token_a, token_b = signed(rsa_keys["a"], "a"), signed(rsa_keys["b"], "b")
    try:
        async with aiohttp.ClientSession() as http:
            assert (await status_of(http, url, token_b))[0] == 401
            replaced = tmp_path / "jwks.json.new"
            both = {"keys": [public_jwk(rsa_keys["a"], "a"), public_jwk(rsa_keys["b"], "b")]}
            replaced.write_text(json.dumps(both))
            os.replace(replaced, jwks_file)
            await until_status(http, url, token_b, 200)
            successes = await metric(http, url, "policy_reloads_total", "success")
            failures = await metric(http, url, "policy_reloads_total", "failure")
            assert successes >= 1

            jwks_file.write_text("{ this is not a JWKS")
            end = time.monotonic() + DEADLINE_S
            while await metric(http, url, "policy_reloads_total", "failure") < failures + 1:
                assert time.monotonic() < end, "the garbage was not counted"
                await asyncio.sleep(0.05)
            assert (await status_of(http, url, token_b))[0] == 200  # the old keys stay
    finally:
        proc.stop_gracefully()
        output = proc.output()
        proc.stop()
    assert "key files rejected" in output
    assert_no_secret_in(output, token_a, token_b, public_jwk(rsa_keys["b"], "b")["n"])


async def test_sighup_rereads_a_key_file_the_poll_cannot_see(
    upstream, rsa_keys, tmp_path: Path
) -> None:
    def pem(key: rsa.RSAPrivateKey) -> bytes:
        return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)

    key_file = tmp_path / "public.pem"
    key_file.write_bytes(pem(rsa_keys["a"]))
    assert len(pem(rsa_keys["a"])) == len(pem(rsa_keys["b"]))
    port = free_port()
    config = write_policy(
        tmp_path / "policy.yaml",
        rs256_policy(port, upstream.url, public_key_file=str(key_file)),
    )
    proc: Process = start_sidecar(config, port)
    url = f"http://127.0.0.1:{port}"
    token_b = signed(rsa_keys["b"], None)
    try:
        async with aiohttp.ClientSession() as http:
            assert (await status_of(http, url, token_b))[0] == 401
            # Same inode, same size, same mtime: only SIGHUP can tell.
            before = key_file.stat()
            with key_file.open("r+b") as handle:
                handle.write(pem(rsa_keys["b"]))
            os.utime(key_file, ns=(before.st_atime_ns, before.st_mtime_ns))
            await asyncio.sleep(1.0)  # several polls pass without seeing it
            assert (await status_of(http, url, token_b))[0] == 401
            proc.signal(signal.SIGHUP)
            await until_status(http, url, token_b, 200)
    finally:
        proc.stop()
