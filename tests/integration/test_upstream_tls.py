"""https:// upstreams through the real sidecar: real aiohttp TLS servers on loopback behind it.

A certificate that fails verification is a connect-failure attempt (retried even for a
POST, counted, felt by the breaker), and the final 502 says TLS failed and why.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.fault_upstream import FaultUpstream
from tests.support.processes import EVENTS_TOKEN
from tests.support.tls import BlockingTlsServer, Issued, Pki, server_context

TlsUpstreamFactory = Callable[..., Awaitable[FaultUpstream]]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def tls_upstream(pki: Pki) -> AsyncIterator[TlsUpstreamFactory]:
    started: list[FaultUpstream] = []

    async def start(issued: Issued | None = None, client_ca: Pki | None = None) -> FaultUpstream:
        context = server_context(issued or pki.issue(), client_ca)
        server = await FaultUpstream(ssl_context=context).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


def tls_policy(retry: int = 3, **tls: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"retry": {"max_attempts": retry, "base_delay": "1ms"}}
    if tls:
        settings["tls"] = {k: v if isinstance(v, bool) else str(v) for k, v in tls.items()}
    return {"upstreams": {"inventory": settings}}


async def get(url: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.request(method, url) as resp:
        return resp.status, await resp.json()


async def metric(base: str, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"resilience_proxy_{name}\{{(.*)\}} (\S+)$", line)
        if match and all(part in match.group(1).split(",") for part in wanted.split(",")):
            total += float(match.group(2))
    return total


async def test_upstream_with_a_trusted_ca_is_reached(pki, tls_upstream, sidecar_factory) -> None:
    upstream = await tls_upstream()
    sidecar = sidecar_factory(upstream.url, **tls_policy(ca_file=pki.ca_file))
    status, body = await get(f"{sidecar.url}/echo?over=tls")
    assert status == 200
    assert body["target"] == "/echo?over=tls"
    assert body["headers"]["x-forwarded-proto"] == "http"  # the client spoke plain HTTP
    assert upstream.hits("/echo")


async def test_unknown_ca_is_retried_as_connect_failure_then_502(
    pki, tmp_path, tls_upstream, sidecar_factory
) -> None:
    upstream = await tls_upstream(Pki(tmp_path / "other").issue())
    sidecar = sidecar_factory(upstream.url, **tls_policy(ca_file=pki.ca_file))
    status, body = await get(f"{sidecar.url}/echo", method="POST")  # retried: nothing was sent
    assert status == 502
    assert body["error"] == "upstream_unavailable"
    assert "TLS failed: unknown CA" in body["message"]
    assert "unable to get local issuer certificate" in body["message"]
    assert not upstream.seen
    attempts = await metric(sidecar.url, "upstream_attempts_total", outcome="connect_failure")
    assert attempts == 3
    assert await metric(sidecar.url, "retries_total", reason="connect-failure") == 2


async def test_tls_failures_open_the_breaker(pki, tmp_path, tls_upstream, sidecar_factory) -> None:
    upstream = await tls_upstream(Pki(tmp_path / "other").issue())
    policy = tls_policy(retry=1, ca_file=pki.ca_file)
    policy["upstreams"]["inventory"]["circuit_breaker"] = {"failure_threshold": 2}
    sidecar = sidecar_factory(upstream.url, **policy)
    assert (await get(f"{sidecar.url}/echo"))[0] == 502
    assert (await get(f"{sidecar.url}/echo"))[0] == 502
    status, body = await get(f"{sidecar.url}/echo")
    assert (status, body["error"]) == (503, "circuit_open")


async def test_wrong_server_name_is_refused(pki, tls_upstream, sidecar_factory) -> None:
    upstream = await tls_upstream(pki.issue("api.internal"))
    sidecar = sidecar_factory(upstream.url, **tls_policy(retry=1, ca_file=pki.ca_file))
    status, body = await get(f"{sidecar.url}/echo")
    assert status == 502
    assert "TLS failed" in body["message"]
    assert "not valid for '127.0.0.1'" in body["message"]


async def test_server_name_sets_the_name_checked(pki, tls_upstream, sidecar_factory) -> None:
    upstream = await tls_upstream(pki.issue("api.internal"))
    policy = tls_policy(ca_file=pki.ca_file, server_name="api.internal")
    sidecar = sidecar_factory(upstream.url, **policy)
    assert (await get(f"{sidecar.url}/echo"))[0] == 200
    other = sidecar_factory(
        upstream.url, **tls_policy(retry=1, ca_file=pki.ca_file, server_name="api.elsewhere")
    )
    status, body = await get(f"{other.url}/echo")
    assert status == 502
    assert "not valid for 'api.elsewhere'" in body["message"]


async def test_expired_certificate_is_refused(pki, tls_upstream, sidecar_factory) -> None:
    upstream = await tls_upstream(pki.issue(expired=True))
    sidecar = sidecar_factory(upstream.url, **tls_policy(retry=1, ca_file=pki.ca_file))
    status, body = await get(f"{sidecar.url}/echo")
    assert status == 502
    assert "TLS failed: certificate has expired" in body["message"]


async def test_insecure_skip_verify_accepts_any_certificate(
    tmp_path, tls_upstream, sidecar_factory
) -> None:
    stranger = Pki(tmp_path / "stranger")
    upstream = await tls_upstream(stranger.issue("somewhere.else", expired=True))
    sidecar = sidecar_factory(upstream.url, **tls_policy(insecure_skip_verify=True))
    assert (await get(f"{sidecar.url}/echo"))[0] == 200


async def test_mutual_tls_sends_the_client_certificate(
    pki, tmp_path, tls_upstream, sidecar_factory
) -> None:
    clients = Pki(tmp_path / "clients")
    client = clients.issue("sidecar.local", common_name="the-sidecar")
    upstream = await tls_upstream(client_ca=clients)
    with_cert = tls_policy(
        ca_file=pki.ca_file, cert_file=client.cert_file, key_file=client.key_file
    )
    sidecar = sidecar_factory(upstream.url, **with_cert)
    status, body = await get(f"{sidecar.url}/echo")
    assert status == 200
    assert body["client_cert_cn"] == "the-sidecar"


async def test_mutual_tls_without_a_client_certificate_is_refused(
    pki, tmp_path, sidecar_factory
) -> None:
    """A server that refuses the missing certificate with an alert (TLS 1.3 sends it after
    the handshake, with the answer to the first request): a connect failure all the same."""
    clients = Pki(tmp_path / "clients")
    with BlockingTlsServer(server_context(pki.issue(), client_ca=clients)) as server:
        sidecar = sidecar_factory(server.url, **tls_policy(ca_file=pki.ca_file))
        status, body = await get(f"{sidecar.url}/echo", method="POST")
    assert status == 502
    assert "TLS failed: tlsv13 alert certificate required" in body["message"]
    attempts = await metric(sidecar.url, "upstream_attempts_total", outcome="connect_failure")
    assert attempts == 3


async def test_alert_sink_over_https(pki, tls_upstream, sidecar_factory, upstream) -> None:
    sink = await tls_upstream()
    sidecar = sidecar_factory(
        upstream.url,
        upstreams={"email_service": {"url": sink.url, "tls": {"ca_file": str(pki.ca_file)}}},
        alerts={"sinks": [{"upstream": "email_service", "path": "/send"}]},
    )
    event = {
        "type": "alert",
        "alert_type": "stock_bajo",
        "severity": "critical",
        "title": "low",
        "message": "stock is low",
    }
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {EVENTS_TOKEN}"}
        async with http.post(f"{sidecar.url}/api/v1/events", json=event, headers=headers) as r:
            assert r.status == 202
    for _ in range(200):
        if sink.hits("/send"):
            break
        await asyncio.sleep(0.05)
    [sent] = sink.hits("/send")
    assert sent.method == "POST"
    assert b"stock is low" in sent.body
