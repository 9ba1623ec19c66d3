"""The path normaliser against RFC 3986 written out literally (6.2.2.1, 6.2.2.2, 5.2.4)."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proxy.core.paths import normalise_path
from proxy.errors import BadRequest

UNRESERVED = string.ascii_letters + string.digits + "-._~"


def reference_decode(path: str) -> str:
    """6.2.2.1 and 6.2.2.2: unreserved escapes decoded, the others upper-cased."""

    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in UNRESERVED else "%" + match.group(1).upper()

    return re.sub("%([0-9A-Fa-f]{2})", one, path)


def reference_remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, step by step as printed in the RFC."""
    source, output = path, ""
    while source:
        if source.startswith("../"):
            source = source[3:]
        elif source.startswith("./"):
            source = source[2:]
        elif source.startswith("/./"):
            source = "/" + source[3:]
        elif source == "/.":
            source = "/"
        elif source.startswith("/../"):
            source = "/" + source[4:]
            output = output[: output.rfind("/")] if "/" in output else ""
        elif source == "/..":
            source = "/"
            output = output[: output.rfind("/")] if "/" in output else ""
        elif source in (".", ".."):
            source = ""
        else:
            start = 1 if source.startswith("/") else 0
            end = source.find("/", start)
            end = len(source) if end < 0 else end
            output += source[:end]
            source = source[end:]
    return output


def climbs_above_root(path: str) -> bool:
    """Does a `..` find no segment left to remove (the RFC would silently stay at `/`)?"""
    depth = 0
    for segment in path[1:].split("/"):
        if segment == "..":
            if depth == 0:
                return True
            depth -= 1
        elif segment != ".":
            depth += 1
    return False


def reference(path: str) -> str | None:
    decoded = reference_decode(path)
    if climbs_above_root(decoded):
        return None
    return reference_remove_dot_segments(decoded)


escapes = st.integers(0, 255).map(lambda n: f"%{n:02x}") | st.integers(0, 255).map(
    lambda n: f"%{n:02X}"
)
pieces = st.sampled_from(["/", ".", "..", "a", "b", "%2e", "%2E", "%2f", "%41", "~", "-"])
paths = st.lists(pieces | escapes | st.text(UNRESERVED + "!$&'()*+,;=:@", max_size=3)).map(
    lambda parts: "/" + "".join(parts)
)


@given(paths)
@example("/api/v1/auth/%6cogin")
@example("/a/%2e%2e/b")
@example("/a//../b")
@example("/..")
def test_matches_the_rfc_reference(path: str) -> None:
    expected = reference(path)
    if expected is None:
        with pytest.raises(BadRequest):
            normalise_path(path.encode())
    else:
        assert normalise_path(path.encode()) == expected.encode()


@given(paths)
def test_is_idempotent_and_leaves_no_dot_segments(path: str) -> None:
    try:
        once = normalise_path(path.encode())
    except BadRequest:
        return
    assert normalise_path(once) == once
    segments = once.split(b"/")
    assert b"." not in segments and b".." not in segments


@given(paths)
def test_decodes_unreserved_escapes_only(path: str) -> None:
    try:
        out = normalise_path(path.encode()).decode()
    except BadRequest:
        return
    for escape in re.findall("%(..)", out):
        assert escape == escape.upper()
        assert chr(int(escape, 16)) not in UNRESERVED


def test_a_plain_path_is_returned_as_it_is() -> None:
    path = b"/api/v1/productos/12"
    assert normalise_path(path) is path


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        (b"/api/v1/auth/%6cogin", b"/api/v1/auth/login"),
        (b"/api/v1/%72eportes/ventas", b"/api/v1/reportes/ventas"),
        (b"/files/a%2fb", b"/files/a%2Fb"),
        (b"/a/./b/../c", b"/a/c"),
        (b"/a//b", b"/a//b"),
        (b"/a/b/..", b"/a/"),
        (b"/a/%2E%2e/b", b"/b"),
        (b"*", b"*"),
    ],
)
def test_examples(path: bytes, normal: bytes) -> None:
    assert normalise_path(path) == normal


@pytest.mark.parametrize("path", [b"/..", b"/a/../..", b"/%2e%2e/etc", b"/a%2", b"/a%zz"])
def test_refused(path: bytes) -> None:
    with pytest.raises(BadRequest):
        normalise_path(path)
