"""The writing side of one client connection's flow control.

Writing pauses while the client's socket is full (asyncio's `pause_writing`), and whoever
writes waits for `resume_writing`: the serving task by `drain()`, a relay by
`on_resume_writing` (it stops reading its upstream). The reading side stays with the
connection (`ClientConnection._pause_reading`): it is bound to parsing (requests read
ahead, bytes held back unparsed), so it cannot be separated from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FlowControl:
    __slots__ = ("_write_waiters", "transport", "write_paused")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self._write_waiters: list[asyncio.Future[None]] = []

    # -- writing ------------------------------------------------------------------------------
    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.release_writers()

    def release_writers(self) -> None:
        """Wake whoever waits to write (the socket drained, or the connection is gone)."""
        waiters, self._write_waiters = self._write_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        if self.write_paused and self.transport is not None:
            waiter = asyncio.get_running_loop().create_future()
            self._write_waiters.append(waiter)
            await waiter

    def on_resume_writing(self, callback: Callable[[], None]) -> None:
        """Run `callback` once writing may go on (used to pause an upstream read)."""
        waiter = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(lambda _f: callback())
        self._write_waiters.append(waiter)
