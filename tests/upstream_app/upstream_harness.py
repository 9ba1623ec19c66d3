"""Test harness for the inventory app: the real process, an event receiver, an API client.

The app runs as `python -m upstream_app` on a free loopback port; events are captured by a
small HTTP server on another free port, in a thread, so it can outlive one test's loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[2]
JWT_SECRET = "test-secret-0123456789abcdef0123456789abcdef"
SEED_PASSWORD = "seed-password-for-tests"
EVENTS_TOKEN = "events-token-for-tests"
START_DEADLINE_S = 20.0
EVENT_DEADLINE_S = 5.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def days_from_today(days: int) -> str:
    """An expiry date `days` after today (UTC), as the app counts them."""
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


@dataclass(frozen=True)
class ReceivedEvent:
    """One POST the app made to the events endpoint."""

    path: str
    authorization: str | None
    body: dict[str, Any]


class EventSink:
    """Records events POSTed to it; optionally holds every request until released."""

    def __init__(self, *, hang: bool = False, port: int = 0, fail_first: int = 0) -> None:
        """`port` 0 picks a free one; the first `fail_first` requests get 503."""
        self.events: list[ReceivedEvent] = []
        self.refused = 0
        self._fail_first = fail_first
        self._lock = threading.Lock()
        self._release = threading.Event()
        if not hang:
            self._release.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL to pass as `--events-url`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        """Release held requests and stop serving."""
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def snapshot(self) -> list[ReceivedEvent]:
        """The events received so far."""
        with self._lock:
            return list(self.events)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1
    ) -> list[ReceivedEvent]:
        """Poll until `count` received events match `predicate`; fail at the deadline."""
        deadline = time.monotonic() + EVENT_DEADLINE_S
        while True:
            matching = [event for event in self.snapshot() if predicate(event.body)]
            if len(matching) >= count:
                return matching
            if time.monotonic() > deadline:
                bodies = [event.body for event in self.snapshot()]
                raise AssertionError(f"expected {count} matching events, got: {bodies}")
            await asyncio.sleep(0.02)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                sink._release.wait()
                with sink._lock:
                    refuse = sink.refused < sink._fail_first
                    if refuse:
                        sink.refused += 1
                    else:
                        sink.events.append(
                            ReceivedEvent(self.path, self.headers.get("Authorization"), body)
                        )
                self.send_response(503 if refuse else 202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

        return Handler


@dataclass
class RunningApp:
    """A started `python -m upstream_app` process."""

    url: str
    db: Path
    log: Path
    process: subprocess.Popen[bytes]
    tokens: dict[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_app(
    workdir: Path,
    *,
    events_url: str | None = None,
    args: tuple[str, ...] = (),
    env: dict[str, str | None] | None = None,
) -> RunningApp:
    """Start the app on a free port with a fresh database and wait until /healthz answers.

    `env` overrides the test defaults; a None value removes the variable.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    db, log = workdir / "app.db", workdir / "app.log"
    environment = {
        **os.environ,
        "JWT_SECRET": JWT_SECRET,
        "UPSTREAM_SEED_PASSWORD": SEED_PASSWORD,
        "PROXY_EVENTS_TOKEN": EVENTS_TOKEN,
    }
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    command = [sys.executable, "-m", "upstream_app", "--port", str(port), "--db", str(db)]
    command += ["--host", "127.0.0.1"]
    if events_url is not None:
        command += ["--events-url", events_url]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, *args],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    app = RunningApp(f"http://127.0.0.1:{port}", db, log, process)
    _wait_healthy(app)
    return app


def _wait_healthy(app: RunningApp) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        if app.process.poll() is not None:
            raise AssertionError(f"app exited with {app.process.returncode}:\n{app.log_text()}")
        try:
            with urllib.request.urlopen(f"{app.url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            app.stop()
            raise AssertionError(f"app not healthy in {START_DEADLINE_S}s:\n{app.log_text()}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer with its decoded JSON body."""

    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """A thin client for the app's JSON API that logs users in on demand."""

    def __init__(self, http: aiohttp.ClientSession, app: RunningApp) -> None:
        self.http = http
        self.app = app

    async def call(
        self,
        method: str,
        path: str,
        *,
        user: str | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """Send a request, as `user` (seed password) when given."""
        all_headers = dict(headers or {})
        if user is not None:
            all_headers["Authorization"] = f"Bearer {await self.token(user)}"
        async with self.http.request(
            method, f"{self.app.url}{path}", json=json_body, headers=all_headers
        ) as response:
            body = await response.json(content_type=None)
            return Reply(response.status, body, dict(response.headers))

    async def token(self, username: str, password: str = SEED_PASSWORD) -> str:
        """Log in (once per app and user) and return the access token."""
        if username not in self.app.tokens:
            reply = await self.call(
                "POST",
                "/api/v1/auth/login",
                json_body={"username": username, "password": password},
            )
            assert reply.status == 200, reply.body
            self.app.tokens[username] = reply.body["access_token"]
        return self.app.tokens[username]

    async def new_product(
        self, *, lots: tuple[tuple[int, int], ...] = (), umbral_min: int = 0, precio: float = 10.0
    ) -> int:
        """Create a uniquely named product with `(cantidad, days to expiry)` lots; its id."""
        reply = await self.call(
            "POST",
            "/api/v1/productos",
            user="admin",
            json_body={
                "nombre": f"Test {uuid.uuid4()}",
                "precio": precio,
                "umbral_min": umbral_min,
            },
        )
        assert reply.status == 201, reply.body
        producto_id: int = reply.body["producto_id"]
        for cantidad, days in lots:
            await self.add_lot(producto_id, cantidad, days)
        return producto_id

    async def add_lot(self, producto_id: int, cantidad: int, days: int) -> int:
        """Add a lot expiring `days` from today; its id."""
        reply = await self.call(
            "POST",
            "/api/v1/lotes",
            user="admin",
            json_body={
                "producto_id": producto_id,
                "cantidad": cantidad,
                "fecha_vencimiento": days_from_today(days),
            },
        )
        assert reply.status == 201, reply.body
        lote_id: int = reply.body["lote_id"]
        return lote_id

    async def stock(self, producto_id: int) -> int:
        """The product's current stock."""
        reply = await self.call("GET", f"/api/v1/productos/{producto_id}", user="viewer")
        assert reply.status == 200, reply.body
        stock: int = reply.body["stock"]
        return stock

    async def sell(self, producto_id: int, cantidad: int, user: str = "vendedor") -> Reply:
        """POST a sale."""
        return await self.call(
            "POST",
            "/api/v1/ventas",
            user=user,
            json_body={"producto_id": producto_id, "cantidad": cantidad},
        )
