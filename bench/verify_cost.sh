#!/usr/bin/env bash
# The cost of `verify: { sample: 1% }` on L1-hit throughput: two sidecache
# processes that differ only in that line, in front of demo-backend (no
# delay), each asked by wrk (50 connections, DURATION) for product 1 (an L1
# hit), in turn, ROUNDS times. Printed per run: requests/s, p50 and p99, and
# the backend requests the run caused (1 % of hits for the checked one).
#
#   bash bench/verify_cost.sh        # ROUNDS=3 DURATION=20s by default
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
need wrk
setup

BACKEND=13400
start_backend $BACKEND 0
for spec in "18400 19400" "18401 19401"; do
  set -- $spec
  extra=""; [ "$1" = 18401 ] && extra="    verify: { sample: 1% }"
  cat > "$work/sc$1.yaml" <<YAML
listen: 127.0.0.1:$1
upstream: { url: "http://127.0.0.1:$BACKEND" }
admin: { listen: "127.0.0.1:$2" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    tier: memory
$extra
YAML
  start_sidecache "$work/sc$1.yaml" "$2"
done

run() { # url -> "rps p50_ms p99_ms backend_requests"
  local before after rps p50 p99
  fill "$1"
  before=$(backend_count $BACKEND)
  read -r rps p50 p99 _ < <(wrk_hits "$1")
  after=$(backend_count $BACKEND)
  echo "$rps $p50 $p99 $((after - before - 1))"
}

alternate without http://127.0.0.1:18400/products/1 verify http://127.0.0.1:18401/products/1
echo "checks counted: $(curl -s http://127.0.0.1:19401/metrics | grep '^sidecache_verify_total' | tr '\n' ' ')"
echo "medians over $ROUNDS rounds of $DURATION (rps, p50 ms, p99 ms, backend requests):"
medians without verify
