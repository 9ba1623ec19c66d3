#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine: a venv with the
# project and its test extra, and redis-server (the tests start their own on a free port).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e ".[test]"
  touch "$stamp"
fi
if [ "${1:-}" = "--with-system" ]; then
  missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "please install: ${missing[*]}" >&2
      exit 1
    fi
  fi
fi
