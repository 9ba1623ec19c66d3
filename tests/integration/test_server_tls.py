"""The sidecar serving HTTPS and WSS (`server.tls`), with real TLS clients in front of it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
import yaml
from cryptography import x509

from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import Process, free_port
from tests.support.tls import Issued, Pki, start_tls_sidecar


class TlsSidecar:
    def __init__(
        self, proc: Process, port: int, cert_file: Path, key_file: Path, config: Path
    ) -> None:
        self.proc = proc
        self.port = port
        self.cert_file = cert_file
        self.key_file = key_file
        self.config = config

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def install(self, issued: Issued) -> None:
        """Rotate as cert-manager or certbot do: new files renamed over the served paths."""
        for source, target in (
            (issued.cert_file, self.cert_file),
            (issued.key_file, self.key_file),
        ):
            staged = target.with_suffix(".new")
            staged.write_bytes(source.read_bytes())
            os.replace(staged, target)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_sidecar(tmp_path: Path, pki: Pki, upstream) -> Iterator[Callable[..., TlsSidecar]]:
    started: list[Process] = []

    def start(**server: Any) -> TlsSidecar:
        issued = pki.issue()
        cert_file, key_file = tmp_path / "served.crt", tmp_path / "served.key"
        cert_file.write_bytes(issued.cert_file.read_bytes())
        key_file.write_bytes(issued.key_file.read_bytes())
        port = free_port()
        server["tls"] = {"cert_file": str(cert_file), "key_file": str(key_file)}
        doc = make_policy(port, upstream.url, server=server)
        config = write_policy(tmp_path / "policy.yaml", doc)
        proc = start_tls_sidecar(config, port, pki.client_context())
        started.append(proc)
        return TlsSidecar(proc, port, cert_file, key_file, config)

    yield start
    for proc in started:
        proc.stop()


def served_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection is served."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def wait_for_serial(port: int, context: ssl.SSLContext, serial: int, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    seen = None
    while time.monotonic() < end:
        seen = served_serial(port, context)
        if seen == serial:
            return
        time.sleep(0.1)
    raise AssertionError(f"still served serial {seen}, not {serial}")


async def test_https_is_served_and_forwarded_proto_is_https(pki, upstream, tls_sidecar) -> None:
    sidecar = tls_sidecar()
    connector = aiohttp.TCPConnector(ssl=pki.client_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{sidecar.url}/echo?secure=1") as resp:
            assert resp.status == 200
            body = await resp.json()
        async with http.get(f"{sidecar.url}/healthz") as resp:
            assert resp.status == 200
    assert body["target"] == "/echo?secure=1"
    assert body["headers"]["x-forwarded-proto"] == "https"


async def test_a_trusted_proxy_keeps_its_forwarded_proto(pki, upstream, tls_sidecar) -> None:
    sidecar = tls_sidecar()
    connector = aiohttp.TCPConnector(ssl=pki.client_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        headers = {"X-Forwarded-Proto": "http"}  # 127.0.0.1 is a trusted proxy here
        async with http.get(f"{sidecar.url}/echo", headers=headers) as resp:
            body = await resp.json()
    assert body["headers"]["x-forwarded-proto"] == "http"


async def test_plain_http_on_the_tls_port_gets_no_answer(tls_sidecar) -> None:
    sidecar = tls_sidecar()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{sidecar.port}/healthz") as resp:
                await resp.read()


async def test_wss_reaches_the_hub(pki, tls_sidecar) -> None:
    sidecar = tls_sidecar()
    url = f"wss://localhost:{sidecar.port}/api/v1/ws/notifications"
    async with websockets.connect(url, ssl=pki.client_context()) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert welcome["type"] == "welcome"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"


def test_rotated_certificate_is_served_to_new_connections(pki, tls_sidecar) -> None:
    sidecar = tls_sidecar()
    context = pki.client_context()
    first = served_serial(sidecar.port, context)
    # A connection opened before the rotation keeps working with the old certificate.
    with (
        socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as kept,
    ):
        renewed = pki.issue()
        sidecar.install(renewed)
        wait_for_serial(sidecar.port, context, renewed.serial, deadline_s=15)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
    assert renewed.serial != first


def test_an_unusable_new_pair_keeps_the_old_certificate(pki, tls_sidecar) -> None:
    sidecar = tls_sidecar()
    context = pki.client_context()
    first = served_serial(sidecar.port, context)
    one, other = pki.issue(), pki.issue()
    sidecar.cert_file.write_bytes(one.cert_file.read_bytes())
    sidecar.key_file.write_bytes(other.key_file.read_bytes())  # not the key of `one`
    end = time.monotonic() + 15
    while "the current certificate is kept" not in sidecar.proc.output():
        assert time.monotonic() < end, sidecar.proc.output()
        time.sleep(0.1)
    assert "server.tls.key_file: is not the private key of cert_file" in sidecar.proc.output()
    assert served_serial(sidecar.port, context) == first
    sidecar.key_file.write_bytes(one.key_file.read_bytes())  # the pair completed
    wait_for_serial(sidecar.port, context, one.serial, deadline_s=15)


def test_a_reloaded_policy_naming_other_files_serves_them(pki, tls_sidecar) -> None:
    sidecar = tls_sidecar()
    other = pki.issue()
    doc = yaml.safe_load(sidecar.config.read_text())
    doc["server"]["tls"] = {"cert_file": str(other.cert_file), "key_file": str(other.key_file)}
    write_policy(sidecar.config, doc)
    wait_for_serial(sidecar.port, pki.client_context(), other.serial, deadline_s=15)


def test_a_handshake_that_never_finishes_is_cut(tls_sidecar) -> None:
    sidecar = tls_sidecar(header_timeout="500ms")
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=20) as sock:
        sock.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        assert sock.recv(1024) == b""  # closed by the sidecar (20 s is only a safety net)
