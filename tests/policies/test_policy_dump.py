"""The policy dump: policy syntax back, secrets masked."""

from __future__ import annotations

from dataclasses import dataclass, replace

from policies.dump import dump_policy, to_data
from policies.load import load_policy_text
from policies.model import setting
from policies.redact import redact_url
from policies.spec import section_spec

POLICY = load_policy_text(
    """\
storage: { backend: redis, redis_url: "redis://user:s3cret@cache:6379/0", timeout: 50ms }
upstreams:
  app: { url: "http://127.0.0.1:9000", retry: { base_delay: 1.5s } }
rate_limits: { roles: { admin: 3/5min } }
""",
    "p.yaml",
).policy


def test_durations_and_rates_come_back_as_written() -> None:
    data = dump_policy(POLICY)
    assert data["storage"]["timeout"] == "50ms"
    assert data["upstreams"]["app"]["retry"]["base_delay"] == "1500ms"
    assert data["upstreams"]["app"]["circuit_breaker"]["recovery_timeout"] == "1m"
    assert data["rate_limits"]["roles"] == {"admin": "3/5min"}
    assert data["routes"] == []


def test_url_passwords_are_masked() -> None:
    data = dump_policy(POLICY)
    assert data["storage"]["redis_url"] == "redis://user:***@cache:6379/0"
    assert "s3cret" not in str(data)
    with_env_url = replace(POLICY, storage=replace(POLICY.storage, redis_url="redis://:pw@h/0"))
    assert dump_policy(with_env_url)["storage"]["redis_url"] == "redis://:***@h/0"


def test_redact_url_forms() -> None:
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("rediss://alice:pw@h") == "rediss://alice:***@h"
    assert redact_url("redis://pw@h") == "redis://***@h"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("http://h/path@x") == "http://h/path@x"


@dataclass(frozen=True, slots=True)
class _WithSecrets:
    api_token: str = setting("", "a literal secret")
    db_password: str | None = setting(None, "another")
    secret_env: str = setting("JWT_SECRET", "names a variable, not a secret")
    title: str = setting("", "plain text")


def test_fields_named_like_secrets_are_masked_when_set() -> None:
    spec = section_spec(_WithSecrets)
    data = to_data(spec, _WithSecrets(api_token="abc", db_password="pw", title="hello"))
    assert data == {
        "api_token": "***",
        "db_password": "***",
        "secret_env": "JWT_SECRET",
        "title": "hello",
    }
    assert to_data(spec, _WithSecrets())["api_token"] == ""
