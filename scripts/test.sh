#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then lint + tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --with-system
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy policies proxy scripts
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
