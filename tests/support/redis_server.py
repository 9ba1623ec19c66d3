"""A real redis-server for tests: its own free port, no persistence, stoppable at will.

Outage tests stop, restart, pause (SIGSTOP: the socket still accepts, nothing answers, as
with an overloaded Redis) and resume it; `ensure_running` puts it back for the next test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.processes import free_port

READY_TIMEOUT_S = 10.0


class RedisServer:
    """One redis-server process on 127.0.0.1, restartable on the same port."""

    def __init__(
        self, workdir: Path, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._argv = [
            executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--logfile", str(workdir / "redis.log"),
            *extra_args,
        ]  # fmt: skip
        self._log = workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._process = subprocess.Popen(
            self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._paused = False
        self._wait_ready()

    def stop(self) -> None:
        """Terminate the server (a paused one is resumed first so it can exit)."""
        process = self._process
        if process is None:
            return
        self.resume()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, no goodbye to clients or replicas."""
        process = self._process
        if process is None:
            return
        process.kill()
        process.wait()
        self._process = None
        self._paused = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing is answered."""
        assert self._process is not None, "the server is not started"
        os.kill(self._process.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        if self._paused and self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)
        self._paused = False

    def ensure_running(self) -> None:
        self.resume()
        self.start()

    def command(self, *args: str) -> bytes:
        """One command over a raw socket, for setup and inspection; returns the raw reply."""
        return raw_command(self.port, *args)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                log = self._log.read_text(errors="replace") if self._log.exists() else ""
                raise RuntimeError(f"redis-server exited:\n{log[-2000:]}")
            try:
                if self.command("PING") == b"+PONG\r\n":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not ready on port {self.port}")
            time.sleep(0.01)


def raw_command(port: int, *args: str) -> bytes:
    """One command to 127.0.0.1:`port` over a raw socket; the raw reply."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"".join(parts))
        return _read_reply(sock)


def _read_reply(sock: socket.socket) -> bytes:
    """Read until a complete simple, error, integer or bulk reply has arrived."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        head, sep, rest = data.partition(b"\r\n")
        if not sep:
            continue
        if head[:1] != b"$":
            return data
        size = int(head[1:])
        if size < 0 or len(rest) >= size + 2:
            return data
