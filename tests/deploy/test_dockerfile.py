"""The Dockerfile lints clean and the commands it runs work (no Docker engine needed).

hadolint reports nothing at level warning or above. .dockerignore lets through every file
the Dockerfile COPYs (caches and compiled extensions aside) and keeps the rest of the
repository out. A fresh venv gets `pip install` of that build context (the COPY sources
as .dockerignore filters them); from a directory holding only policies.yaml (as /app in
the image), the installed package (not the repository's source) validates the shipped
policy and both entrypoints answer --help. The image's CMD runs the sidecar on
/app/policies.yaml as a non-root user, and its HEALTHCHECK command, run from that venv,
passes against a live sidecar and fails where nothing listens.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.deploykit import ObservedSidecar
from tests.support.processes import REPO, free_port

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"
INSTALL_TIMEOUT_S = 180


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined."""
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD (also after HEALTHCHECK's options)."""
    command: list[str] = json.loads(arguments[arguments.index("[") :])
    return command


def ignored_by_dockerignore(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            ignored = not keep
    return ignored


def copied_sources() -> list[str]:
    sources = []
    for word, arguments in instructions():
        if word == "COPY":
            parts = [p for p in arguments.split() if not p.startswith("--")]
            sources += parts[:-1]
    return sources


def context_files() -> list[str]:
    """The files under the COPY sources that the build context (.dockerignore) sends."""
    found = []
    for source in copied_sources():
        origin = REPO / source
        paths = [origin] if origin.is_file() else sorted(origin.rglob("*"))
        for path in paths:
            relative = path.relative_to(REPO).as_posix()
            if path.is_file() and not ignored_by_dockerignore(relative):
                found.append(relative)
    return found


class ImageVenv:
    def __init__(self, root: Path, app_dir: Path) -> None:
        self.python = str(root / "bin" / "python")
        self.app_dir = app_dir

    def run(self, command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        """`command` as the image runs it: its `python` is the venv's, cwd is /app."""
        assert command[0] == "python"
        return subprocess.run(
            [self.python, *command[1:]],
            cwd=self.app_dir,
            env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> ImageVenv:
    """A fresh venv with the project installed from the Dockerfile's build context."""
    work = tmp_path_factory.mktemp("image")
    context = work / "context"
    for path in context_files():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, context / path)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(context)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    app_dir = work / "app"
    app_dir.mkdir()
    shutil.copy2(context / "policies.yaml", app_dir / "policies.yaml")
    return ImageVenv(venv, app_dir)


def test_hadolint_finds_no_warning_or_error() -> None:
    linted = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_dockerignore_sends_what_the_image_copies_and_nothing_else() -> None:
    sent = set(context_files())
    for source in copied_sources():
        origin = REPO / source
        paths = [origin] if origin.is_file() else origin.rglob("*")
        for path in paths:
            relative = path.relative_to(REPO).as_posix()
            # Caches and this machine's compiled extensions (scripts/build_native.py).
            cache = "__pycache__" in path.parts or path.suffix in (".pyc", ".so")
            if path.is_file():
                assert (relative in sent) != cache, relative
    assert "proxy/storage/lua" in {Path(p).parent.as_posix() for p in sent}
    for outside in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/deploy/conftest.py",
        "deploy/policies.compose.yaml",
        "proxy/__pycache__/app.cpython-311.pyc",
        "proxy/server/http11.cpython-311-x86_64-linux-gnu.so",
    ):
        assert ignored_by_dockerignore(outside), outside


def test_the_image_runs_the_sidecar_by_default_as_a_non_root_user() -> None:
    (cmd,) = [exec_form(args) for word, args in instructions() if word == "CMD"]
    assert cmd == ["python", "-m", "proxy", "run", "--config", "/app/policies.yaml"]
    users = [args for word, args in instructions() if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}


def test_the_installed_entrypoints_work(image_venv: ImageVenv) -> None:
    where = image_venv.run(["python", "-c", "import proxy, upstream_app; print(proxy.__file__)"])
    assert "/site-packages/proxy/" in where.stdout, where.stdout + where.stderr
    validated = image_venv.run(["python", "-m", "proxy", "validate", "--config", "policies.yaml"])
    assert validated.returncode == 0, validated.stderr
    assert "policies.yaml: valid" in validated.stdout
    for module in ("proxy", "upstream_app"):
        helped = image_venv.run(["python", "-m", module, "--help"])
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.startswith(f"usage: python -m {module}")


def test_the_healthcheck_tells_a_live_sidecar_from_a_dead_port(
    image_venv: ImageVenv, observed_sidecar: ObservedSidecar
) -> None:
    (healthcheck,) = [exec_form(args) for word, args in instructions() if word == "HEALTHCHECK"]
    live = image_venv.run(healthcheck, HEALTH_PORT=str(observed_sidecar.port))
    assert live.returncode == 0, live.stderr
    dead = image_venv.run(healthcheck, HEALTH_PORT=str(free_port()))
    assert dead.returncode != 0


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage, in order (a stage starts at its FROM)."""
    found: list[list[tuple[str, str]]] = []
    for word, arguments in instructions():
        if word == "FROM":
            found.append([])
        found[-1].append((word, arguments))
    return found


def test_a_build_stage_compiles_the_request_path_and_refuses_a_stale_build() -> None:
    build, _runtime = stages()
    assert re.fullmatch(r"python:3\.11-slim AS build", build[0][1], re.IGNORECASE)
    runs = " ".join(" && ".join(arguments for word, arguments in build if word == "RUN").split())
    assert re.search(r"apt-get install [^&]*\bgcc\b", runs), "no C compiler in the build stage"
    assert re.search(r"python scripts/build_native\.py &&", runs)
    assert "python scripts/build_native.py --check" in runs  # a failed build fails the image
    assert "scripts/build_native.py" in copied_sources()
    # The compiled modules land next to the installed ones, and are the ones imported.
    assert "__mypyc" in runs and "find proxy -name '*.so'" in runs
    assert "python -I -c" in runs and "c.__file__.endswith('.so')" in runs


def test_the_runtime_stage_carries_the_compiled_venv_and_no_compiler() -> None:
    build, runtime = stages()
    assert runtime[0][1] == build[0][1].split()[0]  # the same Python as the build stage
    copies = [arguments for word, arguments in runtime if word == "COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies
    runtime_runs = " ".join(arguments for word, arguments in runtime if word == "RUN")
    assert "gcc" not in runtime_runs and "pip install" not in runtime_runs
    env = " ".join(arguments for word, arguments in runtime if word == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env


def test_every_module_build_native_compiles_is_in_the_build_context() -> None:
    from scripts.build_native import MODULES

    sent = set(context_files())
    assert set(MODULES) <= sent
