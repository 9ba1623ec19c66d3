"""deploy/kubernetes/: the kustomization, rendered here (no kubectl on this machine) the way
`kustomize build` does for the features it uses (resources, a configMapGenerator without
hash suffix, labels, images), then checked offline against the Kubernetes schemas with
`kubernetes-validate` and against what the sidecar needs: its policy, ports and probes."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from policies.load import load_policy_text
from tests.support.processes import REPO

KUSTOMIZE_DIR = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
Doc = dict[str, Any]


def render(directory: Path = KUSTOMIZE_DIR) -> list[Doc]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    supported = {"apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions",
                 "labels", "images"}  # fmt: skip
    assert set(kustomization) <= supported, set(kustomization) - supported
    docs: list[Doc] = []
    for resource in kustomization.get("resources", []):
        docs += [d for d in yaml.safe_load_all((directory / resource).read_text()) if d]
    assert kustomization.get("generatorOptions", {}).get("disableNameSuffixHash") is True
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, path = entry.rpartition("=") if "=" in entry else (entry, "", entry)
            data[Path(key).name] = (directory / path).read_text()
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": generator["name"]}, "data": data})  # fmt: skip
    for group in kustomization.get("labels", []):
        assert group.get("includeSelectors") is False
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(group["pairs"])
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in containers(doc):
                if container["image"] == image["name"]:
                    container["image"] = f"{image['name']}:{image['newTag']}"
    return docs


def containers(doc: Doc) -> list[Doc]:
    if doc["kind"] != "Deployment":
        return []
    found: list[Doc] = doc["spec"]["template"]["spec"]["containers"]
    return found


def one(docs: list[Doc], kind: str) -> Doc:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return render()


def test_every_resource_passes_the_kubernetes_schema(docs: list[Doc]) -> None:
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(copy.deepcopy(doc), KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_mistake(docs: list[Doc]) -> None:
    broken = copy.deepcopy(one(docs, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_app_and_the_sidecar_share_one_pod(docs: list[Doc]) -> None:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["sidecar", "app"]
    assert all(c["image"] == "resilience-sidecar:local" for c in pod["containers"])
    sidecar, app = pod["containers"]
    assert sidecar["command"][:4] == ["python", "-m", "proxy", "run"]
    assert app["command"][:3] == ["python", "-m", "upstream_app"]
    assert app["command"][app["command"].index("--host") + 1] == "127.0.0.1"


def test_hardening_non_root_read_only_resources(docs: list[Doc]) -> None:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["limits"]["memory"]
        assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"


def test_secrets_are_referenced_never_shipped(docs: list[Doc]) -> None:
    assert not [d for d in docs if d["kind"] == "Secret"]
    sidecar = containers(one(docs, "Deployment"))[0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in sidecar["env"]}
    assert refs == {"JWT_SECRET": "resilience-sidecar", "PROXY_EVENTS_TOKEN": "resilience-sidecar",
                    "PROXY_ADMIN_TOKEN": "resilience-sidecar"}  # fmt: skip


def test_probes_are_on_the_admin_listener_of_the_mounted_policy(docs: list[Doc]) -> None:
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    sidecar = pod["containers"][0]
    (mount,) = [m for m in sidecar["volumeMounts"] if m["name"] == "policy"]
    assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates
    config = sidecar["command"][sidecar["command"].index("--config") + 1]
    assert Path(config).parent == Path(mount["mountPath"])
    (volume,) = [v for v in pod["volumes"] if v["name"] == "policy"]
    config_map = one(docs, "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    policy = load_policy_text(config_map["data"][Path(config).name], "policies.yaml").policy
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert policy.admin.listen is not None
    assert ports == {"http": policy.server.port, "admin": policy.admin.port}
    assert policy.admin.token_env == "PROXY_ADMIN_TOKEN"
    for probe, path in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")]:  # fmt: skip
        assert sidecar[probe]["httpGet"] == {"path": path, "port": "admin"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(policy.admin.port)
    assert annotations["prometheus.io/path"] == policy.admin.metrics_path
    # The preStop pause and the drain fit in the grace period.
    pause = int(sidecar["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pause + policy.server.drain_timeout


def test_the_service_exposes_the_data_port_only(docs: list[Doc]) -> None:
    service = one(docs, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_mounted_policy_passes_strict_validate(tmp_path: Path, docs: list[Doc]) -> None:
    config_map = one(docs, "ConfigMap")
    (tmp_path / "policies.yaml").write_text(config_map["data"]["policies.yaml"])
    env = {"JWT_SECRET": "k" * 64, "PROXY_EVENTS_TOKEN": "e", "PROXY_ADMIN_TOKEN": "a",
           "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "validate", "--strict", "--config", "policies.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
