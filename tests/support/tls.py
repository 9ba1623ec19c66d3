"""Certificates made with trustme, written to files, and TLS contexts for real peers.

`Pki` is one test's certificate authority plus helpers: server and client certificates
(valid, expired, for another name), written as PEM files the policy can name, and the
contexts an aiohttp TLS server or a TLS client on loopback uses.
"""

from __future__ import annotations

import datetime
import http.server
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography import x509

from tests.support.processes import Process, base_env

LOCAL_NAMES = ("localhost", "127.0.0.1")


@dataclass
class Issued:
    """A certificate and its key, as files."""

    cert_file: Path
    key_file: Path
    leaf: trustme.LeafCert

    @property
    def serial(self) -> int:
        return x509.load_pem_x509_certificate(self.leaf.cert_chain_pems[0].bytes()).serial_number


@dataclass
class Pki:
    directory: Path
    ca: trustme.CA = field(default_factory=trustme.CA)
    _count: int = 0

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def ca_file(self) -> Path:
        path = self.directory / f"ca-{id(self.ca)}.pem"
        if not path.exists():
            self.ca.cert_pem.write_to_path(str(path))
        return path

    def issue(self, *names: str, expired: bool = False, common_name: str | None = None) -> Issued:
        """A server (or client) certificate for `names` (default: localhost, 127.0.0.1)."""
        validity = {}
        if expired:
            now = datetime.datetime.now(datetime.UTC)
            validity = {
                "not_before": now - datetime.timedelta(days=30),
                "not_after": now - datetime.timedelta(days=1),
            }
        leaf = self.ca.issue_cert(*(names or LOCAL_NAMES), common_name=common_name, **validity)
        self._count += 1
        cert_file = self.directory / f"cert-{self._count}.pem"
        key_file = self.directory / f"key-{self._count}.pem"
        leaf.private_key_pem.write_to_path(str(key_file))
        # The chain as a server sends it: the leaf only (the CA is the client's to trust).
        leaf.cert_chain_pems[0].write_to_path(str(cert_file))
        return Issued(cert_file, key_file, leaf)

    def client_context(self) -> ssl.SSLContext:
        """A client trusting this CA (what a browser or service with the CA installed does)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def server_context(issued: Issued, client_ca: Pki | None = None) -> ssl.SSLContext:
    """An aiohttp TLS server's context; with `client_ca`, client certificates are required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert_file, issued.key_file)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.ca.configure_trust(context)
    return context


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        return None


class BlockingTlsServer:
    """The standard library's blocking TLS server in a thread: unlike asyncio's, it sends
    the TLS alert when it refuses a handshake (as nginx or Envoy do), so the client learns
    why (asyncio's server just closes)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> BlockingTlsServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_https(url: str, context: ssl.SSLContext, proc: Process, deadline_s: float = 15.0) -> None:
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"sidecar exited with {proc.popen.returncode}: {proc.output()}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return
        except urllib.error.HTTPError as error:
            error.close()
            last = error
        except Exception as error:  # not up yet
            last = error
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {deadline_s}s: {last}")


def start_tls_sidecar(config: Path, port: int, context: ssl.SSLContext) -> Process:
    """The sidecar serving TLS on `port`, once its /healthz answers over HTTPS."""
    args = [sys.executable, "-m", "proxy", "run", "--config", str(config)]
    proc = Process(args, base_env())
    try:
        wait_https(f"https://localhost:{port}/healthz", context, proc)
    except Exception:
        print(proc.output(), file=sys.stderr)
        proc.stop()
        raise
    return proc
