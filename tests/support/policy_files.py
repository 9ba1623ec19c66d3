"""Policy files for tests: the shipped policy's shape, pointed at test ports."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import REPO


def shipped() -> dict[str, Any]:
    return yaml.safe_load((REPO / "policies.yaml").read_text())


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_policy(port: int, upstream_url: str, **overrides: Any) -> dict[str, Any]:
    """The shipped policy on `port`, every upstream at `upstream_url`, generous limits."""
    doc = shipped()
    doc["server"]["listen"] = f"127.0.0.1:{port}"
    doc["admin"]["listen"] = None  # own endpoints on the test's port (tests add their own)
    for upstream in doc["upstreams"].values():
        upstream["url"] = upstream_url
    doc["rate_limits"]["roles"] = {
        "admin": "100000/min",
        "vendedor": "100000/min",
        "viewer": "100000/min",
        "anonymous": "100000/min",
    }
    doc["rate_limits"]["endpoints"] = []
    doc["alerts"]["sinks"] = []
    return deep_merge(doc, overrides)


def write_policy(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def resilient_upstream(timeout: str = "1s") -> dict[str, Any]:
    """An upstream's settings for fault scenarios: short attempts, quick retries, and a
    breaker whose probe brings it back in seconds rather than after `recovery_timeout`."""
    return {
        "timeout": timeout,
        "retry": {"max_attempts": 3, "base_delay": "50ms", "max_delay": "300ms"},
        "circuit_breaker": {
            "failure_threshold": 5,
            "recovery_timeout": "60s",
            "success_threshold": 2,
            "probe": {"path": "/healthz", "interval": "300ms"},
        },
    }
