"""Starting the real processes (upstream_app, the sidecar) on free loopback ports.

Every wait is a poll with a deadline; every process is killed at teardown even when a test
fails, and its stderr is kept for the failure message.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_SECRET = "test-secret-for-the-suite-only-0123456789"
EVENTS_TOKEN = "test-events-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        JWT_SECRET=TEST_SECRET,
        PROXY_EVENTS_TOKEN=EVENTS_TOKEN,
        UPSTREAM_SEED_PASSWORD="seed-password",
        PYTHONUNBUFFERED="1",
    )
    env.pop("REDIS_URL", None)
    if extra:
        env.update(extra)
    return env


def wait_http(
    url: str, deadline_s: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError as error:
            error.close()  # an answer, but not a 2xx/3xx yet: keep polling
            last = error
        except Exception as error:  # any failure means "not up yet"
            last = error
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {deadline_s}s: {last}")


class Process:
    """A child process whose stderr goes to a temp file we can read on failure."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path = REPO) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix="proc-", suffix=".log", delete=False
        )
        self.popen = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        return self.popen.wait(timeout)

    def stop_gracefully(self) -> None:
        """SIGTERM and wait for the exit, keeping the output readable."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            self.popen.wait(20)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.log.close()
        os.unlink(self.log.name)


class Sidecar:
    """A started sidecar: its process, port and policy file (which a test may rewrite)."""

    def __init__(self, proc: Process, port: int, config: Path) -> None:
        self.proc = proc
        self.port = port
        self.config = config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_upstream_app(db: Path, events_url: str | None = None, **env: str) -> tuple[Process, int]:
    port = free_port()
    args = [sys.executable, "-m", "upstream_app", "--port", str(port), "--db", str(db)]
    args += ["--host", "127.0.0.1"]
    if events_url:
        args += ["--events-url", events_url]
    proc = Process(args, base_env(env))
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc.popen)
    return proc, port


def start_sidecar(config: Path, port: int, *extra_args: str, **env: str) -> Process:
    args = [sys.executable, "-m", "proxy", "run", "--config", str(config), *extra_args]
    proc = Process(args, base_env(env))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc.popen)
    except Exception:
        print(proc.output(), file=sys.stderr)
        proc.stop()
        raise
    return proc
