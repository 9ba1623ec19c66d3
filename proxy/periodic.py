"""One background task that runs a step every few seconds until stopped.

The policy watcher, the serving-certificate watcher and the console's sampler all poll;
a step that fails is logged and the next one runs, so a watcher never dies quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Periodic:
    """Calls `step` every `interval_s` seconds (first after one interval) from `start()`."""

    def __init__(
        self, step: Callable[[], None], interval_s: float, what: str, log: logging.Logger
    ) -> None:
        self._step = step
        self._interval_s = interval_s
        self._what = what
        self._log = log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._what)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                self._step()
            except Exception:
                self._log.exception("%s failed; it keeps running", self._what)


class SettledChange(Generic[T]):
    """What a watcher polls (file signatures), taken only once it changed and then held
    still for one more poll: a file being written is read when it has settled, not half
    written. The policy, certificate and key-file watchers share it."""

    def __init__(self, value: T) -> None:
        self.seen = self.candidate = value

    def reset(self, value: T) -> None:
        """`value` is taken as it is (the caller read it just now)."""
        self.seen = self.candidate = value

    def settled(self, value: T, present: bool = True) -> bool:
        """True when `value` differs from the one taken last and equals the last poll's;
        a value not `present` (a file missing) is never taken."""
        if value == self.seen or not present:
            self.candidate = value
            return False
        if value != self.candidate:
            self.candidate = value  # changed since the last poll: wait until it settles
            return False
        self.seen = value
        return True
