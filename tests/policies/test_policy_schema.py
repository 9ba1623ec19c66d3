"""The JSON Schema: valid per its meta-schema, accepts the shipped file, refuses broken ones."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from policies.dump import dump_policy
from policies.load import load_policy, load_policy_text
from policies.schema import policy_json_schema

SHIPPED = Path(__file__).resolve().parents[2] / "policies.yaml"
SCHEMA = policy_json_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def shipped() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text())


def test_the_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_shipped_policy_validates() -> None:
    VALIDATOR.validate(shipped())


def test_a_dump_validates_and_loads_back_to_the_same_policy() -> None:
    policy = load_policy(str(SHIPPED)).policy
    data = dump_policy(policy)
    VALIDATOR.validate(data)
    assert load_policy_text(yaml.safe_dump(data), "dump.yaml").policy == policy


def _broken(path: list[Any], value: Any, delete: bool = False) -> dict[str, Any]:
    doc = shipped()
    target = doc
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        _broken(["upstreams", "inventory", "retyr"], {}),
        _broken(["retyr"], 1),
        _broken(["upstreams", "inventory", "retry", "max_attempts"], "zero"),
        _broken(["upstreams", "inventory", "retry", "max_attempts"], 0),
        _broken(["upstreams", "inventory", "timeout"], 10),
        _broken(["upstreams", "inventory", "retry", "retry_on"], ["bogus"]),
        _broken(["storage", "backend"], "postgres"),
        _broken(["rate_limits", "roles", "admin"], "lots"),
        _broken(["upstreams", "inventory", "url"], None, delete=True),
        _broken(["websocket", "require_auth"], "yes"),
        _broken(["version"], 2),
    ],
    ids=lambda doc: "broken",
)
def test_broken_documents_do_not_validate(doc: dict[str, Any]) -> None:
    assert not VALIDATOR.is_valid(doc)


def test_descriptions_and_defaults_come_from_the_model() -> None:
    retry = SCHEMA["properties"]["upstreams"]["additionalProperties"]["properties"]["retry"]
    attempts = retry["properties"]["max_attempts"]
    assert attempts == {
        "type": "integer",
        "minimum": 1,
        "description": "total attempts, the first included (1: no retry)",
        "default": 3,
    }
    store_breaker = SCHEMA["properties"]["storage"]["properties"]["circuit_breaker"]
    assert store_breaker["properties"]["recovery_timeout"]["default"] == "30s"
    route = SCHEMA["properties"]["routes"]["items"]
    assert route["required"] == ["upstream"]
    assert route["additionalProperties"] is False


def test_every_default_in_the_schema_is_accepted_by_the_loader() -> None:
    """Defaults are dumped in policy syntax: a document made of them loads unchanged."""
    defaults = {
        key: prop["default"] for key, prop in SCHEMA["properties"].items() if "default" in prop
    }
    sections = {
        key: {k: p["default"] for k, p in prop["properties"].items() if "default" in p}
        for key, prop in SCHEMA["properties"].items()
        if prop.get("type") == "object" and "properties" in prop
    }
    doc = copy.deepcopy({**defaults, **sections})
    VALIDATOR.validate(doc)
    assert (
        load_policy_text(yaml.safe_dump(doc), "defaults.yaml").policy
        == load_policy_text("version: 1\n", "empty.yaml").policy
    )
