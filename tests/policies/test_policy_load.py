"""The loader on the shipped policy and on small documents: values, defaults, derived names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from policies.errors import PolicyError
from policies.load import apply_env_overrides, load_policy, load_policy_text
from policies.model import Rate

SHIPPED = Path(__file__).resolve().parents[2] / "policies.yaml"

MINIMAL = """\
upstreams:
  app: { url: "http://127.0.0.1:9000" }
routes:
  - { path_prefix: /, upstream: app }
"""


def load(text: str):
    return load_policy_text(text, "p.yaml").policy


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "p.yaml")
    return str(info.value).splitlines()


def test_shipped_policy_values() -> None:
    loaded = load_policy(str(SHIPPED))
    policy = loaded.policy
    assert loaded.sha256 == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert loaded.raw == SHIPPED.read_bytes()
    assert loaded.source == str(SHIPPED)
    inventory = policy.upstreams["inventory"]
    assert inventory.name == "inventory"
    assert inventory.retry.budget.window == 10.0
    assert inventory.retry.base_delay == pytest.approx(0.1)
    assert inventory.retry.retry_on == ("connect-failure", "timeout", "502", "503", "504")
    assert policy.upstreams["email_service"].circuit_breaker.recovery_timeout == 120.0
    assert policy.rate_limits.roles["admin"] == Rate(200, 60.0, "200/min")
    assert policy.rate_limits.endpoints[1].limit == Rate(3, 300.0, "3/5min")
    assert [r.name for r in policy.routes] == ["external", "inventory"]
    assert policy.storage.timeout == pytest.approx(0.05)
    assert policy.storage.circuit_breaker.recovery_timeout == 30.0
    assert policy.server.port == 8000


def test_defaults_and_derived_names() -> None:
    policy = load(
        MINIMAL
        + """\
rate_limits:
  endpoints:
    - { path_prefix: /api/v1/reportes/, limit: 10/min }
    - { path: /login, limit: 5/min, methods: [post, Get] }
"""
    )
    assert policy.upstreams["app"].name == "app"
    assert policy.upstreams["app"].retry.max_attempts == 3
    assert policy.routes[0].name == "/"
    assert policy.rate_limits.endpoints[0].name == "/api/v1/reportes/"
    assert policy.rate_limits.endpoints[1].name == "/login"
    assert policy.rate_limits.endpoints[1].methods == ("POST", "GET")
    assert policy.storage.circuit_breaker.failure_threshold == 5


def test_status_codes_may_be_integers_or_text() -> None:
    policy = load(
        """\
upstreams:
  app:
    url: "http://h:1"
    retry: { retry_on: [502, "503", 5xx, timeout] }
    circuit_breaker: { failure_on: [4xx, 429] }
"""
    )
    assert policy.upstreams["app"].retry.retry_on == ("502", "503", "5xx", "timeout")
    assert policy.upstreams["app"].circuit_breaker.failure_on == ("4xx", "429")


def test_anchors_and_merge_keys() -> None:
    policy = load(
        """\
upstreams:
  a: &base { url: "http://a:1", timeout: 3s, retry: { max_attempts: 5 } }
  b: { <<: *base, url: "http://b:1" }
