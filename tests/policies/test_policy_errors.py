"""A broken policy lists every problem at once, each at the exact line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.errors import PolicyError
from policies.load import load_policy, load_policy_text

SHIPPED = Path(__file__).resolve().parents[2] / "policies.yaml"


def problems(text: str, source: str = "broken.yaml") -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, source)
    return str(info.value).splitlines()


def where(text: str, needle: str, offset: int = 0) -> str:
    """`LINE:COL` of the first `needle` in `text` (plus `offset` columns), counted from 1."""
    index = text.index(needle) + offset
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"{line}:{col}"


def broken_shipped_policy() -> str:
    text = SHIPPED.read_text()
    for old, new in [
        ("workers: 1 ", "workers: 2 "),
        ("max_attempts: 3", "max_attempts: zero"),
        ("jitter: 0.25", "jitter: 1.5"),
        ('8025", ', '8025", retyr: { max_attempts: 2 }, '),
        ("upstream: external_api", "upstream: external_apj"),
        ("admin: 200/min", "admin: 200/fortnight"),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def test_broken_copy_of_the_shipped_policy_lists_every_problem() -> None:
    text = broken_shipped_policy()
    assert problems(text) == [
        f"broken.yaml:{where(text, 'workers: 2', 9)}: server.workers: more than 1 worker "
        "needs storage.backend: redis (memory windows are per process)",
        f"broken.yaml:{where(text, 'zero')}: upstreams.inventory.retry.max_attempts: "
        "expected an integer, got 'zero'",
        f"broken.yaml:{where(text, '1.5')}: upstreams.inventory.retry.jitter: must be at most 1",
        f"broken.yaml:{where(text, 'retyr')}: upstreams.email_service.retyr: "
        "unknown key 'retyr'; did you mean 'retry'?",
        f"broken.yaml:{where(text, 'external_apj')}: routes[0].upstream: "
        "unknown upstream 'external_apj'; did you mean 'external_api'?",
        f"broken.yaml:{where(text, '200/fortnight')}: rate_limits.roles.admin: "
        "expected a rate N/DURATION like '100/min' or '3/5min', got '200/fortnight'",
    ]


def test_positions_are_exact_in_a_small_document(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\n"  # 1
        "server:\n"  # 2
        "  workers: 2\n"  # 3
        "  lisen: '0.0.0.0:80'\n"  # 4
        "storage: { backend: memory, timeout: 50 }\n"  # 5
        "upstreams:\n"  # 6
        "  app:\n"  # 7
        "    url: ftp://x\n"  # 8
        "    retry: { max_attempts: 0, max_delay: 10ms, retry_on: [502, 999] }\n"  # 9
        "  mail: {}\n"  # 10
        "routes:\n"  # 11
        "  - { path: /a, upstream: nowhere }\n"  # 12
        "  - { upstream: app }\n"  # 13
        "rate_limits:\n"  # 14
        "  mode: shadows\n"  # 15
        "  endpoints: [{ path: /l, limit: 5/min, name: 'role:x' }]\n"  # 16
    )
    with pytest.raises(PolicyError) as info:
        load_policy(str(path))
    assert str(info.value).splitlines() == [
        f"{path}:3:12: server.workers: more than 1 worker needs storage.backend: redis "
        "(memory windows are per process)",
        f"{path}:4:3: server.lisen: unknown key 'lisen'; did you mean 'listen'?",
        f"{path}:5:38: storage.timeout: a duration needs a unit: write '50s' or '50ms'",
        f"{path}:8:10: upstreams.app.url: 'ftp://x' is not an http:// or https:// URL "
        "(e.g. http://127.0.0.1:8081)",
        f"{path}:9:28: upstreams.app.retry.max_attempts: must be at least 1",
        f"{path}:9:42: upstreams.app.retry.max_delay: must be at least retry.base_delay",
        f"{path}:9:64: upstreams.app.retry.retry_on[1]: expected connect-failure, timeout, "
        "5xx, 4xx or a status code 100-599, got '999'",
        f"{path}:10:9: upstreams.mail.url: required key 'url' is missing",
        f"{path}:12:27: routes[0].upstream: unknown upstream 'nowhere'; upstreams: app, mail",
        f"{path}:13:5: routes[1]: a route needs `path` or `path_prefix`",
        f"{path}:15:9: rate_limits.mode: must be one of: enforce, shadow, got 'shadows'; "
        "did you mean 'shadow'?",
        f"{path}:16:47: rate_limits.endpoints[0].name: names starting with 'role:' belong "
        "to role limits",
    ]


def test_no_echo_of_a_consequence() -> None:
    """A route to an upstream whose entry is broken is not also reported as unknown."""
    assert problems("upstreams: { app: 5 }\nroutes: [{ path: /, upstream: app }]\n") == [
        "broken.yaml:1:19: upstreams.app: expected a mapping, got the integer 5"
    ]


def test_passwords_in_echoed_values_are_masked() -> None:
    [line] = problems("upstreams: { app: { url: 'redis://:hunter2@h:1' } }\n")
    assert "hunter2" not in line
    assert "'redis://:***@h:1' is not an http:// or https:// URL" in line


def test_sink_formats_and_the_pagerduty_routing_key_variable() -> None:
    text = (
        "version: 1\n"
        "upstreams: { hooks: { url: 'http://127.0.0.1:9' } }\n"
        "alerts:\n"
        "  sinks:\n"
        "    - { upstream: hooks, format: pagerduty }\n"
        "    - { upstream: hooks, format: teams }\n"
        "    - { upstream: hooks, format: pagerduty, routing_key_env: 'NOT A NAME' }\n"
        "    - { upstream: hooks, format: slack }\n"
    )
    assert problems(text) == [
        f"broken.yaml:{where(text, 'pagerduty }')}: alerts.sinks[0].format: pagerduty needs "
        "routing_key_env (the key's variable)",
        f"broken.yaml:{where(text, 'teams')}: alerts.sinks[1].format: must be one of: json, "
        "slack, pagerduty, alertmanager, got 'teams'",
        f"broken.yaml:{where(text, 'NOT A NAME', -1)}: alerts.sinks[2].routing_key_env: "
        "'NOT A NAME' is not an environment variable name",
    ]
