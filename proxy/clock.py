"""Time as a dependency: pure cores take a `Clock` so tests drive time without sleeping."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Final

_monotonic: Final = time.monotonic
_wall: Final = time.time


def monotonic() -> float:
    """`time.monotonic()` for compiled modules: a native call of a bound static, where
    `time.monotonic()` looks the name up in the `time` module on every call (about 270
    instructions, four times per forwarded request)."""
    return _monotonic()


class Clock(ABC):
    """A base class rather than a Protocol: compiled, a call through it is a native
    method call (through a Protocol it was a lookup by name, on every request)."""

    @abstractmethod
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for durations and windows)."""

    @abstractmethod
    def wall(self) -> float:
        """Unix seconds (for values users see: Reset headers, timestamps)."""


class SystemClock(Clock):
    """The real clocks."""

    __slots__ = ()

    def monotonic(self) -> float:
        return _monotonic()

    def wall(self) -> float:
        return _wall()


class FakeClock(Clock):
    """A clock tests move by hand; wall time moves with monotonic time."""

    __slots__ = ("_now", "_wall_offset")

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        self._now += seconds


SYSTEM_CLOCK = SystemClock()
