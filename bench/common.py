"""Shared pieces of the benchmarks: processes pinned to cores, CPU time, wrk runs.

Every figure is a ratio against a baseline measured in the same run on the same machine;
absolute numbers from a noisy 2-core box mean little on their own.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER_CORE = "0"
LOAD_CORE = "1"
TICKS = os.sysconf("SC_CLK_TCK")


def ensure_tools(*packages: str) -> None:
    missing = [p for p in packages if shutil.which(p) is None]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, deadline_s: float = 15.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.05)
    raise TimeoutError(url)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def pinned(args: list[str], core: str = SERVER_CORE, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["taskset", "-c", core, *args], **kw)  # type: ignore[call-overload]


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    timeouts: int
    non_2xx: int
    cpu_s: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / max(self.requests, 1) * 1e6


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str,
    pids: list[int],
    connections: int,
    seconds: int,
    threads: int = 2,
    extra: list[str] | None = None,
) -> WrkResult:
    """`extra`: more wrk arguments (e.g. `-H "Connection: close"`)."""
    before = cpu_seconds(pids)
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "--latency", f"-t{threads}", f"-c{connections}",
         f"-d{seconds}s", "--timeout", "5s", *(extra or []), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    cpu = cpu_seconds(pids) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"(?m)^\s+50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"(?m)^\s+99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    timeouts_match = re.search(r"timeout (\d+)", out)
    non2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        requests, rps, p50, p99,
        int(timeouts_match.group(1)) if timeouts_match else 0,
        int(non2xx_match.group(1)) if non2xx_match else 0,
        cpu,
    )  # fmt: skip


NGINX_UPSTREAM = """
worker_processes 1; daemon off; pid {tmp}/up.pid; error_log {tmp}/up.err;
events {{ worker_connections 4096; }}
http {{ access_log off;
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location / {{ default_type application/json; return 200 '{{"items":[],"total":0}}'; }} }} }}
"""

NGINX_PROXY = """
worker_processes 1; daemon off; pid {tmp}/px.pid; error_log {tmp}/px.err;
events {{ worker_connections 4096; }}
http {{ access_log off;
  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header X-Forwarded-For $remote_addr; }} }} }}
"""


class Nginx:
    def __init__(self, template: str, core: str = SERVER_CORE, **values: object) -> None:
        self.tmp = tempfile.mkdtemp(prefix="bench-nginx-")
        conf = Path(self.tmp) / "nginx.conf"
        conf.write_text(template.format(tmp=self.tmp, **values))
        self.proc = pinned(["nginx", "-c", str(conf), "-p", self.tmp], core)

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def server_frame_at(buffer: bytes, offset: int) -> tuple[int, int, int] | None:
    """The unmasked WebSocket frame starting at `offset`: (opcode, payload start, payload
    end), or None while it is incomplete."""
    size = len(buffer)
    if size - offset < 2:
        return None
    length = buffer[offset + 1] & 0x7F
    start = offset + 2
    if length == 126:
        length = int.from_bytes(buffer[start : start + 2], "big")
        start += 2
    elif length == 127:
        length = int.from_bytes(buffer[start : start + 8], "big")
        start += 8
    if size < start + length:
        return None
    return buffer[offset] & 0x0F, start, start + length
