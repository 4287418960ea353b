#!/usr/bin/env bash
# The cost of counting hot keys (`memory.warm: { from: hot }`) on L1 hits:
# two sidecache processes on one Redis that differ only in that line, each
# asked by wrk (50 connections, DURATION) for product 1 (an L1 hit of a
# `tier: both` rule), in turn, ROUNDS times: requests/s, p50 and p99.
#
#   bash bench/hot_count_cost.sh        # ROUNDS=3 DURATION=20s by default
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
need wrk redis-server
setup

REDIS=16500 BACKEND=13500
start_redis $REDIS
start_backend $BACKEND 0
for spec in "18500 19500" "18501 19501"; do
  set -- $spec
  warm=""; [ "$1" = 18501 ] && warm="memory: { warm: { from: hot } }"
  cat > "$work/sc$1.yaml" <<YAML
listen: 127.0.0.1:$1
upstream: { url: "http://127.0.0.1:$BACKEND" }
admin: { listen: "127.0.0.1:$2" }
redis: { url: "redis://127.0.0.1:$REDIS" }
$warm
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    tier: both
YAML
  start_sidecache "$work/sc$1.yaml" "$2"
done

run() { # url -> "rps p50_ms p99_ms"
  local rps p50 p99
  fill "$1"
  read -r rps p50 p99 _ < <(wrk_hits "$1")
  echo "$rps $p50 $p99"
}

alternate without http://127.0.0.1:18500/products/1 counted http://127.0.0.1:18501/products/1
for k in $(redis-cli -p $REDIS --scan --pattern 'sidecache:#hot:*'); do
  echo "lookups of product:1 counted in $k: $(redis-cli -p $REDIS zscore "$k" product:1)"
done
echo "medians over $ROUNDS rounds of $DURATION (rps, p50 ms, p99 ms):"
medians without counted
