"""A worker's end of the channel: outcome batches out, shared breaker states in, and the
questions whose answer needs every worker (`/metrics`, breaker STATS and actions).

Nothing here runs per request: every `BATCH_S` a ticker reads the local breakers' totals
(the request path counts them anyway) and sends what moved since the last batch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable
from typing import Any

from proxy.pipeline.state import State
from proxy.workers.board import LOCAL_ONLY, TOTALS
from proxy.workers.channel import Message, receive, send
from proxy.workers.totals import snapshot

log = logging.getLogger("proxy.workers")

BATCH_S = 0.015
ASK_TIMEOUT_S = 5.0


class SupervisorGone(Exception):
    """The supervisor did not answer: the worker answers with its own view."""


class WorkerLink:
    def __init__(self, state: State, sock: socket.socket, lost: Callable[[], object]) -> None:
        self.state = state
        self._sock = sock
        self._lost = lost
        self._writer: asyncio.StreamWriter | None = None
        self._reported: dict[str, list[int]] = {}
        self._generations: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._adopted = asyncio.Event()

    async def connect(self) -> None:
        """Before listening: take the shared breaker states (a restarted worker must not
        serve a request with fresh ones)."""
        reader, self._writer = await asyncio.open_connection(sock=self._sock)
        send(self._writer, {"t": "hello"})
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(reader)), loop.create_task(self._batch())]
        try:
            await asyncio.wait_for(self._adopted.wait(), ASK_TIMEOUT_S)
        except TimeoutError:
            log.warning("no shared breaker states from the supervisor yet")

    def listening(self) -> None:
        """After listening: from now on a death is a crash to restart, not a failed start."""
        self._send({"t": "ready"})

    # -- outcomes out, states in ---------------------------------------------------------
    def deltas(self) -> tuple[dict[str, list[int]], dict[str, str]]:
        """What each shared breaker's totals did since the last report, and its state."""
        moved: dict[str, list[int]] = {}
        states: dict[str, str] = {}
        for name, breaker in list(self.state.breakers.items()):
            if name in LOCAL_ONLY:
                continue
            stats = breaker.stats()
            now = [int(stats[field]) for field in TOTALS]
            before = self._reported.get(name)
            if before is None or any(b > n for b, n in zip(before, now, strict=True)):
                before = [0] * len(TOTALS)  # a new breaker (a reload re-created it)
            delta = [n - b for n, b in zip(now, before, strict=True)]
            self._reported[name] = now
            states[name] = str(stats["state"])
            if any(delta):
                moved[name] = [*delta, int(stats["consecutive_failures"])]
        return moved, states

    async def _batch(self) -> None:
        adopted: dict[str, str] = {}
        while True:
            await asyncio.sleep(BATCH_S)
            moved, states = self.deltas()
            if states != adopted:  # its own copy moved: the supervisor checks it
                adopted = states
                self._send({"t": "outcomes", "b": moved, "s": states})
            elif moved:
                self._send({"t": "outcomes", "b": moved})

    def adopt(self, shared: dict[str, list[Any]]) -> None:
        """Mirror the supervisor's breakers where they changed or this worker strayed."""
        for name, (state, opened_at, retry_after, consecutive, generation) in shared.items():
            breaker = self.state.breakers.get(name)
            if breaker is None:
                continue
            if generation != self._generations.get(name) or breaker.state.value != state:
                breaker.adopt(state, opened_at, retry_after, consecutive)
                self.state.metrics.set_breaker_state(name, state)
                self._generations[name] = generation
        self._adopted.set()

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await receive(reader)
            except ValueError:
                log.exception("bad message from the supervisor")
                message = None
            if message is None:
                break
            kind = message.get("t")
            if kind == "states":
                self.adopt(message["b"])
            elif kind == "collect":
                moved, states = self.deltas()
                m = snapshot(self.state.metrics.registry)
                hub = self.state.hub
                ws = hub.connections() if hub is not None else None
                reply = {"t": "collected", "id": message["id"], "m": m, "b": moved, "s": states}
                self._send({**reply, "ws": ws})
            elif kind == "answer":
                future = self._waiting.pop(int(message["id"]), None)
                if future is not None and not future.done():
                    future.set_result(message)
        for future in self._waiting.values():
            future.cancel()
        if not self.state.draining:
            log.error("the supervisor is gone: draining")
            self._lost()

    def _send(self, message: Message) -> None:
        if self._writer is not None:
            send(self._writer, message)

    async def ask(self, question: str, **fields: Any) -> Message:
        ident = next(self._ids)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        self._send({"t": "ask", "id": ident, "q": question, **fields})
        try:
            return await asyncio.wait_for(future, ASK_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError) as error:
            self._waiting.pop(ident, None)
            raise SupervisorGone() from error

    # -- what the admin endpoints ask ----------------------------------------------------------
    async def metrics_text(self) -> bytes:
        try:
            return str((await self.ask("metrics"))["text"]).encode()
        except SupervisorGone:
            return self.state.metrics.render()

    async def breaker_stats(self) -> dict[str, dict[str, Any]]:
        try:
            return dict((await self.ask("breakers"))["stats"])
        except SupervisorGone:
            return {}

    async def breaker_action(self, name: str, action: str) -> dict[str, Any] | None:
        """The breaker's STATS after the action; None if it is not shared."""
        if name in LOCAL_ONLY:
            return None
        answer = await self.ask("action", name=name, action=action)
        stats = answer.get("stats")
        return dict(stats) if stats is not None else None

    async def connections(self) -> dict[str, Any] | None:
        """`/api/v1/ws/connections` summed over the workers; None: answer with our own."""
        try:
            return dict((await self.ask("connections"))["connections"])
        except SupervisorGone:
            return None

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