"""
    )
    assert policy.upstreams["b"].url == "http://b:1"
    assert policy.upstreams["b"].timeout == 3.0
    assert policy.upstreams["b"].retry.max_attempts == 5
    assert policy.upstreams["b"].name == "b"


def test_an_int_is_a_float_but_a_bool_is_not_an_int() -> None:
    policy = load("upstreams: { a: { url: 'http://a:1', retry: { jitter: 0 } } }\n")
    assert policy.upstreams["a"].retry.jitter == 0.0
    assert errors("server: { workers: true }\n") == [
        "p.yaml:1:20: server.workers: expected an integer, got the boolean true"
    ]
    assert errors("websocket: { require_auth: 1 }\n") == [
        "p.yaml:1:28: websocket.require_auth: expected true or false, got the integer 1"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "p.yaml:1:1: (document): the policy is empty; expected keys: version, server,"),
        ("# only a comment\n", "p.yaml:1:1: (document): the policy is empty"),
        ("- a\n- b\n", "p.yaml:1:1: (document): expected a mapping of sections"),
        ("just text\n", "p.yaml:1:1: (document): expected a mapping of sections"),
    ],
)
def test_empty_or_not_a_mapping(text: str, expected: str) -> None:
    [line] = errors(text)
    assert line.startswith(expected)


def test_syntax_error_format() -> None:
    assert errors("server:\n  listen: [1, 2\nroutes: []\n") == [
        "p.yaml:3:7: (syntax): expected ',' or ']', but got ':' "
        "(while parsing a flow sequence started at 2:11)"
    ]
    assert errors("a: b: c\n") == ["p.yaml:1:5: (syntax): mapping values are not allowed here"]


def test_not_utf8_and_control_characters() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text(b"version: 1\nserver: \xff\n", "p.yaml")
    assert str(info.value) == "p.yaml:2:9: (syntax): the file is not valid UTF-8"
    [line] = errors("version: 1\nx: \x00\n")
    assert line == "p.yaml:2:4: (syntax): character U+0000 is not allowed in YAML"


def test_too_deep_nesting_is_a_policy_error() -> None:
    [line] = errors("a: " + "[" * 1000 + "]" * 1000 + "\n")
    assert line == "p.yaml:1:1: (syntax): the document is nested too deeply"


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(str(missing))
    assert str(info.value) == f"{missing}: (file): cannot read the file: No such file or directory"


def test_code_running_tags_are_refused() -> None:
    assert errors("version: !!python/object/apply:os.system ['true']\n") == [
        "p.yaml:1:10: version: unsupported YAML tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'"
    ]
    assert errors("server: !custom { workers: 1 }\n") == [
        "p.yaml:1:9: server: unsupported YAML tag '!custom'"
    ]


def test_duplicate_keys_are_reported() -> None:
    assert errors("server:\n  workers: 1\n  workers: 2\n") == [
        "p.yaml:3:3: server.workers: duplicate key 'workers' (first at 2:3)"
    ]


def test_redis_url_from_environment() -> None:
    policy = load(MINIMAL)
    replaced = apply_env_overrides(policy, {"REDIS_URL": "redis://:pw@cache:6379/1"})
    assert replaced.storage.redis_url == "redis://:pw@cache:6379/1"
    assert apply_env_overrides(policy, {}) is policy
    assert apply_env_overrides(policy, {"REDIS_URL": ""}) is policy


def test_bad_redis_url_from_environment_is_not_shown() -> None:
    policy = load(MINIMAL)
    with pytest.raises(PolicyError) as info:
        apply_env_overrides(policy, {"REDIS_URL": "http://:hunter2@cache"})
    assert "hunter2" not in str(info.value)
    assert str(info.value) == (
        "environment: storage.redis_url: REDIS_URL must be a URL starting with "
        "redis://, rediss://, unix://"
    )


def test_ipv6_listen_and_host_names() -> None:
    assert load('server: { listen: "[::1]:8080" }\n').server.port == 8080
    assert load('server: { listen: "sidecar.local:80" }\n').server.host == "sidecar.local"
    assert errors('server: { listen: "[nope]:80" }\n') == [
        "p.yaml:1:19: server.listen: '[nope]' is not an IP address or host name"
    ]
    assert errors('server: { listen: ":80" }\n') == [
        "p.yaml:1:19: server.listen: the host is missing (0.0.0.0 listens on every interface)"
    ]


def test_jwt_key_sources() -> None:
    assert errors("auth: { jwt: { algorithms: [RS256] } }\n") == [
        "p.yaml:1:28: auth.jwt.algorithms: RS256 needs auth.jwt.public_key_file, "
        "auth.jwt.jwks_file or auth.jwt.jwks_url"
    ]
    policy = load("auth: { jwt: { algorithms: [ES256], jwks_file: keys.json } }\n")
    assert policy.auth.jwt is not None and policy.auth.jwt.algorithms == ("ES256",)
    assert errors(
        "auth: { jwt: { algorithms: [RS256], jwks_file: k.json, jwks_url: 'http://i/k' } }\n"
    ) == ["p.yaml:1:66: auth.jwt.jwks_url: set only one of jwks_file and jwks_url"]
    assert errors("auth: { jwt: { algorithms: [HS256], secret_env: '' } }\n") == [
        "p.yaml:1:49: auth.jwt.secret_env: '' is not an environment variable name"
    ]
    assert errors("auth: { jwt: { algorithms: [] } }\n") == [
        "p.yaml:1:28: auth.jwt.algorithms: at least one algorithm is needed"
    ]


def test_identity_is_optional() -> None:
    assert load("version: 1\n").auth.jwt is None
    assert load("auth: {}\n").auth.jwt is None
    assert load("auth: { jwt: {} }\n").auth.jwt is not None


def test_admin_listener_and_hub_paths() -> None:
    policy = load("admin: { listen: '127.0.0.1:9901', token_env: ADMIN_TOKEN }\n")
    assert (policy.admin.host, policy.admin.port) == ("127.0.0.1", 9901)
    assert errors("admin: { listen: '0.0.0.0:8000' }\n") == [
        "p.yaml:1:18: admin.listen: port 8000 is server.listen's; "
        "the own endpoints need a port of their own"
    ]
    assert errors("admin: { listen: '127.0.0.1:99999' }\n") == [
        "p.yaml:1:18: admin.listen: port 99999 is out of range (1-65535)"
    ]
    assert errors("admin: { token_env: 'not a name' }\n") == [
        "p.yaml:1:21: admin.token_env: 'not a name' is not an environment variable name"
    ]
    assert errors("alerts: { ingest_path: /metrics }\n") == [
        "p.yaml:1:24: alerts.ingest_path: '/metrics' is already admin.metrics_path's path"
    ]
    assert errors("websocket: { paths: { alerts: /api/v1/resilience/x } }\n") == [
        "p.yaml:1:31: websocket.paths.alerts: '/api/v1/resilience/x' is already an own "
        "endpoint's path"
    ]
    # On its own port the admin API frees the data plane's paths.
    load("admin: { listen: '127.0.0.1:9901' }\nalerts: { ingest_path: /metrics }\n")
    load("websocket: { enabled: false, paths: { alerts: /metrics } }\n")


def test_upstream_name_is_its_key() -> None:
    assert errors("upstreams: { a: { url: 'http://a:1', name: b } }\n") == [
        "p.yaml:1:44: upstreams.a.name: an upstream is named by its key ('a'); leave `name` out"
    ]
    assert load("upstreams: { a: { url: 'http://a:1', name: a } }\n").upstreams["a"].name == "a"


def test_duplicate_route_and_rule_names() -> None:
    text = (
        MINIMAL
        + """\
  - { path: /, upstream: app }
rate_limits:
  endpoints:
    - { name: login, path: /a, limit: 1/s }
    - { name: login, path: /b, limit: 1/s }
"""
    )
    assert errors(text) == [
        "p.yaml:5:5: routes[1].name: duplicate route name '/' (also routes[0])",
        "p.yaml:5:13: routes[1].path: never matches: routes[0] (/) comes first",
        "p.yaml:9:15: rate_limits.endpoints[1].name: duplicate rule name 'login' "
        "(also rate_limits.endpoints[0])",
    ]
