#!/usr/bin/env bash
# Builds and starts the demo: the demo shop backend on 127.0.0.1:3000 and
# sidecache in front of it on :8080 (memory tier, no Redis needed), with
# config/demo.yaml and an admin token made for this run (printed below), so
# the purge API can be tried. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins
work=$(mktemp -d)
./target/release/demo-backend --listen 127.0.0.1:3000 --delay-ms "${DEMO_DELAY_MS:-50}" &
backend=$!
trap 'kill $backend 2>/dev/null || true; rm -rf "$work"' EXIT

# The demo config with an admin token, which sidecache reads from the
# environment (config/demo.yaml itself has none, so `check` and `explain`
# need nothing set).
SIDECACHE_ADMIN_TOKEN=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
export SIDECACHE_ADMIN_TOKEN
sed 's#^  listen: 127.0.0.1:9901$#&\n  token: "${SIDECACHE_ADMIN_TOKEN}"#' config/demo.yaml > "$work/demo.yaml"
grep -q 'token: "${SIDECACHE_ADMIN_TOKEN}"' "$work/demo.yaml" || { echo "demo.sh: admin listen line not found in config/demo.yaml" >&2; exit 1; }
token=$SIDECACHE_ADMIN_TOKEN

cat <<MSG

  sidecache demo
    proxy        http://127.0.0.1:8080   (backend: http://127.0.0.1:3000, ${DEMO_DELAY_MS:-50} ms per GET)
    admin        http://127.0.0.1:9901/   (dashboard)   /readyz   /rules
    admin token  $token   (made for this run)

  Try (run each twice: the second answer is a cache hit, see Cache-Status and X-Backend-Request):
    curl -si http://127.0.0.1:8080/products/42 | grep -iE '^(cache-status|age|x-backend-request)'
    curl -si 'http://127.0.0.1:8080/categories/3/products?page=1' | grep -iE '^(cache-status|age)'
    curl -si -b session_id=demo http://127.0.0.1:8080/session | grep -i cache-status
    curl -si http://127.0.0.1:8080/inventory/42 | grep -i cache-status      # never cached
    ./target/release/sidecache explain --config config/demo.yaml GET /products/42

  Invalidation: a write purges what it made stale, before its answer reaches you:
    curl -s -X PUT -H 'content-type: application/json' -d '{"price": 9.99}' http://127.0.0.1:8080/products/42
    curl -si http://127.0.0.1:8080/products/42 | grep -iE '^(cache-status|x-backend-request)'   # a miss, the new price
  A tag purge through the admin API (every listing of category 3):
    curl -s -X POST -H 'Authorization: Bearer $token' -d '{"tags": ["category:3"]}' http://127.0.0.1:9901/purge
    curl -s -H 'Authorization: Bearer $token' http://127.0.0.1:9901/purges      # what was purged, newest first
  What the cache saved the backend so far, per rule:
    ./target/release/sidecache report --admin http://127.0.0.1:9901

MSG
./target/release/sidecache run --config "$work/demo.yaml"
