"""The policy's JSON Schema (draft 2020-12), generated from the same specs the loader reads.

Editors (VS Code's YAML extension, JetBrains) use it for completion and inline checks. It
describes each key's shape; rules across keys (a route's upstream must exist) are the
loader's alone, so a document the schema accepts can still be refused by `validate`.
"""

from __future__ import annotations

from typing import Any

from policies.dump import to_data
from policies.spec import (
    METHOD_PATTERN,
    OUTCOME_PATTERN,
    POLICY_SPEC,
    Choice,
    ListOf,
    MapOf,
    Nullable,
    Scalar,
    Section,
    Spec,
)
from policies.units import DURATION_PATTERN, RATE_PATTERN

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of `policies.yaml`, defaults and descriptions included."""
    return {
        "$schema": DIALECT,
        "title": "Resilience sidecar policy (policies.yaml)",
        **_section(POLICY_SPEC, POLICY_SPEC.cls()),
    }


def _section(spec: Section, defaults: Any) -> dict[str, Any]:
    """An object schema; `defaults` is the instance whose values are this section's defaults.

    Defaults come from the enclosing instance, not the nested class, because a field's
    factory may differ from the class defaults (the `redis` breaker recovers after 30s).
    """
    properties: dict[str, Any] = {}
    for f in spec.fields:
        default = getattr(defaults, f.name)
        schema = _schema(f.spec, default)
        if f.doc:
            schema["description"] = f.doc
        if not f.required and not isinstance(f.spec, Section):
            schema["default"] = to_data(f.spec, default, f.name)
        properties[f.name] = schema
    result: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    required = [f.name for f in spec.fields if f.required]
    if required:
        result["required"] = required
    return result


def _schema(spec: Spec, default: Any = None) -> dict[str, Any]:
    if isinstance(spec, Section):
        return _section(spec, default if isinstance(default, spec.cls) else spec.cls())
    if isinstance(spec, Nullable):
        return {"anyOf": [_schema(spec.inner, default), {"type": "null"}]}
    if isinstance(spec, ListOf):
        return {"type": "array", "items": _schema(spec.item)}
    if isinstance(spec, MapOf):
        return {
            "type": "object",
            "propertyNames": {"minLength": 1},
            "additionalProperties": _schema(spec.value),
        }
    if isinstance(spec, Choice):
        return {"enum": list(spec.values)}
    return _scalar(spec)


def _scalar(spec: Scalar) -> dict[str, Any]:
    b = spec.bounds
    if spec.kind in ("int", "float"):
        schema: dict[str, Any] = {"type": "integer" if spec.kind == "int" else "number"}
        for key, value in (
            ("minimum", b.minimum),
            ("maximum", b.maximum),
            ("exclusiveMinimum", b.exclusive_minimum),
        ):
            if value is not None:
                schema[key] = value
        return schema
    if spec.kind == "bool":
        return {"type": "boolean"}
    if spec.kind == "outcome":
        return {
            "anyOf": [
                {"type": "string", "pattern": OUTCOME_PATTERN},
                {"type": "integer", "minimum": 100, "maximum": 599},
            ]
        }
    pattern = {
        "duration": DURATION_PATTERN,
        "rate": RATE_PATTERN,
        "method": METHOD_PATTERN,
        "str": b.pattern,
    }[spec.kind]
    return {"type": "string", "pattern": pattern} if pattern else {"type": "string"}
