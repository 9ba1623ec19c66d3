"""The parent process of `server.workers > 1`: forks, watches, restarts and drains workers,
owns the shared breakers and answers the workers' questions about totals.

It runs its own small asyncio loop; each worker is a forked child with one end of a
socketpair (see `channel`). A worker's death shows as its pidfd becoming readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from policies.load import LoadedPolicy, load_policy
from proxy.workers.board import BreakerBoard
from proxy.workers.channel import Message, receive, send
from proxy.workers.totals import Family, Table, merge, retire, shared_families

log = logging.getLogger("proxy.workers")

TICK_S = 0.02
"""The finest step at which time moves the shared breakers (open -> half_open, broadcast)."""
IDLE_TICK_S = 0.25
"""The step while no breaker is open (a breaker opened meanwhile waits at most this)."""
COLLECT_TIMEOUT_S = 1.0
"""A worker silent this long is left out of one scrape: its last snapshot stands in."""

WorkerMain = Callable[[LoadedPolicy, socket.socket], int]
"""Runs a worker in the forked child with the latest good policy, on its end of the
channel; returns the exit code."""


class Worker:
    """One worker slot: the process now in it and what the supervisor knows of it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid = 0
        self.pidfd = -1
        self.sock: socket.socket | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready = False
        """It said it is listening: a death before that is a failed start."""
        self.snapshot: list[Family] = []
        self.states: dict[str, str] = {}
        """The breaker states it reported last."""
        self.connections: dict[str, Any] | None = None
        """Its WebSocket counts (`/api/v1/ws/connections`) at the last collect."""
        self.degraded: frozenset[str] = frozenset()
        """What its `/readyz` alone would list under `degraded`, as it reported last."""


