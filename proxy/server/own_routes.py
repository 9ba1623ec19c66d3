"""The sidecar's own paths: exact ones and a few prefixes, matched before the route table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

H = TypeVar("H", bound=Callable[..., object])


class OwnRoutes(Generic[H]):
    __slots__ = ("_exact", "_prefixes")

    def __init__(self, exact: dict[bytes, H], prefixes: list[tuple[bytes, H]]) -> None:
        self._exact = exact
        self._prefixes = tuple(prefixes)

    def match(self, path: bytes) -> H | None:
        handler = self._exact.get(path)
        if handler is not None:
            return handler
        for prefix, candidate in self._prefixes:
            if path.startswith(prefix) and len(path) > len(prefix):
                return candidate
        return None
