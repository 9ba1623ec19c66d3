"""One background task that runs a step every few seconds until stopped.

The policy watcher, the serving-certificate watcher and the console's sampler all poll;
a step that fails is logged and the next one runs, so a watcher never dies quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable


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
