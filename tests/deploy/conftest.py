"""Fixtures for the deployment tests.

- `prometheus_tools`: promtool and prometheus, installed from Debian's `prometheus` package
  when missing (the CI machine is fresh and runs as root); a failed install fails the tests,
  it never skips them.
- `observed_sidecar`: the real sidecar process after traffic that rate-limits one request
  and opens one breaker (session-wide: every test here reads the same sidecar).
- `prometheus_server`: Debian's prometheus scraping that sidecar every second and evaluating
  deploy/prometheus/alerts.yml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml

from tests.deploy.deploykit import (
    ObservedSidecar,
    PrometheusServer,
    PrometheusTools,
    ThreadedUpstream,
    status_of,
    wait_ready,
)
from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import REPO, Process, base_env, free_port, start_sidecar
from tests.support.tokens import bearer

INSTALL_TIMEOUT_S = 600


def _installed_tools() -> PrometheusTools | None:
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if promtool is None or prometheus is None:
        return None
    return PrometheusTools(promtool, prometheus)


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    tools = _installed_tools()
    if tools is not None:
        return tools
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
    ):
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
        )
        if done.returncode != 0:
            pytest.fail(
                f"installing promtool/prometheus failed: {' '.join(command)} exited "
                f"{done.returncode}\n{done.stdout}\n{done.stderr}"
            )
    tools = _installed_tools()
    if tools is None:
        pytest.fail("the prometheus package installed no promtool/prometheus on PATH")
    return tools


@pytest.fixture(scope="session")
def observed_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedSidecar]:
    """The sidecar after 2 anonymous requests (limit 1/min) and 2 calls to a dead upstream."""
    upstream = ThreadedUpstream()
    port = free_port()
    dead_port = free_port()  # nothing listens there: every attempt is a connect failure
    policy = make_policy(
        port,
        upstream.server.url,
        rate_limits={"roles": {"anonymous": "1/min"}},
        upstreams={
            "external_api": {
                "url": f"http://127.0.0.1:{dead_port}",
                "retry": {"max_attempts": 1},
                "circuit_breaker": {"failure_threshold": 1, "recovery_timeout": "1h"},
            }
        },
    )
    config = write_policy(tmp_path_factory.mktemp("sidecar") / "policy.yaml", policy)
    try:
        proc = start_sidecar(config, port)
    except Exception:
        upstream.stop()
        raise
    sidecar = ObservedSidecar(
        f"http://127.0.0.1:{port}",
        port,
        tripped_breaker="external_api",
        limited_rule="role:anonymous",
    )
    try:
        assert status_of(f"{sidecar.url}/echo") == 200
        assert status_of(f"{sidecar.url}/echo") == 429
        admin = bearer(sub="1", role="admin")
        assert status_of(f"{sidecar.url}/egress/external/x", admin) == 502  # opens it
        assert status_of(f"{sidecar.url}/egress/external/x", admin) == 503  # circuit_open
        yield sidecar
    finally:
        proc.stop()
        upstream.stop()


@pytest.fixture(scope="session")
def prometheus_server(
    prometheus_tools: PrometheusTools,
    observed_sidecar: ObservedSidecar,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusServer]:
    workdir = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(REPO / "deploy" / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "resilience-sidecar",
                "static_configs": [{"targets": [f"127.0.0.1:{observed_sidecar.port}"]}],
            }
        ],
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = Process(
        [
            prometheus_tools.prometheus,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        base_env(),
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/-/ready", proc.popen, deadline_s=30)
    except Exception:
        print(proc.output(), file=sys.stderr)
        proc.stop()
        raise
    try:
        yield PrometheusServer(url)
    finally:
        proc.stop()
