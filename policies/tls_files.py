"""The TLS files a policy names, read and turned into `ssl.SSLContext`s.

Read at load (and reload), never per connection: a missing or unparseable file is a policy
error at its key, so `validate` says what `run` would, and a reload naming a broken file
keeps the running policy. The sidecar builds its contexts with the same functions, once
per upstream (and once per certificate change for the listener).

An encrypted private key is refused rather than prompted for: the sidecar has no terminal.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from policies.build import Collector, child
from policies.model import Policy, ServerTlsPolicy, UpstreamPolicy, UpstreamTlsPolicy

ALPN = ["http/1.1"]
"""The sidecar speaks HTTP/1.1 on both sides; offering only it keeps h2-first peers honest."""


class TlsFileProblem(Exception):
    """A TLS file that cannot be used; `key` names the field at fault (`ca_file` ...)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def client_context(tls: UpstreamTlsPolicy | None) -> ssl.SSLContext:
    """The context for connections to an https:// upstream (system CAs by default)."""
    tls = tls or UpstreamTlsPolicy()
    if tls.ca_file is not None:
        _readable("ca_file", tls.ca_file)
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except ssl.SSLError as error:
        raise TlsFileProblem("ca_file", f"not a PEM CA bundle ({_reason(error)})") from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None and tls.key_file is not None:
        _load_pair(context, tls.cert_file, tls.key_file)
    context.set_alpn_protocols(ALPN)
    return context


def server_context(tls: ServerTlsPolicy) -> ssl.SSLContext:
    """The context the listener serves HTTPS with."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_pair(context, tls.cert_file, tls.key_file)
    context.set_alpn_protocols(ALPN)
    return context


def _load_pair(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    cert = _readable("cert_file", cert_file)
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise TlsFileProblem("cert_file", "holds no PEM certificate")
    key = _readable("key_file", key_file)
    if b"PRIVATE KEY-----" not in key:
        raise TlsFileProblem("key_file", "holds no PEM private key")
    if b"ENCRYPTED" in key:
        raise TlsFileProblem("key_file", "the private key is encrypted (give it unencrypted)")
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise TlsFileProblem("key_file", "is not the private key of cert_file") from None
        raise TlsFileProblem("cert_file", f"cannot be used ({_reason(error)})") from None
    except OSError as error:
        raise TlsFileProblem("cert_file", f"cannot read the file: {error.strerror}") from None


def _no_password() -> bytes:
    return b""


def _readable(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise TlsFileProblem(key, f"cannot read the file: {error.strerror}") from None


def _reason(error: ssl.SSLError) -> str:
    return str(error.reason or error.strerror or error).lower().replace("_", " ")


def check_tls_files(policy: Policy, c: Collector) -> None:
    """Add to `c` every TLS setting that `run` could not use (files read and parsed here)."""
    for name, upstream in policy.upstreams.items():
        base = child(child("upstreams", name), "tls")
        if _clean(base, c):
            _check_upstream(upstream, base, c)
    tls = policy.server.tls
    if tls is not None and _clean("server.tls", c):
        _report(lambda: server_context(tls), "server.tls", c)


def _clean(base: str, c: Collector) -> bool:
    """No problem reported at `base`, above it or under it (a key missing there, say)."""
    return c.ok(base) and not any(path.startswith(base + ".") for path in c.bad)


def _check_upstream(upstream: UpstreamPolicy, base: str, c: Collector) -> None:
    tls = upstream.tls
    if tls is None:
        return
    if not upstream.url.startswith("https://"):
        c.add(c.at(base), base, "only an https:// url uses tls")
        return
    if (tls.cert_file is None) != (tls.key_file is None):
        missing = "key_file" if tls.key_file is None else "cert_file"
        given = "cert_file" if missing == "key_file" else "key_file"
        c.add(c.at(child(base, given)), child(base, missing), f"needed with {given}")
        return
    _report(lambda: client_context(tls), base, c)


def _report(build: Callable[[], object], base: str, c: Collector) -> None:
    try:
        build()
    except TlsFileProblem as problem:
        path = child(base, problem.key)
        c.add(c.at(path), path, problem.message)
