"""The model walked once into a tree of specs that the loader, schema, dump and docs share.

`model.py` declares each key once as a typed dataclass field; this module reads those
annotations (`typing.get_type_hints`) and the `setting()` metadata and turns them into a
small closed vocabulary of specs, so no consumer interprets Python typing on its own.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Union

from policies.model import DURATION, METHOD, OUTCOME, Policy, Rate
from policies.units import format_duration

ScalarKind = Literal["int", "float", "bool", "str", "duration", "rate", "outcome", "method"]


@dataclass(frozen=True, slots=True)
class Bounds:
    """Numeric bounds and a text pattern from a field's metadata (durations: in seconds)."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    pattern: str | None = None
    expected: str | None = None
    """What a value matching `pattern` looks like, for error messages."""


@dataclass(frozen=True, slots=True)
class Scalar:
    kind: ScalarKind
    bounds: Bounds = Bounds()

    def bound_text(self, value: float) -> str:
        """A bound as operators write it: `0s` for a duration, `1` rather than `1.0`."""
        if self.kind == "duration":
            return format_duration(value)
        return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True, slots=True)
class Choice:
    """A `Literal`: the value must equal one of these, type included (`true` is not `1`)."""

    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Nullable:
    inner: Spec


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Spec


@dataclass(frozen=True, slots=True)
class MapOf:
    """A mapping from names the operator picks (upstreams, roles) to values."""

    value: Spec


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    spec: Spec
    doc: str
    required: bool


@dataclass(frozen=True, slots=True)
class Section:
    """A dataclass: fixed keys, each with its own spec; unknown keys are errors."""

    cls: type
    fields: tuple[FieldSpec, ...]

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


Spec = Scalar | Choice | Nullable | ListOf | MapOf | Section

OUTCOME_PATTERN = r"^(connect-failure|timeout|[45]xx|[1-5][0-9][0-9])$"
"""A retry/failure outcome written as text (an integer status 100-599 is also accepted)."""

METHOD_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"
"""An HTTP method as written; the loader upper-cases it."""

_MARKERS: dict[str, ScalarKind] = {DURATION: "duration", OUTCOME: "outcome", METHOD: "method"}
_PLAIN: dict[type, ScalarKind] = {int: "int", float: "float", bool: "bool", str: "str"}


@cache
def section_spec(cls: type) -> Section:
    """The spec of a model dataclass, built once per class."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        bounds = Bounds(
            minimum=meta.get("minimum"),
            maximum=meta.get("maximum"),
            exclusive_minimum=meta.get("exclusive_minimum"),
            pattern=meta.get("pattern"),
            expected=meta.get("expected"),
        )
        fields.append(
            FieldSpec(
                name=f.name,
                spec=spec_of(hints[f.name], bounds),
                doc=meta.get("doc", ""),
                required=bool(meta.get("required", False)),
            )
        )
    return Section(cls=cls, fields=tuple(fields))


def spec_of(hint: Any, bounds: Bounds = Bounds()) -> Spec:
    """The spec of one annotation; `bounds` reach the scalar at its leaf."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        kind = next((_MARKERS[a] for a in args[1:] if a in _MARKERS), None)
        if kind is None:
            return spec_of(args[0], bounds)
        return Scalar(kind, bounds)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1 or len(args) != 2:
            raise TypeError(f"only `X | None` unions are supported, not {hint}")
        return Nullable(spec_of(inner[0], bounds))
    if origin is Literal:
        return Choice(args)
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"only `tuple[X, ...]` is supported, not {hint}")
        return ListOf(spec_of(args[0], bounds))
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"mapping keys must be str, not {hint}")
        return MapOf(spec_of(args[1], bounds))
    if hint is Rate:
        return Scalar("rate", bounds)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return section_spec(hint)
    if hint in _PLAIN:
        return Scalar(_PLAIN[hint], bounds)
    raise TypeError(f"the policy model uses an unsupported type: {hint}")


POLICY_SPEC = section_spec(Policy)
