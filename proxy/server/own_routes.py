"""The sidecar's own paths: exact ones and a few prefixes, matched before the route table."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Generic, TypeVar

H = TypeVar("H", bound=Callable[..., object])


class OwnRoutes(Generic[H]):
    __slots__ = ("_exact", "_prefixes", "_stem")

    def __init__(self, exact: dict[bytes, H], prefixes: list[tuple[bytes, H]]) -> None:
        self._exact = exact
        self._prefixes = tuple(prefixes)
        stems = [prefix for prefix, _ in prefixes]
        self._stem: bytes = os.path.commonprefix(stems) if stems else b""  # type: ignore[assignment]  # noqa: RUF071 (bytes, not paths)
        """What every prefix starts with: most paths are rejected by one comparison."""

    def match(self, path: bytes) -> H | None:
        handler = self._exact.get(path)
        if handler is not None or not path.startswith(self._stem):
            return handler
        for prefix, candidate in self._prefixes:
            if path.startswith(prefix) and len(path) > len(prefix):
                return candidate
        return None
