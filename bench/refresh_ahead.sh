#!/usr/bin/env bash
# A hot key with a 2 s TTL under wrk (50 connections), through two
# sidecache processes that differ only in `refresh_ahead: 25%`, alternating
# ROUNDS times: requests per second, client p99 and max latency, and backend
# requests per run. The backend (demo-backend) takes 50 ms per GET.
# Without refresh_ahead every expiry sends the requests of that moment to
# wait on the backend (collapsed into one request); with it the entry is
# refreshed behind the hits.
#
#   bash bench/refresh_ahead.sh        # ROUNDS=3 DURATION=20s by default
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
need wrk
setup

BACKEND=13200
start_backend $BACKEND 50
for spec in "18200 19200" "18201 19201"; do
  set -- $spec
  extra=""; [ "$1" = 18201 ] && extra="    refresh_ahead: 25%"
  cat > "$work/sc$1.yaml" <<YAML
listen: 127.0.0.1:$1
upstream: { url: "http://127.0.0.1:$BACKEND", timeout: 10s }
admin: { listen: "127.0.0.1:$2" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 2s
    stale: never
$extra
YAML
  start_sidecache "$work/sc$1.yaml" "$2"
done

run() { # url -> "rps p99_ms max_ms backend_requests"
  local before after rps p99 max
  fill "$1"
  before=$(backend_count $BACKEND)
  read -r rps _ p99 max < <(wrk_hits "$1")
  after=$(backend_count $BACKEND)
  echo "$rps $p99 $max $((after - before - 1))"
}

alternate without http://127.0.0.1:18200/products/1 with http://127.0.0.1:18201/products/1
echo "medians over $ROUNDS rounds of $DURATION (rps, p99 ms, max ms, backend requests):"
medians without with
