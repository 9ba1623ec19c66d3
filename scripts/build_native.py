"""Compile the request path to C with mypyc: the same source, about half the CPU per request.

    .venv/bin/python scripts/build_native.py           # build when a source changed
    .venv/bin/python scripts/build_native.py --check   # exit 1 if missing or out of date
    .venv/bin/python scripts/build_native.py --clean   # back to interpreted modules

mypyc turns the type-annotated modules below into C extensions, placed next to their `.py`
files (Python then imports the extension). The sources stay the reference: every module
also runs interpreted, and a failed build (no C compiler) leaves the interpreted ones in
place. `build/native.stamp` fingerprints the sources, Python and mypy, so a stale extension
is rebuilt, and `--check` (run by the test suite) refuses one.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMP = REPO / "build" / "native.stamp"

MODULES = (
    "proxy/clock.py",
    "proxy/core/backoff.py",
    "proxy/core/breaker.py",
    "proxy/core/budget.py",
    "proxy/core/cors.py",
    "proxy/core/events.py",
    "proxy/core/header_rules.py",
    "proxy/core/headers.py",
    "proxy/core/identity.py",
    "proxy/core/outcomes.py",
    "proxy/core/paths.py",
    "proxy/core/routing.py",
    "proxy/core/token_cache.py",
    "proxy/core/tracecontext.py",
    "proxy/core/window.py",
    "proxy/metrics.py",
    "proxy/pipeline/chain.py",
    "proxy/pipeline/context.py",
    "proxy/pipeline/edges.py",
    "proxy/pipeline/forward.py",
    "proxy/pipeline/identity.py",
    "proxy/pipeline/observe.py",
    "proxy/pipeline/ratelimit.py",
    "proxy/pipeline/resilience.py",
    "proxy/pipeline/runtime.py",
    "proxy/pipeline/stages.py",
    "proxy/pipeline/state.py",
    "proxy/pipeline/tunnel.py",
    "proxy/server/flow.py",
    "proxy/server/framing.py",
    "proxy/server/http11.py",
    "proxy/server/own_routes.py",
    "proxy/server/request.py",
    "proxy/server/responses.py",
    "proxy/server/writer.py",
    "proxy/storage/base.py",
    "proxy/storage/batching.py",
    "proxy/storage/fallback.py",
    "proxy/storage/memory.py",
    "proxy/storage/redis.py",
    "proxy/storage/resp.py",
    "proxy/tracing/spans.py",
    "proxy/upstream/connection.py",
    "proxy/upstream/head.py",
    "proxy/upstream/pool.py",
)
"""What every forwarded request runs through (and what they import that is pure)."""


def fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update(f"{platform.python_version()} mypy {metadata.version('mypy')}\n".encode())
    for module in MODULES:
        digest.update(module.encode() + b"\0" + (REPO / module).read_bytes() + b"\0")
    return digest.hexdigest()


def _built(module: str) -> list[Path]:
    """The extension files built from `module` (none, or one per build of it)."""
    source = REPO / module
    return list(source.parent.glob(source.stem + ".*.so"))


def extensions() -> list[Path]:
    """The built files: one extension per module and mypyc's shared runtime library."""
    found = list(REPO.glob("*__mypyc.*.so"))
    for module in MODULES:
        found.extend(_built(module))
    return found


def is_current() -> bool:
    every_module = all(_built(module) for module in MODULES)
    return every_module and STAMP.exists() and STAMP.read_text().strip() == fingerprint()


def clean() -> None:
    for path in extensions():
        path.unlink()
    STAMP.unlink(missing_ok=True)


def build() -> bool:
    clean()
    result = subprocess.run(
        [sys.executable, "-m", "mypyc", *MODULES],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        print(result.stdout[-4000:] + result.stderr[-4000:], file=sys.stderr)
        clean()
        return False
    STAMP.parent.mkdir(exist_ok=True)
    STAMP.write_text(fingerprint() + "\n")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true")
    action.add_argument("--clean", action="store_true")
    args = parser.parse_args()
    if args.clean:
        clean()
        return 0
    if args.check:
        if is_current():
            return 0
        print("the compiled modules are missing or out of date: run scripts/build_native.py")
        return 1
    if is_current():
        return 0
    print(f"compiling {len(MODULES)} modules with mypyc (about a minute) ...", flush=True)
    if build():
        return 0
    print("mypyc failed: the sidecar runs interpreted (same behaviour, more CPU)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
