"""docker-compose.yml is a valid Compose file whose pieces fit together.

It validates against the Compose specification's JSON Schema (vendored: see SCHEMA_SOURCE),
which rejects a misspelt key. Every depends_on names a service, and service_healthy waits
only for services with a healthcheck; every mounted local file exists and every named volume
is declared. The sidecars run deploy/policies.compose.yaml, a valid policy on redis that
forwards to the upstream_app service; the app publishes to a sidecar on the policy's port;
Prometheus scrapes the sidecar services there and finds its rules where they are mounted;
Grafana's provisioning points at the prometheus service and the mounted dashboards; the
secrets come from the environment.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support.processes import REPO

# compose/config/compose_spec.json from the PyPI wheel of docker-compose 1.29.2
# (`pip download --no-deps docker-compose==1.29.2`: docker_compose-1.29.2-py2.py3-none-any.whl,
# sha256 8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809), copied unchanged.
SCHEMA_SOURCE = REPO / "tests" / "data" / "compose-spec.json"
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICES = {"upstream_app", "sidecar", "sidecar2", "redis", "prometheus", "grafana"}
SIDECARS = ("sidecar", "sidecar2")


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def validator() -> jsonschema.Draft201909Validator:
    # The schema names draft 2019-09 (as http://...#, which jsonschema does not recognise).
    return jsonschema.Draft201909Validator(json.loads(SCHEMA_SOURCE.read_text()))


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a path relative to the compose file, or a volume name)."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            found[target] = source
    return found


def flag(command: list[str], name: str) -> str:
    """The value after `name` in an exec-form command, or of `name=value`."""
    for i, arg in enumerate(command):
        if arg == name:
            return command[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {command}")


def compose_policy() -> dict[str, Any]:
    (source,) = {mounts(services()[name])["/app/policies.yaml"] for name in SIDECARS}
    doc: dict[str, Any] = yaml.safe_load((REPO / source).read_text())
    return doc


def listen_port() -> int:
    return int(compose_policy()["server"]["listen"].rsplit(":", 1)[1])


def admin_port() -> int:
    return int(compose_policy()["admin"]["listen"].rsplit(":", 1)[1])


def test_the_vendored_schema_is_the_published_one() -> None:
    assert hashlib.sha256(SCHEMA_SOURCE.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_the_compose_file_matches_the_compose_schema() -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(compose())]
    assert errors == []


def test_the_schema_check_rejects_a_misspelt_key() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["sidecar"]["healthcheck"]["intervall"] = "10s"
    assert not validator().is_valid(broken)


def test_dependencies_and_mounts_refer_to_what_exists() -> None:
    doc = compose()
    assert set(doc["services"]) == SERVICES
    for name, service in doc["services"].items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in doc["services"][dependency], dependency
        for source in mounts(service).values():
            if source.startswith((".", "/")):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in doc["volumes"], f"{name}: volume {source} is not declared"
        if "build" in service:
            assert (COMPOSE_FILE.parent / service["build"] / "Dockerfile").is_file()


def test_the_sidecars_run_the_valid_compose_policy_on_redis() -> None:
    found = services()
    policy_file = mounts(found["sidecar"])["/app/policies.yaml"]
    validated = subprocess.run(
        [sys.executable, "-m", "proxy", "validate", "--config", policy_file],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert validated.returncode == 0, validated.stderr
    policy = compose_policy()
    assert policy["server"]["listen"] == "0.0.0.0:8000"
    assert policy["storage"]["backend"] == "redis"
    assert urllib.parse.urlsplit(policy["storage"]["redis_url"]).hostname == "redis"
    app_port = int(flag(found["upstream_app"]["command"], "--port"))
    for upstream in policy["upstreams"].values():
        url = urllib.parse.urlsplit(upstream["url"])
        assert (url.hostname, url.port) == ("upstream_app", app_port)
    host_ports = set()
    for name in SIDECARS:
        sidecar = found[name]
        assert flag(sidecar["command"], "--config") == "/app/policies.yaml"
        assert f"127.0.0.1:{admin_port()}/readyz" in " ".join(sidecar["healthcheck"]["test"])
        published = [p.rsplit(":", 2)[-2:] for p in sidecar["ports"]]
        assert sorted(int(container) for _, container in published) == sorted(
            [listen_port(), admin_port()]
        )
        host_ports.update(host for host, _ in published)
    assert len(host_ports) == 2 * len(SIDECARS)
    assert policy["admin"]["listen"].startswith("0.0.0.0:")  # Prometheus comes over the network


def test_the_app_runs_as_documented_and_publishes_to_a_sidecar() -> None:
    command = services()["upstream_app"]["command"]
    assert command == [
        "python", "-m", "upstream_app", "--port", "8081", "--db", "/data/inventory.db",
        "--events-url", "http://sidecar:8000",
    ]  # fmt: skip
    events = urllib.parse.urlsplit(flag(command, "--events-url"))
    assert (events.hostname, events.port) == ("sidecar", listen_port())
    assert Path(flag(command, "--db")).parent.as_posix() in mounts(services()["upstream_app"])


def test_prometheus_scrapes_the_sidecars_and_loads_its_mounted_rules() -> None:
    prometheus = services()["prometheus"]
    volumes = mounts(prometheus)
    config_path = flag(prometheus["command"], "--config.file")
    config_source = COMPOSE_FILE.parent / volumes[config_path]
    config = yaml.safe_load(config_source.read_text())
    for rule_file in config["rule_files"]:
        in_container = (Path(config_path).parent / rule_file).as_posix()
        assert (COMPOSE_FILE.parent / volumes[in_container]).resolve() == (
            config_source.parent / rule_file
        ).resolve()
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert sorted(targets) == sorted(f"{name}:{admin_port()}" for name in SIDECARS)


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    grafana = services()["grafana"]
    volumes = mounts(grafana)
    provisioning = COMPOSE_FILE.parent / volumes["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    url = urllib.parse.urlsplit(datasource["url"])
    assert url.hostname == "prometheus"
    assert f"127.0.0.1:{url.port}/" in " ".join(services()["prometheus"]["healthcheck"]["test"])
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "resilience-sidecar.yml").read_text()
    )["providers"]
    dashboards_dir = provider["options"]["path"]
    dashboards = COMPOSE_FILE.parent / volumes[dashboards_dir]
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent.as_posix() == dashboards_dir
    assert (dashboards / home.name).is_file()


def test_secrets_come_from_the_environment() -> None:
    required = ("JWT_SECRET", "PROXY_EVENTS_TOKEN", "GF_SECURITY_ADMIN_PASSWORD")
    seen = set()
    for service in services().values():
        for key, value in service.get("environment", {}).items():
            if key in required:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), f"{key}={value}"
                seen.add(key)
    assert seen == set(required)
    app_env = services()["upstream_app"]["environment"]
    assert app_env["UPSTREAM_SEED_PASSWORD"] == "${UPSTREAM_SEED_PASSWORD:-}"
