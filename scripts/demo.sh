#!/usr/bin/env bash
# The demo: the inventory app on :8081 behind the sidecar on :8000 (memory storage).
# Secrets are generated when unset and printed once. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
gen() { .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))'; }
export JWT_SECRET="${JWT_SECRET:-$(gen)}"
export PROXY_EVENTS_TOKEN="${PROXY_EVENTS_TOKEN:-$(gen)}"
export UPSTREAM_SEED_PASSWORD="${UPSTREAM_SEED_PASSWORD:-demo-$(gen | cut -c1-8)}"
mkdir -p .demo
cat <<INFO
JWT_SECRET=$JWT_SECRET
PROXY_EVENTS_TOKEN=$PROXY_EVENTS_TOKEN
UPSTREAM_SEED_PASSWORD=$UPSTREAM_SEED_PASSWORD   (users: admin, vendedor, viewer; first start only)
inventory app: http://127.0.0.1:8081   sidecar: http://127.0.0.1:8000
INFO
.venv/bin/python -m upstream_app --port 8081 --host 127.0.0.1 --db .demo/inventory.db \
  --events-url http://127.0.0.1:8000 &
app=$!
.venv/bin/python -m proxy run --config policies.yaml &
sidecar=$!
stop() { kill -TERM "$sidecar" "$app" 2>/dev/null || true; wait "$sidecar" "$app" 2>/dev/null || true; }
trap 'stop; exit 0' INT TERM
wait -n "$app" "$sidecar" || true
stop
