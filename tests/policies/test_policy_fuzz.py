"""Whatever the input, the loader answers a LoadedPolicy or a PolicyError, nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.errors import PolicyError
from policies.load import LoadedPolicy, load_policy_text
from policies.spec import POLICY_SPEC, ListOf, MapOf, Nullable, Section

SHIPPED_TEXT = (Path(__file__).resolve().parents[2] / "policies.yaml").read_text()
LINE = re.compile(r"^f\.yaml(:[1-9]\d*:[1-9]\d*)?: \S.*: \S")


def _field_names(spec: object, seen: set[str]) -> set[str]:
    while isinstance(spec, Nullable | ListOf | MapOf):
        spec = (
            spec.inner if isinstance(spec, Nullable) else getattr(spec, "item", None) or spec.value
        )
    if isinstance(spec, Section):
        for f in spec.fields:
            seen.add(f.name)
            _field_names(f.spec, seen)
    return seen


KEYS = sorted(_field_names(POLICY_SPEC, set()))
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "2s",
            "250ms",
            "-1s",
            "100/min",
            "0/s",
            "502",
            "5xx",
            "http://a:1",
            "/x",
            "GET",
            "redis://:pw@h",
            "HS256",
            "RS256",
            "shadow",
            "memory",
            "0.0.0.0:1",
            "10.0.0.1/8",
        ]
    )
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)
TOP_LEVEL = st.dictionaries(st.sampled_from(KEYS), DOCUMENTS, max_size=6)


def check(text: str | bytes) -> None:
    """Load and check the contract of the answer: a policy, or well-formed error lines."""
    try:
        loaded = load_policy_text(text, "f.yaml")
    except PolicyError as error:
        lines = str(error).splitlines()
        assert lines, "a PolicyError lists at least one problem"
        assert len(lines) == len(error.problems)
        for line in lines:
            assert LINE.match(line), line
        return
    assert isinstance(loaded, LoadedPolicy)


@settings(max_examples=200, deadline=None)
@given(st.one_of(TOP_LEVEL, DOCUMENTS))
def test_random_documents(document: object) -> None:
    check(yaml.safe_dump(document))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(bytes))
def test_random_text(text: str | bytes) -> None:
    check(text)


def _scalar_spans(text: str, keys: bool) -> list[tuple[int, int]]:
    """Where each scalar of `text` is written (values only, or keys too)."""
    spans = []
    pending = [yaml.compose(text, Loader=yaml.SafeLoader)]
    while pending:
        node = pending.pop()
        if isinstance(node, yaml.ScalarNode):
            spans.append((node.start_mark.index, node.end_mark.index))
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                pending.extend([key, value] if keys else [value])
    return sorted(spans)


SPANS = _scalar_spans(SHIPPED_TEXT, keys=True)
VALUE_SPANS = _scalar_spans(SHIPPED_TEXT, keys=False)
LINES = SHIPPED_TEXT.splitlines(keepends=True)


@st.composite
def mutations(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["delete", "duplicate", "truncate", "scalar", "insert"]))
    if kind in ("delete", "duplicate"):
        i = draw(st.integers(0, len(LINES) - 1))
        middle = [] if kind == "delete" else [LINES[i], LINES[i]]
        return "".join(LINES[:i] + middle + LINES[i + 1 :])
    if kind == "truncate":
        return SHIPPED_TEXT[: draw(st.integers(0, len(SHIPPED_TEXT)))]
    replacement = draw(st.text(max_size=12) | SCALARS.map(str))
    if kind == "scalar":
        start, end = draw(st.sampled_from(SPANS))
    else:
        start = end = draw(st.integers(0, len(SHIPPED_TEXT)))
    return SHIPPED_TEXT[:start] + replacement + SHIPPED_TEXT[end:]


@settings(max_examples=200, deadline=None)
@given(mutations())
def test_mutations_of_the_shipped_policy(text: str) -> None:
    check(text)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(VALUE_SPANS), st.sampled_from(["", "0", "-1", "x", "true", "null", "[]", "{}"])
)
def test_a_wrong_scalar_is_reported_at_its_line(span: tuple[int, int], replacement: str) -> None:
    """Replacing one value either still loads or is reported on that value's own line."""
    start, end = span
    text = SHIPPED_TEXT[:start] + replacement + SHIPPED_TEXT[end:]
    try:
        load_policy_text(text, "f.yaml")
    except PolicyError as error:
        line = SHIPPED_TEXT.count("\n", 0, start) + 1
        assert any(p.line == line for p in error.problems), (text.splitlines()[line - 1], error)
