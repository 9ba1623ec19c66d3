"""YAML read as a node tree that keeps every value's line and column.

`yaml.compose` builds nodes without constructing Python objects, so no tag can run code
and every error can point at the value at fault. Only the standard scalar types (null,
bool, int, float, str) are read; any other tag is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from policies.errors import Problem
from policies.redact import redact_url

SYNTAX = "(syntax)"
"""The key path shown for problems found before the document has any structure."""

ScalarType = Literal["null", "bool", "int", "float", "str", "date"]

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS: dict[str, ScalarType] = {
    _TAG + "null": "null",
    _TAG + "bool": "bool",
    _TAG + "int": "int",
    _TAG + "float": "float",
    _TAG + "str": "str",
    _TAG + "timestamp": "date",
    _TAG + "value": "str",  # a plain `=`: text for us, as PyYAML reads it in keys
    _TAG + "merge": "str",  # a plain `<<` outside key position
}
_MERGE_TAG = _TAG + "merge"
_COLLECTION_TAGS = {_TAG + "map", _TAG + "seq"}
_CONSTRUCTOR = SafeConstructor()
_SHOWN_MAX = 60


def position(node: Node) -> tuple[int, int]:
    """(line, col) counted from 1."""
    return node.start_mark.line + 1, node.start_mark.column + 1


def decode(raw: bytes) -> str | Problem:
    """UTF-8 text (a BOM is dropped), or the problem at the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8", "replace")
        line, col = _line_col(before, len(before))
        return Problem(line, col, SYNTAX, "the file is not valid UTF-8")


def _line_col(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def compose(text: str) -> Node | Problem | None:
    """The single document's root node, None for an empty document, or the syntax problem."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.context_mark:
            where = f"{exc.context_mark.line + 1}:{exc.context_mark.column + 1}"
            message = f"{message} ({exc.context} started at {where})"
        return Problem(line, col, SYNTAX, message)
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "?")
        return Problem(line, col, SYNTAX, f"character U+{code:04X} is not allowed in YAML")
    except yaml.YAMLError as exc:
        return Problem(1, 1, SYNTAX, str(exc).splitlines()[0] if str(exc) else "invalid YAML")
    except RecursionError:
        return Problem(1, 1, SYNTAX, "the document is nested too deeply")


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    key_node: Node
    value: Node


Report = Callable[[Node, str, str], None]
"""report(node, key, message): a problem with one entry of a mapping."""


def mapping_entries(node: MappingNode, report: Report) -> list[Entry]:
    """The entries of a mapping, merge keys (`<<: *defaults`) expanded, duplicates reported.

    Explicit keys win over merged ones, as in PyYAML; merged mappings come first.
    """
    return _entries(node, report, set())


def _entries(node: MappingNode, report: Report, active: set[int]) -> list[Entry]:
    active.add(id(node))
    explicit: dict[str, Entry] = {}
    merged: dict[str, Entry] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            for source in _merge_sources(value_node, report, active):
                for entry in _entries(source, report, active):
                    merged.setdefault(entry.key, entry)
            continue
        if not isinstance(key_node, ScalarNode):
            report(key_node, "?", "a key must be a plain name, not a list or a mapping")
            continue
        key = key_node.value
        first = explicit.get(key)
        if first is not None:
            line, col = position(first.key_node)
            report(key_node, key, f"duplicate key '{key}' (first at {line}:{col})")
            continue
        explicit[key] = Entry(key, key_node, value_node)
    active.discard(id(node))
    return [e for k, e in merged.items() if k not in explicit] + list(explicit.values())


def _merge_sources(value: Node, report: Report, active: set[int]) -> list[MappingNode]:
    candidates = value.value if isinstance(value, SequenceNode) else [value]
    sources = []
    for candidate in candidates:
        if not isinstance(candidate, MappingNode):
            report(candidate, "<<", "a merge key takes a mapping or a list of mappings")
        elif id(candidate) in active:
            report(candidate, "<<", "a mapping cannot merge itself")
        else:
            sources.append(candidate)
    return sources


def unsupported_tag(node: Node) -> str | None:
    """The message for a tag this loader does not read (`!!python/...`, `!custom`), if any."""
    known = _SCALAR_TAGS if isinstance(node, ScalarNode) else _COLLECTION_TAGS
    if node.tag in known:
        return None
    return f"unsupported YAML tag {shown(node.tag)}"


def scalar(node: ScalarNode) -> tuple[ScalarType, Any]:
    """The type and value of a scalar with a standard tag (call `unsupported_tag` first).

    Raises ValueError for a value its tag cannot hold (`!!int abc`, a 5,000-digit int).
    """
    kind = _SCALAR_TAGS[node.tag]
    if kind in ("str", "date"):
        return kind, node.value
    construct = {
        "null": _CONSTRUCTOR.construct_yaml_null,
        "bool": _CONSTRUCTOR.construct_yaml_bool,
        "int": _CONSTRUCTOR.construct_yaml_int,
        "float": _CONSTRUCTOR.construct_yaml_float,
    }[kind]
    try:
        return kind, construct(node)
    except (ValueError, LookupError, TypeError, yaml.YAMLError):
        raise ValueError(f"{shown(node.value)} is not a valid {kind}") from None


def describe(node: Node) -> str:
    """How a value is named in a message: `'zero'`, `the integer 5`, `a list`."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    kind = _SCALAR_TAGS.get(node.tag)
    names = {"null": "null", "bool": "the boolean", "int": "the integer", "float": "the number"}
    if kind == "null":
        return "null"
    if kind in names:
        return f"{names[kind]} {_cut(node.value)}"
    if kind == "date":
        return f"the date {_cut(node.value)}"
    return shown(node.value)


def shown(text: str) -> str:
    """A user's value quoted for a message: URL passwords masked, long values cut."""
    return repr(_cut(redact_url(text)))


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."
