"""The Prometheus configuration and alert rules of deploy/prometheus are sound.

promtool accepts the rules and the config (whose relative rule_files entry resolves to the
rules file), and the unit tests in alerts_test.yml pass; every alert carries summary,
description and runbook annotations, and alerts_test.yml makes each alert fire in one case
and stay silent in another.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.deploykit import PrometheusTools
from tests.support.processes import REPO

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
REQUIRED_ANNOTATIONS = {"summary", "description", "runbook"}


def promtool(tools: PrometheusTools, *args: str) -> str:
    done = subprocess.run(
        [tools.promtool, *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    groups = load(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules(prometheus_tools: PrometheusTools) -> None:
    output = promtool(prometheus_tools, "check", "rules", "deploy/prometheus/alerts.yml")
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_promtool_accepts_the_config_and_finds_its_rules(
    prometheus_tools: PrometheusTools,
) -> None:
    output = promtool(prometheus_tools, "check", "config", "deploy/prometheus/prometheus.yml")
    assert "SUCCESS: 1 rule files found" in output
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_the_alert_unit_tests_pass(prometheus_tools: PrometheusTools) -> None:
    output = promtool(prometheus_tools, "test", "rules", "deploy/prometheus/alerts_test.yml")
    assert "SUCCESS" in output


def test_every_alert_explains_itself_and_has_a_runbook() -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        annotations = rule.get("annotations", {})
        missing = REQUIRED_ANNOTATIONS - {k for k, v in annotations.items() if v.strip()}
        assert not missing, f"{rule['alert']} lacks {sorted(missing)}"
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}


def test_every_alert_is_tested_firing_and_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for case in load(PROMETHEUS_DIR / "alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"
