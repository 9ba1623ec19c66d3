#!/usr/bin/env bash
# The demo: the inventory app on :8081 behind the sidecar on :8000 (memory storage), and a
# receiver on :8025 that prints the alerts the policy's email_service sink sends.
# Secrets are generated when unset and printed once. Ctrl-C stops everything.
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
inventory app: http://127.0.0.1:8081   sidecar: http://127.0.0.1:8000   email_service: :8025
sidecar's own endpoints (health, metrics, admin API, console): http://127.0.0.1:9901
INFO
pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap 'stop; exit 0' INT TERM
.venv/bin/python scripts/email_receiver.py 8025 &
pids+=($!)
# The sidecar first, so the app's first alerts find it listening (had it not, they would
# wait in the app's outbox and arrive a moment later: none is lost either way).
.venv/bin/python -m proxy run --config policies.yaml &
pids+=($!)
healthy() {  # on the admin listener (policies.yaml: admin.listen)
  .venv/bin/python -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:9901/healthz")' \
    2>/dev/null
}
for _ in $(seq 100); do  # at most about 10 s (mypyc-compiled start is well under 1 s)
  healthy && break
  kill -0 "${pids[1]}" 2>/dev/null || break
  sleep 0.1
done
.venv/bin/python -m upstream_app --port 8081 --host 127.0.0.1 --db .demo/inventory.db \
  --events-url http://127.0.0.1:8000 &
pids+=($!)
wait -n "${pids[@]}" || true
stop
