"""YAML nodes -> model dataclasses, driven by the specs, collecting every problem.

A field whose value is wrong keeps its default so the walk goes on and the cross-checks
still run; the paths at fault are remembered so no check reports a consequence of a
problem already reported.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from policies.errors import Problem
from policies.spec import (
    METHOD_PATTERN,
    OUTCOME_PATTERN,
    Choice,
    ListOf,
    MapOf,
    Nullable,
    Scalar,
    Section,
    Spec,
)
from policies.units import parse_duration, parse_rate
from policies.yaml_positions import (
    describe,
    mapping_entries,
    position,
    scalar,
    shown,
    unsupported_tag,
)

INVALID: Any = object()
"""Returned for a value that could not be built; its problem is already recorded."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_OUTCOME = re.compile(OUTCOME_PATTERN)
_METHOD = re.compile(METHOD_PATTERN)
_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "duration": "a duration like '2s' or '250ms'",
    "rate": "a rate like '100/min' or '3/5min'",
    "outcome": "connect-failure, timeout, 5xx, 4xx or a status code 100-599",
    "method": "an HTTP method",
}


class Collector:
    """Problems, the position of every value seen, and the paths found at fault."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.positions: dict[str, tuple[int, int]] = {}
        self.bad: set[str] = set()
        self._reported: set[tuple[int, int, str]] = set()

    def add(self, where: Node | tuple[int, int], path: str, message: str) -> None:
        """Record a problem; the same message at the same place (a merged anchor) only once."""
        line, col = position(where) if isinstance(where, Node) else where
        self.bad.add(path)
        if (line, col, message) not in self._reported:
            self._reported.add((line, col, message))
            self.problems.append(Problem(line, col, path, message))

    def at(self, path: str) -> tuple[int, int]:
        """Where the value at `path` was written (its nearest written ancestor if absent)."""
        for candidate in (path, *reversed(ancestors(path))):
            if candidate in self.positions:
                return self.positions[candidate]
        return (1, 1)

    def ok(self, *paths: str) -> bool:
        """True when neither these paths nor any of their ancestors had a problem."""
        return not any(p in self.bad for path in paths for p in (path, *ancestors(path)))


def ancestors(path: str) -> list[str]:
    """`a.b[0].c` -> [`a`, `a.b`, `a.b[0]`]."""
    return [path[:i] for i, ch in enumerate(path) if ch in ".[" and i > 0]


def child(path: str, key: str) -> str:
    """The path of a key under `path`; names that are not plain identifiers are quoted."""
    part = key if _NAME.fullmatch(key) else f"[{key!r}]"
    if not path:
        return part
    return f"{path}{part}" if part.startswith("[") else f"{path}.{part}"


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The choice the operator probably meant (case-insensitive match first, then difflib)."""
    options = list(choices)
    for option in options:
        if option.casefold() == word.casefold():
            return option
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def build(spec: Spec, node: Node, path: str, c: Collector) -> Any:
    """The value `node` holds under `spec`, or INVALID (with the problem recorded)."""
    c.positions[path] = position(node)
    tag_problem = unsupported_tag(node)
    if tag_problem:
        c.add(node, path, tag_problem)
        return INVALID
    if isinstance(spec, Nullable):
        if isinstance(node, ScalarNode) and node.tag.endswith(":null"):
            return None
        return build(spec.inner, node, path, c)
    value = _build(spec, node, path, c)
    if value is INVALID:
        c.bad.add(path)
    return value


def _build(
    spec: Scalar | Choice | ListOf | MapOf | Section, node: Node, path: str, c: Collector
) -> Any:
    """`build` for every spec but Nullable, which `build` unwraps first."""
    if isinstance(spec, Section):
        if not isinstance(node, MappingNode):
            null = isinstance(node, ScalarNode) and node.tag.endswith(":null")
            hint = " (leave the key out for the defaults)" if null else ""
            return _wrong_type(c, node, path, "a mapping", hint)
        return build_section(spec, node, path, c)
    if isinstance(spec, ListOf):
        if not isinstance(node, SequenceNode):
            one = isinstance(node, ScalarNode) and node.value
            hint = f" (write [{shown(node.value)}] for a list of one)" if one else ""
            return _wrong_type(c, node, path, "a list", hint)
        items = [build(spec.item, item, f"{path}[{i}]", c) for i, item in enumerate(node.value)]
        return INVALID if any(item is INVALID for item in items) else tuple(items)
    if isinstance(spec, MapOf):
        if not isinstance(node, MappingNode):
            return _wrong_type(c, node, path, "a mapping")
        return _build_map(spec, node, path, c)
    if not isinstance(node, ScalarNode):
        return _wrong_type(c, node, path, _expected(spec))
    try:
        kind, value = scalar(node)
    except ValueError as exc:
        c.add(node, path, str(exc))
        return INVALID
    if isinstance(spec, Choice):
        return _build_choice(spec, node, kind, value, path, c)
    return _build_scalar(spec, node, kind, value, path, c)


