"""The import rule of docs/architecture.md ("Layers"): a module imports only from lower layers.

Layers are read from the module path; upstream_app stands apart and imports neither
`proxy` nor `policies`. Imports inside `if TYPE_CHECKING:` are annotations only and allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[str, int]] = [
    ("policies", 0),
    ("proxy.clock", 0),
    ("proxy.errors", 0),
    ("proxy.logs", 0),
    ("proxy.periodic", 0),
    ("proxy.keys", 0),
    ("proxy.core", 1),
    ("proxy.storage", 2),
    ("proxy.upstream", 2),
    ("proxy.hub", 2),
    ("proxy.metrics", 2),
    ("proxy.tracing", 2),
    ("proxy.server", 3),
    ("proxy.reload", 3),
    ("proxy.console", 3),
    ("proxy.pipeline", 4),
    ("proxy.admin", 5),
    ("proxy.workers", 5),
    ("proxy.admin_listener", 5),
    ("proxy.key_refresh", 4),
    ("proxy.app", 6),
    ("proxy.cli", 7),
    ("proxy.__main__", 8),
]


def unit_of(module: str) -> tuple[str, int] | None:
    """The (prefix, layer) of the LAYERS entry a module belongs to (the longest match)."""
    best: tuple[str, int] | None = None
    for prefix, layer in LAYERS:
        inside = module == prefix or module.startswith(prefix + ".")
        if inside and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                type_only.add(id(inner))
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


SOURCES = sorted(
    p for pkg in ("policies", "proxy", "upstream_app") for p in (REPO / pkg).rglob("*.py")
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_only_from_lower_layers(path: Path) -> None:
    me = module_name(path)
    if me.startswith("upstream_app"):
        for target, line in imported_modules(path):
            assert not target.startswith(("proxy", "policies")), f"{me}:{line} imports {target}"
        return
    if me == "proxy":
        return
    mine = unit_of(me)
    assert mine is not None, f"{me} has no layer: add it to LAYERS"
    for target, line in imported_modules(path):
        theirs = unit_of(target)
        if theirs is None or target == me:
            continue
        my_layer, their = mine[1], theirs[1]
        same_unit = mine[0] == theirs[0]
        assert their < my_layer or (their == my_layer and same_unit), (
            f"{me} (layer {my_layer}) imports {target} (layer {their}) at line {line}"
        )


def test_core_is_pure() -> None:
    banned = ("asyncio", "socket", "prometheus_client", "redis", "aiohttp")
    for path in (REPO / "proxy" / "core").rglob("*.py"):
        for target, line in imported_modules(path):
            assert not target.startswith(banned), f"{path.name}:{line} imports {target}"
