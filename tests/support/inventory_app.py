"""The inventory app on a fixed port, so a test can kill, freeze and start it again there."""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from pathlib import Path

from tests.support.processes import Process, base_env, free_port, wait_http
from tests.support.tokens import bearer


class InventoryApp:
    """`python -m upstream_app` on a port chosen once: a restart comes back where the
    sidecar's policy points."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.port = free_port()
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [sys.executable, "-m", "upstream_app", "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--db", str(self.db)]
        self.proc = Process(args, base_env())
        wait_http(f"{self.url}/healthz", proc=self.proc.popen)

    def kill(self) -> None:
        """SIGKILL, as a crash: requests in flight get no answer."""
        assert self.proc is not None
        self.proc.signal(signal.SIGKILL)
        self.proc.wait()
        self.proc.stop()
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing is answered."""
        assert self.proc is not None
        self.proc.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.thaw()  # a frozen process cannot exit on SIGTERM
            self.proc.stop()
            self.proc = None

    def admin_post(self, path: str, payload: dict[str, object]) -> None:
        """An admin POST straight to the app (setup and chaos switches, not traffic)."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", **bearer("1", "admin")},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status < 300
