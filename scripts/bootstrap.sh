#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine: a venv with the
# project and its test extra, a C compiler when missing and the request path compiled with
# mypyc (scripts/build_native.py); with --with-system also redis-server (the tests start
# their own on a free port) and chromium + chromium-driver (the console's browser tests).
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
missing=()
if [ "${1:-}" = "--with-system" ]; then
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)  # redis-cli --cluster create
  # the console's browser tests drive Debian's Chromium through its chromedriver
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
fi
command -v cc >/dev/null || missing+=(gcc)
include=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$include/Python.h" ] || missing+=(python3-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "please install: ${missing[*]}" >&2
    if [ "${1:-}" = "--with-system" ]; then exit 1; fi
  fi
fi
# Without a C compiler the sidecar still runs, interpreted (the script says so).
.venv/bin/python scripts/build_native.py || true
