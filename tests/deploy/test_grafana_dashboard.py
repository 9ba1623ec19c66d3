"""The Grafana dashboard charts metrics the sidecar really exports, with valid PromQL.

Every `resilience_proxy_*` name in the dashboard's queries (histogram `_bucket`/`_sum`/
`_count` series mapped to their family) is a family in the `# TYPE` lines of a real scrape
of the running sidecar; every panel query, with Grafana's variables filled in, is accepted
by a real Prometheus; every panel reads from the `datasource` variable; and the panels the
dashboard promises (traffic, latency, 429s, breakers, retries, attempts, WebSockets, events,
slow consumers, reloads, storage fallback, attempt latency, in flight) are there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tests.deploy.deploykit import ObservedSidecar, PrometheusServer
from tests.support.processes import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "resilience-sidecar.json"
METRIC = re.compile(r"\bresilience_proxy_[a-z0-9_]+")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# What Grafana puts in place of the variables when it runs a query.
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
CHARTED = {
    "resilience_proxy_requests_total",
    "resilience_proxy_request_duration_seconds",
    "resilience_proxy_rate_limit_decisions_total",
    "resilience_proxy_circuit_breaker_state",
    "resilience_proxy_retries_total",
    "resilience_proxy_retry_budget_exhausted_total",
    "resilience_proxy_upstream_attempts_total",
    "resilience_proxy_websocket_connections",
    "resilience_proxy_events_published_total",
    "resilience_proxy_events_delivered_total",
    "resilience_proxy_websocket_slow_consumer_disconnects_total",
    "resilience_proxy_policy_reloads_total",
    "resilience_proxy_storage_fallback_active",
    "resilience_proxy_upstream_duration_seconds",
    "resilience_proxy_in_flight",
}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def expressions() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel.get("targets", [])]


def variable_queries() -> list[str]:
    found = []
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        found.append(query["query"] if isinstance(query, dict) else str(query))
    return found


def family(name: str, types: dict[str, str]) -> str:
    for suffix in HISTOGRAM_SERIES:
        base = name.removesuffix(suffix)
        if base != name and types.get(base) == "histogram":
            return base
    return name


def test_every_charted_metric_is_in_a_real_scrape(observed_sidecar: ObservedSidecar) -> None:
    types = observed_sidecar.metric_types()
    used = {m for text in expressions() + variable_queries() for m in METRIC.findall(text)}
    families = {family(name, types) for name in used}
    assert families - types.keys() == set(), "charted but not exported"
    assert CHARTED - families == set(), "promised panels missing"


def test_every_panel_query_is_valid_promql(prometheus_server: PrometheusServer) -> None:
    for expr in expressions():
        query = expr
        for variable, value in VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"unknown variable in {expr}"
        assert prometheus_server.query(query)["status"] == "success", expr


def test_every_panel_reads_the_datasource_variable() -> None:
    doc = dashboard()
    assert doc["schemaVersion"] >= 39
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = []
    for panel in panels():
        ids.append(panel["id"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for source in [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]:
            assert source == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    assert len(ids) == len(set(ids)), "panel ids repeat"
