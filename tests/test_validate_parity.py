"""`validate` says what `run` would: files read, unset variables warned, unreachable routes.

Driven with the real `python -m proxy validate`, as an operator or a CI job runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from tests.test_cli import SECRET, cli

UPSTREAMS = 'upstreams: { app: { url: "http://127.0.0.1:9000" } }\n'


def write(tmp_path: Path, text: str) -> str:
    (tmp_path / "p.yaml").write_text(text)
    return "p.yaml"


def test_a_missing_jwks_file_is_an_error_at_its_key(tmp_path: Path) -> None:
    policy = (
        "auth:\n  jwt:\n    algorithms: [RS256]\n    jwks_file: /nonexistent/keys.json\n"
        + UPSTREAMS
    )
    result = cli(
        "validate", "--config", write(tmp_path, policy), cwd=tmp_path, PROXY_EVENTS_TOKEN="t"
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "p.yaml:4:16: auth.jwt.jwks_file: cannot read /nonexistent/keys.json: "
        "No such file or directory\n"
    )
    # ... which is what `run` says too, by exiting 1.
    assert cli("run", "--config", "p.yaml", cwd=tmp_path).returncode == 1


def test_unparsable_key_files_are_errors(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("not a key")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{"kty": "oct", "kid": "h"}]}))
    (tmp_path / "ca.pem").write_text("no certificate here")
    policy = (
        "auth:\n  jwt:\n    algorithms: [RS256]\n    public_key_file: key.pem\n"
        "    jwks_url: https://idp.example/jwks\n    jwks_ca_file: ca.pem\n" + UPSTREAMS
    )
    result = cli(
        "validate", "--config", write(tmp_path, policy), cwd=tmp_path, PROXY_EVENTS_TOKEN="t"
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "p.yaml:4:22: auth.jwt.public_key_file: key.pem holds no PEM public key or certificate",
        "p.yaml:6:19: auth.jwt.jwks_ca_file: ca.pem holds no PEM certificate",
    ]


def test_good_key_files_pass(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    (tmp_path / "key.pem").write_bytes(
        key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    jwk = {**RSAAlgorithm.to_jwk(key, as_dict=True), "kid": "k1"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    policy = (
        "auth:\n  jwt:\n    algorithms: [RS256]\n    public_key_file: key.pem\n"
        "    jwks_file: jwks.json\n" + UPSTREAMS
    )
    result = cli(
        "validate", "--config", write(tmp_path, policy), cwd=tmp_path, PROXY_EVENTS_TOKEN="t"
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "valid" in result.stdout


def test_unset_variables_are_warnings_and_strict_makes_them_errors(tmp_path: Path) -> None:
    policy = "admin: { token_env: MY_ADMIN_TOKEN }\n" + UPSTREAMS
    name = write(tmp_path, policy)
    env = {"PROXY_EVENTS_TOKEN": ""}
    result = cli("validate", "--config", name, cwd=tmp_path, **env)
    assert result.returncode == 0
    assert "valid" in result.stdout
    # Identity is off in this policy: JWT_SECRET is nobody's business.
    assert result.stderr.splitlines() == [
        "p.yaml:1:1: warning: alerts.ingest_token_env: environment variable PROXY_EVENTS_TOKEN "
        "is not set: only an admin token may ingest events",
        "p.yaml:1:21: warning: admin.token_env: environment variable MY_ADMIN_TOKEN is not set: "
        "no admin token is accepted",
    ]
    strict = cli("validate", "--strict", "--config", name, cwd=tmp_path, **env)
    assert strict.returncode == 1
    assert strict.stdout == ""
    assert strict.stderr.splitlines() == [
        "p.yaml:1:1: alerts.ingest_token_env: environment variable PROXY_EVENTS_TOKEN "
        "is not set: only an admin token may ingest events",
        "p.yaml:1:21: admin.token_env: environment variable MY_ADMIN_TOKEN is not set: "
        "no admin token is accepted",
    ]
    set_all = cli(
        "validate", "--strict", "--config", name, cwd=tmp_path,
        PROXY_EVENTS_TOKEN="t", MY_ADMIN_TOKEN="a",
    )  # fmt: skip
    assert (set_all.returncode, set_all.stderr) == (0, "")


def test_an_unset_jwt_secret_is_a_warning_for_validate(tmp_path: Path) -> None:
    policy = "auth:\n  jwt:\n    algorithms: [HS256]\n" + UPSTREAMS
    result = cli(
        "validate", "--config", write(tmp_path, policy), cwd=tmp_path, PROXY_EVENTS_TOKEN="t"
    )
    assert result.returncode == 0
    assert result.stderr == (
        "p.yaml:3:5: warning: auth.jwt.secret_env: environment variable JWT_SECRET is not set: "
        "HS* tokens cannot be verified\n"
    )
    ok = cli(
        "validate", "--config", "p.yaml", cwd=tmp_path, PROXY_EVENTS_TOKEN="t", JWT_SECRET=SECRET
    )
    assert (ok.returncode, ok.stderr) == (0, "")


def test_routes_that_can_never_match(tmp_path: Path) -> None:
    policy = UPSTREAMS + (
        "routes:\n"
        "  - { path_prefix: /static/, upstream: app }\n"
        "  - { path_prefix: /api/, upstream: app }\n"
        "  - { path: /health, upstream: app }\n"
        "  - { path_prefix: /api/v1/, upstream: app }\n"
        "  - { path: /health, upstream: app, name: again }\n"
        "  - { path: /api/x, upstream: app, name: x }\n"
        "  - { path_prefix: /, upstream: app }\n"
    )
    result = cli("validate", "--config", write(tmp_path, policy), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "p.yaml:6:20: routes[3].path_prefix: never matches: routes[1] (/api/) comes first",
        "p.yaml:7:13: routes[4].path: never matches: routes[2] (/health) comes first",
        "p.yaml:8:13: routes[5].path: never matches: routes[1] (/api/) comes first",
    ]
