"""CONTRACT 11 against the real sidecar: the access log explains each answer, W3C trace
context is kept or started, sampled requests reach a real OTLP receiver as spans, and the
added metrics are scraped."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.fault_upstream import FaultUpstream
from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import base_env, free_port, wait_http
from tests.support.tokens import bearer, token
from tests.tracing.otlp_receiver import OtlpReceiver, attributes

ACCESS_FIELDS = {
    "ts", "request_id", "trace_id", "client_ip", "method", "path", "route", "status",
    "duration_ms", "upstream", "attempts", "upstream_status", "upstream_ms", "user", "role",
    "bytes_in", "bytes_out", "reason", "rule",
}  # fmt: skip
VALID_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class SplitSidecar:
    """The real sidecar with stdout and stderr kept apart (the access log is stdout)."""

    def __init__(self, tmp_path: Path, upstream_url: str, **overrides: Any) -> None:
        self.port = free_port()
        config = write_policy(
            tmp_path / f"policy-{self.port}.yaml", make_policy(self.port, upstream_url, **overrides)
        )
        self.stdout_path = tmp_path / f"stdout-{self.port}.log"
        self.stderr_path = tmp_path / f"stderr-{self.port}.log"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "proxy", "run", "--config", str(config)],
                env=base_env(),
                stdout=out,
                stderr=err,
            )
        wait_http(f"{self.url}/healthz", proc=self.popen)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(20)

    def access_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines() if line]

    def stderr(self) -> str:
        return self.stderr_path.read_text()


@pytest.fixture
def split_sidecars(tmp_path: Path) -> Iterator[list[SplitSidecar]]:
    started: list[SplitSidecar] = []
    yield started
    for sidecar in started:
        sidecar.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    server = await OtlpReceiver().start()
    yield server
    await server.stop()


def _start(started: list[SplitSidecar], tmp_path: Path, url: str, **overrides: Any) -> SplitSidecar:
    sidecar = SplitSidecar(tmp_path, url, **overrides)
    started.append(sidecar)
    return sidecar


async def test_the_access_log_explains_each_answer_on_stdout(
    tmp_path: Path, upstream: FaultUpstream, split_sidecars: list[SplitSidecar]
) -> None:
    sidecar = _start(
        split_sidecars, tmp_path, upstream.url,
        server={"access_log": True},
        rate_limits={"endpoints": [
            {"name": "echo-rule", "path": "/echo/limited", "limit": "1/min"}]},
        upstreams={"inventory": {"circuit_breaker": {"failure_threshold": 1},
                                 "retry": {"max_attempts": 2, "base_delay": "10ms"}}},
    )  # fmt: skip
    secret = token("31", "viewer")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sidecar.url}/echo/ok?secret=query",
            data=b"x" * 100,
            headers={"Authorization": f"Bearer {secret}", "traceparent": VALID_PARENT},
        ) as resp:
            assert resp.status == 200
            ok_id = resp.headers["X-Request-Id"]
            sent_parent = (await resp.json())["headers"]["traceparent"]
        async with http.get(f"{sidecar.url}/echo/x", headers={"Authorization": "Bearer bad"}) as r:
            assert r.status == 401
        for expected in (200, 429):
            async with http.get(f"{sidecar.url}/echo/limited", headers=bearer("32")) as r:
                assert r.status == expected
        async with http.get(f"{sidecar.url}/status/503", headers=bearer("33")) as r:
            assert r.status == 503
        async with http.get(f"{sidecar.url}/echo/after", headers=bearer("33")) as r:
            assert r.status == 503 and (await r.json())["error"] == "circuit_open"
    sidecar.stop()
    lines = sidecar.access_lines()
    assert all(set(line) >= ACCESS_FIELDS for line in lines)
    assert all(line["logger"] == "proxy.access" for line in lines)
    assert '"proxy.access"' not in sidecar.stderr()
    by_path = {line["path"]: line for line in lines}
    ok = by_path["/echo/ok"]
    assert ok["request_id"] == ok_id
    assert ok["status"] == 200 and ok["reason"] is None and ok["rule"] is None
    assert ok["upstream"] == "inventory" and ok["attempts"] == 1
    assert ok["upstream_status"] == 200 and ok["upstream_ms"] > 0
    assert ok["user"] == "31" and ok["role"] == "viewer"
    assert ok["client_ip"] == "127.0.0.1" and ok["method"] == "POST"
    assert ok["bytes_in"] == 100 and ok["bytes_out"] > 100
    assert ok["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" == sent_parent.split("-")[1]
    bad = by_path["/echo/x"]
    assert (bad["status"], bad["reason"], bad["upstream"], bad["user"]) == (
        401, "invalid_token", None, None,
    )  # fmt: skip
    limited = [line for line in lines if line["path"] == "/echo/limited"]
    assert [(x["status"], x["reason"], x["rule"]) for x in limited] == [
        (200, None, None), (429, "rate_limited", "echo-rule"),
    ]  # fmt: skip
    failed = by_path["/status/503"]
    assert failed["status"] == 503 and failed["reason"] is None  # the app's own 503, relayed
    assert failed["upstream_status"] == 503 and failed["attempts"] == 1
    refused = by_path["/echo/after"]
    assert (refused["status"], refused["reason"], refused["attempts"]) == (503, "circuit_open", 0)
    output = sidecar.stdout_path.read_text() + sidecar.stderr()
    assert secret not in output and "secret=query" not in output


async def test_a_client_that_leaves_is_logged_as_499(
    tmp_path: Path, upstream: FaultUpstream, split_sidecars: list[SplitSidecar]
) -> None:
    sidecar = _start(split_sidecars, tmp_path, upstream.url, server={"access_log": True})
    _reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(b"GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    deadline = time.monotonic() + 5
    while not upstream.hits("/slow"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    writer.close()
    deadline = time.monotonic() + 10
    while not any(line["path"] == "/slow" for line in sidecar.access_lines()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    line = next(line for line in sidecar.access_lines() if line["path"] == "/slow")
    assert (line["status"], line["reason"]) == (499, "client_closed")


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        pytest.param({"traceparent": VALID_PARENT, "tracestate": "congo=t61rcWkgMzE"}, True,
                     id="valid-continued"),
        pytest.param({}, False, id="missing-started"),
        pytest.param({"traceparent": VALID_PARENT.upper(), "tracestate": "congo=1"}, False,
                     id="upper-case-replaced"),
        pytest.param({"traceparent": "ff" + VALID_PARENT[2:]}, False, id="version-ff-replaced"),
        pytest.param({"traceparent": "00-" + "0" * 32 + VALID_PARENT[35:]}, False,
                     id="zero-trace-replaced"),
        pytest.param({"traceparent": "x" * 10_000, "tracestate": "y" * 10_000}, False,
                     id="10kB-junk-replaced"),
        pytest.param({"traceparent": VALID_PARENT, "tracestate": "Bad=Key"}, True,
                     id="bad-tracestate-dropped"),
    ],
)  # fmt: skip
async def test_trace_context_is_kept_or_started_never_forwarded_malformed(
    upstream: FaultUpstream, sidecar: Any, incoming: dict[str, str], kept: bool
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/echo", headers=incoming) as resp:
            assert resp.status == 200
            got = (await resp.json())["headers"]
    parts = got["traceparent"].split("-")
    assert len(got["traceparent"]) == 55 and parts[0] == "00"
    assert parts[1] != "0" * 32 and parts[2] != "0" * 16
    assert got["traceparent"] == got["traceparent"].lower()
    if kept:
        assert parts[1] == VALID_PARENT.split("-")[1]
        assert parts[2] != VALID_PARENT.split("-")[2]  # the sidecar's span is the parent now
        assert parts[3] == "01"
    else:
        assert parts[1] != VALID_PARENT.split("-")[1].lower()
    valid_state = incoming.get("tracestate") == "congo=t61rcWkgMzE"
    assert got.get("tracestate") == ("congo=t61rcWkgMzE" if valid_state else None)


async def test_sampled_requests_become_spans_at_a_real_otlp_receiver(
    tmp_path: Path,
    upstream: FaultUpstream,
    receiver: OtlpReceiver,
    split_sidecars: list[SplitSidecar],
) -> None:
    sidecar = _start(
        split_sidecars, tmp_path, upstream.url,
        tracing={"otlp_endpoint": receiver.url, "sample_ratio": 1.0, "service_name": "side-t"},
        rate_limits={"endpoints": [{"name": "one", "path": "/echo/limited", "limit": "1/min"}]},
        upstreams={"inventory": {"retry": {"base_delay": "10ms"}}},
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/flaky?fail=1", headers={"X-Test-Key": "spans"}) as resp:
            assert resp.status == 200
        for _ in range(2):
            async with http.get(f"{sidecar.url}/echo/limited") as resp:
                pass
        assert resp.status == 429
    spans = await receiver.wait_spans(2 + 1 + 1 + 1)
    assert set(receiver.service_names) == {"side-t"}
    flaky = [s for s in upstream.seen if s.target.startswith("/flaky")]
    trace_id = flaky[0].headers["traceparent"].split("-")[1]
    in_trace = [s for s in spans if s.trace_id.hex() == trace_id]
    server = [s for s in in_trace if s.kind == 2]
    clients = sorted((s for s in in_trace if s.kind == 3), key=lambda s: s.start_time_unix_nano)
    assert len(server) == 1 and len(clients) == 2
    assert server[0].name == "GET inventory"
    server_attrs = attributes(server[0])
    assert server_attrs["http.request.method"] == "GET"
    assert server_attrs["url.path"] == "/flaky"
    assert server_attrs["http.route"] == "inventory"
    assert server_attrs["http.response.status_code"] == 200
    # Each attempt's client span id is the parent-id that attempt carried upstream.
    assert [c.span_id.hex() for c in clients] == [
        s.headers["traceparent"].split("-")[2] for s in flaky
    ]
    assert all(c.parent_span_id == server[0].span_id for c in clients)
    assert [attributes(c)["resilience.attempt"] for c in clients] == [1, 2]
    assert [attributes(c)["resilience.outcome"] for c in clients] == ["failure", "success"]
    refused = [s for s in spans if s.kind == 2 and any(e.name == "rate_limited" for e in s.events)]
    assert len(refused) == 1
    assert attributes(refused[0])["http.response.status_code"] == 429


async def test_a_collector_that_is_down_costs_spans_never_requests(
    tmp_path: Path, upstream: FaultUpstream, split_sidecars: list[SplitSidecar]
) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1/traces"
    sidecar = _start(
        split_sidecars, tmp_path, upstream.url,
        tracing={"otlp_endpoint": down, "sample_ratio": 1.0},
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for _ in range(20):
            async with http.get(f"{sidecar.url}/echo") as resp:
                assert resp.status == 200
        deadline = time.monotonic() + 10
        while True:
            async with http.get(f"{sidecar.url}/metrics") as resp:
                text = await resp.text()
            dropped = [
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("resilience_proxy_trace_spans_dropped_total")
            ]
            if dropped and dropped[0] >= 40:  # a server and a client span per request
                break
            assert time.monotonic() < deadline, dropped
            await asyncio.sleep(0.1)


async def test_the_added_metrics_are_scraped(upstream: FaultUpstream, sidecar: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/echo") as resp:
            assert resp.status == 200
        async with http.get(f"{sidecar.url}/metrics") as resp:
            text = await resp.text()
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "resilience_proxy_in_flight ",
        'resilience_proxy_upstream_duration_seconds_bucket{le="+Inf",outcome="success",'
        'upstream="inventory"} 1.0',
    ):
        assert name in text, name
    assert "trace_spans_dropped_total" not in text  # declared with an otlp_endpoint only
