"""docs/policy-reference.md is what the generator renders, and names every key of the model."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from policies.model import Policy, Rate
from policies.reference import render_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "policy-reference.md"


def test_the_committed_reference_is_up_to_date() -> None:
    assert DOC.read_text() == render_reference(), (
        "regenerate: python -m policies.reference > docs/policy-reference.md"
    )


def model_key_paths(cls: type, prefix: str = "") -> list[str]:
    """Every key path, found by walking the dataclasses directly (not through policies.spec)."""
    paths = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        path = f"{prefix}{field.name}"
        paths.append(path)
        hint = hints[field.name]
        if typing.get_origin(hint) is tuple:
            hint, path = typing.get_args(hint)[0], f"{path}[]"
        elif typing.get_origin(hint) is dict:
            hint, path = typing.get_args(hint)[1], f"{path}.<name>"
        if dataclasses.is_dataclass(hint) and hint is not Rate:
            paths += model_key_paths(typing.cast(type, hint), f"{path}.")
    return paths


def test_every_key_path_of_the_model_is_documented() -> None:
    text = DOC.read_text()
    paths = model_key_paths(Policy)
    assert "upstreams.<name>.retry.budget.window" in paths
    assert "rate_limits.endpoints[].limit" in paths
    missing = [p for p in paths if f"| `{p}` |" not in text]
    assert missing == []


def test_the_intro_explains_syntax_and_environment() -> None:
    text = DOC.read_text()
    for needle in ("`3/5min`", "`250ms`", "JWT_SECRET", "REDIS_URL", "PROXY_EVENTS_TOKEN"):
        assert needle in text
