"""bench/soak.py's parts that need no Locust: arguments, the RSS/fd sampler, the table, the
derived policy, the reading of Locust's CSV and the WebSocket listeners (against a real
sidecar); Locust loads the locustfile when it is installed (the bench extra, not CI's).
Wall time about 10 s on a loaded 2-core box (5 s more with Locust installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from bench.soak import (
    LISTENERS,
    LOCUSTFILE,
    Sample,
    format_table,
    locust_totals,
    parse_args,
    sample,
    scale_rate,
    soak_policy,
    table_rows,
)
from policies.load import load_policy_text
from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import EVENTS_TOKEN, REPO, free_port, start_sidecar
from tests.support.tokens import bearer


def test_minutes_is_required_and_bounded() -> None:
    args = parse_args(["--minutes", "30"])
    assert (args.minutes, args.users, args.sample_seconds) == (30.0, 20, 30.0)
    for bad in (["--minutes", "0"], ["--minutes", "1", "--users", "501"], []):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_sample_sums_rss_and_fds_over_the_processes(tmp_path: Path) -> None:
    for pid, rss_kib, fds in ((11, 2048, 3), (12, 1024, 2)):
        (tmp_path / str(pid) / "fd").mkdir(parents=True)
        (tmp_path / str(pid) / "status").write_text(f"Name:\tx\nVmRSS:\t{rss_kib} kB\nThreads: 1\n")
        for fd in range(fds):
            (tmp_path / str(pid) / "fd" / str(fd)).touch()
    assert sample([11, 12], 60.0, proc=tmp_path) == Sample(60.0, 3.0, 5)


def test_sample_reads_a_live_process() -> None:
    own = sample([os.getpid()], 0.0)
    assert own.rss_mib > 1 and own.fds >= 3


def test_table_keeps_start_every_five_minutes_and_end() -> None:
    samples = [Sample(t, 50 + t / 300, 20) for t in range(0, 1831, 30)]  # 30.5 min
    rows = table_rows(samples)
    assert [r.elapsed_s for r in rows] == [0, 300, 600, 900, 1200, 1500, 1800, 1830]
    uneven = [Sample(0, 1, 1), Sample(290, 1, 1), Sample(310, 1, 1), Sample(650, 1, 1)]
    assert [r.elapsed_s for r in table_rows(uneven)] == [0, 310, 650]
    text = format_table(samples)
    assert "| 0.0 | 50.0 | +0.0 | 20 |" in text and "| 30.0 | 56.0 | +6.0 | 20 |" in text


def test_soak_policy_is_the_demo_policy_on_free_ports_with_scaled_limits() -> None:
    demo = yaml.safe_load((REPO / "policies.yaml").read_text())
    ports = {"sidecar": 18000, "admin": 19901, "app": 18081, "email": 18025}
    policy = load_policy_text(yaml.safe_dump(soak_policy(demo, ports, 20)), "soak").policy
    assert (policy.server.port, policy.admin.port) == (18000, 19901)
    assert policy.storage.backend == "memory"
    assert str(policy.rate_limits.roles["vendedor"]) == "2000/min"
    assert [str(r.limit) for r in policy.rate_limits.endpoints] == ["100/min", "60/5min", "200/min"]
    assert demo["rate_limits"]["roles"]["vendedor"] == "100/min"  # the demo's is not changed
    assert scale_rate("3/5min", 2) == "6/5min"
    with pytest.raises(ValueError):
        scale_rate("min", 2)


def test_locust_totals_reads_the_aggregated_row(tmp_path: Path) -> None:
    head = "Type,Name,Request Count,Failure Count,Requests/s,50%,99%\n"
    rows = "GET,/api/v1/productos,900,1,3.0,12,80\n,Aggregated,1200,4,4.2,13,95\n"
    (tmp_path / "stats.csv").write_text(head + rows)
    assert locust_totals(tmp_path / "stats.csv") == {
        "requests": 1200, "failures": 4, "rps": 4.2, "p50_ms": 13.0, "p99_ms": 95.0,
    }  # fmt: skip


def wait_for_connections(port: int, count: int) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/ws/connections", headers=bearer("1", "admin")
    )
    for _ in range(100):
        with urllib.request.urlopen(request, timeout=5) as resp:
            if json.load(resp)["total"] == count:
                return
        time.sleep(0.02)
    raise TimeoutError(f"{count} WebSockets not connected")


def test_listeners_count_what_the_hub_sends(tmp_path: Path) -> None:
    port = free_port()
    config = write_policy(tmp_path / "policy.yaml", make_policy(port, "http://127.0.0.1:9"))
    sidecar = start_sidecar(config, port)
    try:
        listeners = subprocess.Popen(
            [sys.executable, str(LISTENERS), "--port", str(port), "--count", "2",
             "--seconds", "2"],
            stdout=subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        wait_for_connections(port, 2)
        alert = {"type": "alert", "alert_type": "stock_bajo", "severity": "warning",
                 "title": "t", "message": "m", "data": {}}  # fmt: skip
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/events", data=json.dumps(alert).encode(),
            headers={"Authorization": f"Bearer {EVENTS_TOKEN}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=5).close()
        out, _ = listeners.communicate(timeout=15)
    finally:
        sidecar.stop()
    counts = json.loads(out)
    assert counts["welcome"] == 2 and counts["alert"] == 2  # one on each channel
    assert "reconnects" not in counts


def test_locust_loads_the_locustfile() -> None:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent))
    if locust is None:
        pytest.skip("Locust is in the bench extra, not the test one")
    listed = subprocess.run(
        [locust, "-f", str(LOCUSTFILE), "--list"], capture_output=True, text=True, timeout=60
    )  # Locust patches sockets with gevent: never imported into the test process
    assert listed.returncode == 0, listed.stderr
    assert "Shopper" in listed.stdout
