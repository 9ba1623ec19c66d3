"""`python -m proxy validate | schema | token | run`, driven as a user does, by subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import OctKey

from policies.errors import PolicyError
from policies.load import load_policy
from policies.schema import policy_json_schema

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "policies.yaml"
SECRET = "cli-test-secret-0123456789abcdef-0123456789"
BROKEN = """\
version: 1
server: { workers: 2 }
upstreams:
  app: { url: "http://127.0.0.1:9000", retyr: {} }
routes:
  - { path_prefix: /, upstream: ap }
"""


def cli(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("JWT_SECRET", "REDIS_URL")}
    environ["PYTHONPATH"] = str(REPO)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_validate_a_valid_policy() -> None:
    env = {"JWT_SECRET": SECRET, "PROXY_EVENTS_TOKEN": "events-token"}
    result = cli("validate", "--config", "policies.yaml", **env)
    digest = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"policies.yaml: valid (3 upstreams, 2 routes, 7 rate-limit rules, sha256 {digest[:12]})\n"
    )
    assert result.stderr == ""


def test_validate_lists_every_error_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BROKEN)
    result = cli("validate", "--config", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "bad.yaml:2:20: server.workers: more than 1 worker needs storage.backend: redis "
        "(memory windows are per process)",
        "bad.yaml:4:40: upstreams.app.retyr: unknown key 'retyr'; did you mean 'retry'?",
        "bad.yaml:6:33: routes[0].upstream: unknown upstream 'ap'; did you mean 'app'?",
    ]


def test_validate_a_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("server:\n  workers: [1\n")
    result = cli("validate", "--config", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("bad.yaml:3:1: (syntax): ")


def test_validate_a_missing_file(tmp_path: Path) -> None:
    result = cli("validate", "--config", "missing.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    expected = "missing.yaml: (file): cannot read the file: No such file or directory\n"
    assert result.stderr == expected


def test_validate_applies_redis_url_and_never_shows_it() -> None:
    good = cli("validate", "--config", "policies.yaml", REDIS_URL="redis://:pw1@cache:6379/0")
    assert good.returncode == 0
    bad = cli("validate", "--config", "policies.yaml", REDIS_URL="http://:hunter2@cache")
    assert bad.returncode == 1
    assert "REDIS_URL must be a URL starting with redis://" in bad.stderr
    assert "hunter2" not in bad.stderr + bad.stdout


def test_run_with_an_invalid_policy_exits_1_with_the_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BROKEN)
    result = cli("run", "--config", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    with pytest.raises(PolicyError) as info:
        load_policy(str(tmp_path / "bad.yaml"))
    expected = str(info.value).replace(str(tmp_path / "bad.yaml"), "bad.yaml")
    assert result.stderr == expected + "\n"


def test_schema_prints_the_json_schema() -> None:
    result = cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout) == policy_json_schema()
    assert result.stdout.startswith('{\n  "$schema"')


def _token(*args: str) -> str:
    result = cli("token", *args, JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    return result.stdout.strip()


def test_token_verifies_with_pyjwt_and_joserfc() -> None:
    before = int(time.time())
    token = _token("--sub", "42", "--role", "admin")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "42"
    assert claims["role"] == "admin"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    decoded = jose_jwt.decode(token, OctKey.import_key(SECRET), algorithms=["HS256"])
    assert decoded.claims["sub"] == "42"
    jose_jwt.JWTClaimsRegistry(sub={"essential": True}).validate(decoded.claims)


@pytest.mark.parametrize(("ttl", "seconds"), [("1h", 3600), ("90", 90), ("5m", 300)])
def test_token_ttl(ttl: str, seconds: int) -> None:
    token = _token("--sub", "7", "--role", "viewer", "--ttl", ttl)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == seconds


def test_token_without_jwt_secret() -> None:
    result = cli("token", "--sub", "1", "--role", "admin")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "JWT_SECRET is not set" in result.stderr


@pytest.mark.parametrize("ttl", ["0", "-5", "soon"])
def test_token_refuses_a_bad_ttl(ttl: str) -> None:
    result = cli("token", "--sub", "1", "--role", "admin", "--ttl", ttl, JWT_SECRET=SECRET)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--ttl" in result.stderr


def test_no_command_is_a_usage_error() -> None:
    result = cli()
    assert result.returncode == 2
    assert "usage: python -m proxy" in result.stderr