class Supervisor:
    def __init__(self, loaded: LoadedPolicy, config_path: str, count: int, main: WorkerMain):
        self.config_path = config_path
        self.loaded = loaded
        """The latest good policy: what a restarted worker starts with."""
        self.count = count
        self.main = main
        self.board = BreakerBoard(loaded.policy)
        self.workers = [Worker(i) for i in range(count)]
        self.restarts = 0
        self.retired = Table()
        self.degraded: frozenset[str] = frozenset()
        """The union of the live workers' `degraded`, as broadcast last."""
        self.stopping = False
        self.status = 0
        self._done = asyncio.Event()
        self._ids = itertools.count(1)
        self._collecting: dict[int, asyncio.Future[Message]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        for worker in self.workers:
            await self.spawn(worker)
        ticker = loop.create_task(self._tick())
        await self._done.wait()
        ticker.cancel()
        return self.status

    async def spawn(self, worker: Worker) -> None:
        if self.stopping:
            return  # a restart that SIGTERM overtook
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the child: leave the supervisor's world, become a worker
            ours.close()
            for other in self.workers:
                for fd in (other.sock.fileno() if other.sock else -1, other.pidfd):
                    if fd >= 0:
                        with contextlib.suppress(OSError):
                            os.close(fd)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until it serves (and reloads)
            signal.set_wakeup_fd(-1)
            asyncio.events._set_running_loop(None)
            code = 1
            try:
                code = self.main(self.loaded, theirs)
            finally:
                os._exit(code)
        theirs.close()
        worker.pid, worker.sock, worker.ready, worker.states = pid, ours, False, {}
        worker.degraded = frozenset()
        worker.pidfd = os.pidfd_open(pid)
        asyncio.get_running_loop().add_reader(worker.pidfd, self._reap, worker)
        reader, worker.writer = await asyncio.open_connection(sock=ours)
        self._spawn_task(self._listen(worker, reader))
        log.info("worker %d started", worker.index, extra={"pid": pid})

    def _reap(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.pidfd)
        os.close(worker.pidfd)
        worker.pidfd = -1
        _, status = os.waitpid(worker.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if worker.writer is not None:
            worker.writer.close()
        worker.sock = worker.writer = None
        pid, worker.pid = worker.pid, 0
        worker.degraded = frozenset()
        self._broadcast_degraded()
        if self.stopping:
            self.status = self.status or (code if code > 0 else 0)
            if not any(w.pid for w in self.workers):
                self._done.set()
            return
        if not worker.ready:
            log.error("worker %d failed to start (exit %d): stopping", worker.index, code)
            self.status = code if code > 0 else 1
            self.stop()
            if not any(w.pid for w in self.workers):
                self._done.set()
            return
        self.restarts += 1
        retire(self.retired, worker.snapshot, self.board.breakers)
        worker.snapshot = []
        log.warning(
            "worker %d died (exit %d): restarting it", worker.index, code, extra={"pid": pid}
        )
        self._spawn_task(self.spawn(worker))

    def stop(self) -> None:
        """SIGTERM/SIGINT: every worker drains; the supervisor exits when all have."""
        if self.stopping:
            return
        self.stopping = True
        log.info("draining all workers")
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        if not any(w.pid for w in self.workers):
            self._done.set()

    def reload(self) -> None:
        """SIGHUP: every worker reloads the policy; the shared breakers follow it."""
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGHUP)
        try:
            loaded = load_policy(self.config_path)
        except Exception as error:  # the workers log the policy's errors
            log.warning("shared breakers keep the last good policy: %s", type(error).__name__)
            return
        self.loaded = loaded
        self.board.sync(loaded.policy)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.board.next_tick(TICK_S, IDLE_TICK_S))
            self.board.tick()
            self._broadcast_if_changed()

    # -- messages ----------------------------------------------------------------------------
    async def _listen(self, worker: Worker, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await receive(reader)
            except ValueError:
                log.exception("bad message from worker %d", worker.index)
                return
            if message is None:
                return
            kind = message.get("t")
            if kind == "hello":  # before it listens: it starts with the shared states
                self._send(worker, {"t": "states", "b": self.board.states()})
                self._send(worker, {"t": "degraded", "d": sorted(self.degraded)})
            elif kind == "ready":
                worker.ready = True
            elif kind == "outcomes":
                self._outcomes(worker, message)
            elif kind == "collected":
                future = self._collecting.pop(int(message["id"]), None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif kind == "ask":
                self._spawn_task(self._answer(worker, message))

    def _send(self, worker: Worker, message: Message) -> None:
        if worker.writer is not None:
            send(worker.writer, message)

    def _outcomes(self, worker: Worker, message: Message) -> None:
        self.board.apply(message.get("b", {}))
        if "d" in message:
            worker.degraded = frozenset(message["d"])
            self._broadcast_degraded()
        reported = message.get("s")
        if reported is not None:
            worker.states.update(reported)
        if self.board.changed:
            self._broadcast_if_changed()
            return
        if reported is None:
            return
        states = self.board.states()
        if any(worker.states.get(name) != state[0] for name, state in states.items()):
            self._send(worker, {"t": "states", "b": states})

    def _broadcast_if_changed(self) -> None:
        if not self.board.changed:
            return
        self.board.changed = False
        message = {"t": "states", "b": self.board.states()}
        for worker in self.workers:
            self._send(worker, message)

    def _broadcast_degraded(self) -> None:
        """Every worker's `/readyz` lists what any live worker lists under `degraded`."""
        union = frozenset().union(*(w.degraded for w in self.workers if w.pid))
        if union == self.degraded:
            return
        self.degraded = union
        message = {"t": "degraded", "d": sorted(union)}
        for worker in self.workers:
            self._send(worker, message)

    async def collect(self) -> None:
        """Ask every live worker for its snapshot and pending breaker outcomes."""
        loop = asyncio.get_running_loop()
        asked: list[tuple[Worker, asyncio.Future[Message]]] = []
        for worker in self.workers:
            if worker.ready and worker.writer is not None:
                ident = next(self._ids)
                future: asyncio.Future[Message] = loop.create_future()
                self._collecting[ident] = future
                self._send(worker, {"t": "collect", "id": ident})
                asked.append((worker, future))
        if asked:
            await asyncio.wait([f for _, f in asked], timeout=COLLECT_TIMEOUT_S)
        for worker, future in asked:
            if future.done():
                answer = future.result()
                worker.snapshot = answer.get("m", [])
                worker.connections = answer.get("ws")
                self._outcomes(worker, answer)
            else:
                future.cancel()
        self._collecting = {k: f for k, f in self._collecting.items() if not f.done()}

    async def _answer(self, worker: Worker, message: Message) -> None:
        question = message.get("q")
        reply: Message = {"t": "answer", "id": message.get("id")}
        await self.collect()
        if question == "metrics":
            reply["text"] = self.metrics_text(worker).decode()
        elif question == "breakers":
            reply["stats"] = {name: self.board.stats(name) for name in self.board.breakers}
        elif question == "connections":
            reply["connections"] = self.connections()
        elif question == "action":
            name, action = str(message.get("name")), str(message.get("action"))
            if name in self.board.breakers:
                self.board.act(name, action)
                self._broadcast_if_changed()
                # Each worker reads its channel in order: once it answers this collect,
                # it has adopted the new state, so the answer holds for every worker.
                await self.collect()
                reply["stats"] = self.board.stats(name)
        self._send(worker, reply)

    def connections(self) -> dict[str, Any]:
        total: dict[str, Any] = {"total": 0, "by_channel": {}, "authenticated": 0}
        for worker in self.workers:
            counts = worker.connections if worker.pid else None
            if counts is None:
                continue
            total["total"] += counts.get("total", 0)
            total["authenticated"] += counts.get("authenticated", 0)
            for channel, n in counts.get("by_channel", {}).items():
                total["by_channel"][channel] = total["by_channel"].get(channel, 0) + n
        return total

    def metrics_text(self, scraper: Worker) -> bytes:
        live = [w.snapshot for w in self.workers if w.pid and w.snapshot]
        states = {name: s[0] for name, s in self.board.states().items()}
        serving = sum(1 for w in self.workers if w.pid and w.ready)
        shared = shared_families(states, self.board.transitions, self.restarts, serving)
        return merge(live, scraper.snapshot, self.retired, shared, self.board.breakers)
