"""A policy as JSON-ready data, written as an operator would write it, secrets masked.

Durations come back as their shortest exact spelling (`0.25` -> `"250ms"`) and rates as
their text, so a dump reads like the file and loads again. The admin policy endpoint and
the schema's defaults both use it.
"""

from __future__ import annotations

from typing import Any

from policies.model import Policy
from policies.redact import MASK, is_secret_name, redact_url
from policies.spec import POLICY_SPEC, Choice, ListOf, MapOf, Nullable, Scalar, Section, Spec
from policies.units import format_duration


def dump_policy(policy: Policy) -> dict[str, Any]:
    """The whole policy as JSON-ready data, with URL passwords and secret-named fields masked."""
    data: dict[str, Any] = to_data(POLICY_SPEC, policy)
    return data


def to_data(spec: Spec, value: Any, name: str = "") -> Any:
    """One value under `spec` as JSON-ready data; `name` is the field's, for secret masking."""
    if isinstance(spec, Section):
        return {f.name: to_data(f.spec, getattr(value, f.name), f.name) for f in spec.fields}
    if isinstance(spec, Nullable):
        return None if value is None else to_data(spec.inner, value, name)
    if isinstance(spec, ListOf):
        return [to_data(spec.item, item, name) for item in value]
    if isinstance(spec, MapOf):
        return {key: to_data(spec.value, item, name) for key, item in value.items()}
    if isinstance(spec, Choice):
        return value
    return _scalar(spec, value, name)


def _scalar(spec: Scalar, value: Any, name: str) -> Any:
    if spec.kind == "duration":
        return format_duration(value)
    if spec.kind == "rate":
        return value.text
    if spec.kind == "str":
        return MASK if value and is_secret_name(name) else redact_url(value)
    return value
