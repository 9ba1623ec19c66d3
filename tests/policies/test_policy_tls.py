"""TLS settings in the policy: https URLs, the files named are read at load, errors at their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.errors import PolicyError
from policies.load import load_policy_text
from proxy.upstream.pool import UpstreamPool
from tests.support.tls import Pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def policy(upstream: str, server: str = "") -> str:
    return (
        "version: 1\n"
        f"server:\n  listen: 127.0.0.1:8000\n{server}"
        "upstreams:\n"
        f"  api:\n{upstream}"
        "routes:\n  - { path_prefix: /, upstream: api }\n"
    )


def where(text: str, needle: str, offset: int = 0) -> str:
    """`LINE:COL` of the first `needle` in `text` (plus `offset` columns), counted from 1."""
    index = text.index(needle) + offset
    line = text.count("\n", 0, index) + 1
    return f"{line}:{index - (text.rfind(chr(10), 0, index) + 1) + 1}"


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "p.yaml")
    return str(info.value).splitlines()


def test_https_url_with_tls_settings_loads(pki: Pki) -> None:
    client = pki.issue(common_name="sidecar")
    text = policy(
        '    url: "https://api.example.com"\n'
        "    tls:\n"
        f"      ca_file: {pki.ca_file}\n"
        "      server_name: api.internal\n"
        f"      cert_file: {client.cert_file}\n"
        f"      key_file: {client.key_file}\n"
        "    body_timeout: 5s\n"
    )
    upstream = load_policy_text(text, "p.yaml").policy.upstreams["api"]
    assert upstream.tls is not None and upstream.tls.server_name == "api.internal"
    assert upstream.body_timeout == 5.0
    pool = UpstreamPool(upstream)
    assert (pool.host, pool.port, pool.server_hostname) == ("api.example.com", 443, "api.internal")
    assert pool.ssl_context is not None


def test_https_url_without_tls_uses_the_system_cas_and_the_url_host() -> None:
    upstream = load_policy_text(policy('    url: "https://api.example.com:8443"\n'), "p").policy
    pool = UpstreamPool(upstream.upstreams["api"])
    assert (pool.port, pool.server_hostname) == (8443, "api.example.com")
    assert pool.ssl_context is not None and pool.ssl_context.check_hostname
    assert upstream.upstreams["api"].body_timeout == 30.0


def test_plain_url_has_no_tls_and_port_80() -> None:
    upstream = load_policy_text(policy('    url: "http://app"\n'), "p").policy.upstreams["api"]
    pool = UpstreamPool(upstream)
    assert (pool.port, pool.ssl_context, pool.server_hostname) == (80, None, None)


def test_missing_ca_file_is_an_error_at_its_key(tmp_path: Path) -> None:
    text = policy(
        f'    url: "https://api.example.com"\n    tls: {{ ca_file: {tmp_path / "nope.pem"} }}\n'
    )
    at = where(text, str(tmp_path))
    assert problems(text) == [
        f"p.yaml:{at}: upstreams.api.tls.ca_file: cannot read the file: No such file or directory"
    ]


def test_unparseable_ca_file_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    text = policy(f'    url: "https://h"\n    tls:\n      ca_file: {bad}\n')
    [line] = problems(text)
    at = where(text, str(bad))
    assert line.startswith(f"p.yaml:{at}: upstreams.api.tls.ca_file: not a PEM CA bundle")


def test_client_cert_needs_its_key(pki: Pki) -> None:
    client = pki.issue()
    text = policy(f'    url: "https://h"\n    tls:\n      cert_file: {client.cert_file}\n')
    at = where(text, str(client.cert_file))
    assert problems(text) == [f"p.yaml:{at}: upstreams.api.tls.key_file: needed with cert_file"]


def test_key_of_another_certificate_is_refused(pki: Pki) -> None:
    one, other = pki.issue(), pki.issue()
    text = policy(
        '    url: "https://h"\n    tls:\n'
        f"      cert_file: {one.cert_file}\n      key_file: {other.key_file}\n"
    )
    at = where(text, str(other.key_file))
    assert problems(text) == [
        f"p.yaml:{at}: upstreams.api.tls.key_file: is not the private key of cert_file"
    ]


def test_a_key_file_that_holds_no_key_is_refused(pki: Pki) -> None:
    one = pki.issue()
    text = policy(
        '    url: "https://h"\n    tls:\n'
        f"      cert_file: {one.cert_file}\n      key_file: {one.cert_file}\n"
    )
    at = where(text, f"key_file: {one.cert_file}", offset=len("key_file: "))
    assert problems(text) == [f"p.yaml:{at}: upstreams.api.tls.key_file: holds no PEM private key"]


def test_tls_on_a_plain_url_is_an_error() -> None:
    text = policy('    url: "http://h"\n    tls: { insecure_skip_verify: true }\n')
    at = where(text, "{ insecure")
    assert problems(text) == [f"p.yaml:{at}: upstreams.api.tls: only an https:// url uses tls"]


def test_other_schemes_are_still_refused() -> None:
    [line] = problems(policy('    url: "ftp://h"\n'))
    assert "upstreams.api.url: 'ftp://h' is not an http:// or https:// URL" in line


def test_server_tls_files_are_checked(pki: Pki, tmp_path: Path) -> None:
    served = pki.issue()
    ok = policy(
        '    url: "http://h"\n',
        f"  tls: {{ cert_file: {served.cert_file}, key_file: {served.key_file} }}\n",
    )
    loaded = load_policy_text(ok, "p.yaml").policy
    assert loaded.server.tls is not None
    missing = policy(
        '    url: "http://h"\n',
        f"  tls:\n    cert_file: {served.cert_file}\n    key_file: {tmp_path / 'gone.pem'}\n",
    )
    at = where(missing, str(tmp_path / "gone.pem"))
    assert problems(missing) == [
        f"p.yaml:{at}: server.tls.key_file: cannot read the file: No such file or directory"
    ]
    partial = policy('    url: "http://h"\n', f"  tls: {{ cert_file: {served.cert_file} }}\n")
    at = where(partial, "{ cert_file")
    assert problems(partial) == [
        f"p.yaml:{at}: server.tls.key_file: required key 'key_file' is missing"
    ]
