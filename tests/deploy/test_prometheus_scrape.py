"""A real scrape of the real sidecar is clean and usable by Prometheus.

After one rate-limited request and one tripped breaker: `promtool check metrics` finds no
error and no lint problem in the /metrics body; Debian's prometheus, scraping the sidecar
every second, answers queries for the limited decision and the open breaker; and the
CircuitBreakerOpen rule of deploy/prometheus/alerts.yml matches the real series (pending:
its `for: 1m` has not passed).
"""

from __future__ import annotations

import subprocess

from tests.deploy.deploykit import ObservedSidecar, PrometheusServer, PrometheusTools


def test_the_scrape_passes_promtool_check_metrics(
    prometheus_tools: PrometheusTools, observed_sidecar: ObservedSidecar
) -> None:
    body = observed_sidecar.scrape()
    limited = (
        "resilience_proxy_rate_limit_decisions_total"
        f'{{decision="limited",rule="{observed_sidecar.limited_rule}"}} 1.0'
    )
    opened = (
        "resilience_proxy_circuit_breaker_state"
        f'{{breaker="{observed_sidecar.tripped_breaker}",state="open"}} 1.0'
    )
    assert limited in body.splitlines()
    assert opened in body.splitlines()
    checked = subprocess.run(
        [prometheus_tools.promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == "", "promtool lint problems in the scrape"


def test_prometheus_sees_the_limited_request_and_the_open_breaker(
    prometheus_server: PrometheusServer, observed_sidecar: ObservedSidecar
) -> None:
    limited = prometheus_server.wait_for_sample(
        'resilience_proxy_rate_limit_decisions_total{decision="limited",'
        f'rule="{observed_sidecar.limited_rule}"}}',
        wanted=1,
    )
    assert limited == 1
    opened = prometheus_server.wait_for_sample(
        "resilience_proxy_circuit_breaker_state"
        f'{{breaker="{observed_sidecar.tripped_breaker}",state="open"}}',
        wanted=1,
    )
    assert opened == 1
    closed = prometheus_server.query(
        "resilience_proxy_circuit_breaker_state"
        f'{{breaker="{observed_sidecar.tripped_breaker}",state="closed"}}'
    )["data"]["result"]
    assert [float(sample["value"][1]) for sample in closed] == [0.0]


def test_the_breaker_alert_rule_matches_the_real_series(
    prometheus_server: PrometheusServer, observed_sidecar: ObservedSidecar
) -> None:
    pending = prometheus_server.wait_for_sample(
        'ALERTS{alertname="CircuitBreakerOpen",alertstate="pending",'
        f'breaker="{observed_sidecar.tripped_breaker}",state="open"}}',
        wanted=1,
    )
    assert pending == 1
    others = prometheus_server.query(
        f'ALERTS{{alertname="CircuitBreakerOpen",breaker!="{observed_sidecar.tripped_breaker}"}}'
    )["data"]["result"]
    assert others == []
