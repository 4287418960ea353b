#!/usr/bin/env bash
# Builds and starts the demo: the demo shop backend on 127.0.0.1:3000 and
# sidecache in front of it on :8080 (memory tier, no Redis needed).
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins
./target/release/demo-backend --listen 127.0.0.1:3000 --delay-ms "${DEMO_DELAY_MS:-50}" &
backend=$!
trap 'kill $backend 2>/dev/null || true' EXIT

cat <<MSG

  sidecache demo
    proxy        http://127.0.0.1:8080   (backend: http://127.0.0.1:3000, ${DEMO_DELAY_MS:-50} ms per GET)
    admin        http://127.0.0.1:9901/readyz   http://127.0.0.1:9901/rules

  Try (run each twice: the second answer is a cache hit, see Cache-Status and X-Backend-Request):
    curl -si http://127.0.0.1:8080/products/42 | grep -iE '^(cache-status|age|x-backend-request)'
    curl -si 'http://127.0.0.1:8080/categories/3/products?page=1' | grep -iE '^(cache-status|age)'
    curl -si -b session_id=demo http://127.0.0.1:8080/session | grep -i cache-status
    curl -si http://127.0.0.1:8080/inventory/42 | grep -i cache-status      # never cached
    ./target/release/sidecache explain --config config/demo.yaml GET /products/42

MSG
./target/release/sidecache run --config config/demo.yaml
