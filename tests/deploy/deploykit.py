"""Helpers of the deployment tests: the tools, a threaded upstream, the sidecar under
observation and a Prometheus to query (the fixtures that build them live in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from tests.support.fault_upstream import FaultUpstream

QUERY_DEADLINE_S = 30.0
T = TypeVar("T")


@dataclass(frozen=True)
class PrometheusTools:
    promtool: str
    prometheus: str


class ThreadedUpstream:
    """A FaultUpstream on its own event loop thread, for session-scoped synchronous tests."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server = self._run(FaultUpstream().start())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def stop(self) -> None:
        self._run(self.server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET, error statuses included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


def wait_ready(url: str, proc: subprocess.Popen[bytes], deadline_s: float) -> None:
    """Poll `url` until it answers 200 (Prometheus's /-/ready answers 503 while starting)."""
    end = time.monotonic() + deadline_s
    last: int | str = "no answer"
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            last = status_of(url)
        except OSError as error:
            last = str(error)
        if last == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{url} was not ready within {deadline_s}s: {last}")


@dataclass(frozen=True)
class ObservedSidecar:
    url: str
    port: int
    tripped_breaker: str
    limited_rule: str

    def scrape(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def metric_types(self) -> dict[str, str]:
        """Metric family name -> type, from the `# TYPE` lines of a scrape."""
        return dict(re.findall(r"^# TYPE (\S+) (\S+)$", self.scrape(), flags=re.MULTILINE))


@dataclass(frozen=True)
class PrometheusServer:
    url: str

    def query(self, promql: str) -> dict[str, Any]:
        """The API's answer to an instant query; a rejected query fails with the reason."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                answer: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as error:
            with error:
                raise AssertionError(f"{promql}: {error.code} {error.read().decode()}") from None
        return answer

    def wait_for_sample(self, promql: str, wanted: float) -> float:
        """Poll `promql` until one of its samples is >= `wanted`; returns that value."""
        end = time.monotonic() + QUERY_DEADLINE_S
        seen: list[Any] = []
        while time.monotonic() < end:
            seen = self.query(promql)["data"]["result"]
            for sample in seen:
                if float(sample["value"][1]) >= wanted:
                    return float(sample["value"][1])
            time.sleep(0.2)
        raise AssertionError(f"{promql} never reached {wanted} in {QUERY_DEADLINE_S}s: {seen}")