def build_section(spec: Section, node: MappingNode, path: str, c: Collector) -> Any:
    """An instance of the section's dataclass; wrong or missing values keep their defaults."""

    def report(where: Node, key: str, message: str) -> None:
        c.add(where, child(path, key), message)

    values: dict[str, Any] = {}
    for entry in mapping_entries(node, report):
        key_path = child(path, entry.key)
        field = spec.field(entry.key)
        if field is None:
            names = [f.name for f in spec.fields]
            guess = suggest(entry.key, names)
            hint = f"did you mean '{guess}'?" if guess else "expected one of: " + ", ".join(names)
            c.add(entry.key_node, key_path, f"unknown key {shown(entry.key)}; {hint}")
            continue
        value = build(field.spec, entry.value, key_path, c)
        if value is not INVALID:
            values[field.name] = value
    for field in spec.fields:
        if field.required and field.name not in values and child(path, field.name) not in c.bad:
            c.add(node, child(path, field.name), f"required key '{field.name}' is missing")
    return spec.cls(**values)


def _build_map(spec: MapOf, node: MappingNode, path: str, c: Collector) -> Any:
    def report(where: Node, key: str, message: str) -> None:
        c.add(where, child(path, key), message)

    result: dict[str, Any] = {}
    for entry in mapping_entries(node, report):
        key_path = child(path, entry.key)
        if not entry.key.strip():
            c.add(entry.key_node, key_path, "a name must not be empty")
            result[entry.key] = INVALID
            continue
        result[entry.key] = build(spec.value, entry.value, key_path, c)
    return INVALID if any(value is INVALID for value in result.values()) else result


def _build_choice(
    spec: Choice, node: ScalarNode, kind: str, value: Any, path: str, c: Collector
) -> Any:
    for option in spec.values:
        if type(option) is type(value) and option == value:
            return value
    options = ", ".join(str(v) for v in spec.values)
    message = f"must be {options}" if len(spec.values) == 1 else f"must be one of: {options}"
    guess = suggest(str(value), [str(v) for v in spec.values]) if kind == "str" else None
    hint = f"; did you mean '{guess}'?" if guess else ""
    c.add(node, path, f"{message}, got {describe(node)}{hint}")
    return INVALID


def _build_scalar(
    spec: Scalar, node: ScalarNode, kind: str, value: Any, path: str, c: Collector
) -> Any:
    try:
        result = _convert(spec.kind, kind, value)
    except ValueError as exc:
        c.add(node, path, str(exc))
        return INVALID
    if result is INVALID:
        quote = "; quote it if you mean the text" if spec.kind == "str" and kind != "null" else ""
        return _wrong_type(c, node, path, _expected(spec), quote)
    problem = _bounds_problem(spec, result)
    if problem:
        c.add(node, path, problem)
        return INVALID
    return result


def _convert(want: str, kind: str, value: Any) -> Any:
    """The model value for YAML `value` of type `kind`, INVALID for a wrong type."""
    if want in ("int", "bool", "str") and kind == want:
        return value
    if want == "float" and kind in ("int", "float"):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return float(value)
    if want == "duration" and kind in ("int", "float") and math.isfinite(value) and value >= 0:
        raise ValueError(f"a duration needs a unit: write '{value}s' or '{value}ms'")
    if want == "duration" and kind == "str":
        return parse_duration(value)
    if want == "rate" and kind == "str":
        return parse_rate(value)
    if want == "outcome" and kind in ("int", "str"):
        text = str(value)
        if not _OUTCOME.fullmatch(text):
            raise ValueError(f"expected {_EXPECTED['outcome']}, got {shown(text)}")
        return text
    if want == "method" and kind == "str":
        if not _METHOD.fullmatch(value):
            raise ValueError(f"expected an HTTP method like GET, got {shown(value)}")
        return value.upper()
    return INVALID


def _bounds_problem(spec: Scalar, value: Any) -> str | None:
    b = spec.bounds
    if b.minimum is not None and value < b.minimum:
        return f"must be at least {spec.bound_text(b.minimum)}"
    if b.maximum is not None and value > b.maximum:
        return f"must be at most {spec.bound_text(b.maximum)}"
    if b.exclusive_minimum is not None and value <= b.exclusive_minimum:
        return f"must be greater than {spec.bound_text(b.exclusive_minimum)}"
    if b.pattern is not None and isinstance(value, str) and not re.search(b.pattern, value):
        if b.expected is not None:
            return f"{shown(value)} is not {b.expected}"
        return f"{shown(value)} does not match the pattern {b.pattern}"
    return None


def _expected(spec: Spec) -> str:
    if isinstance(spec, Scalar):
        return _EXPECTED[spec.kind]
    if isinstance(spec, Choice):
        return "one of: " + ", ".join(str(v) for v in spec.values)
    return "a mapping" if isinstance(spec, Section | MapOf) else "a list"


def _wrong_type(c: Collector, node: Node, path: str, expected: str, hint: str = "") -> Any:
    c.add(node, path, f"expected {expected}, got {describe(node)}{hint}")
    return INVALID
