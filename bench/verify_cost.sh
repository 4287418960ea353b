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
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --bins --quiet

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

BACKEND=13400
taskset -c 0 ./target/release/demo-backend --listen "127.0.0.1:$BACKEND" --delay-ms 0 >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$BACKEND/" >/dev/null && break; sleep 0.05; done
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
  RUST_LOG=error taskset -c 0 ./target/release/sidecache run --config "$work/sc$1.yaml" --watch false >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && break; sleep 0.05; done
done

run() { # url -> "rps p50_ms p99_ms backend_requests"
  curl -sf "$1" -o /dev/null
  local before after
  before=$(backend_count $BACKEND)
  taskset -c 1 wrk -t1 -c50 -d"$DURATION" --latency "$1" 2>/dev/null > "$work/out"
  after=$(backend_count $BACKEND)
  read -r rps p50 p99 _ < <(wrk_summary "$work/out")
  echo "$rps $p50 $p99 $((after - before - 1))"
}

: > "$work/plain"; : > "$work/verify"
for r in $(seq "$ROUNDS"); do
  p=$(run http://127.0.0.1:18400/products/1); echo "round $r  without: $p" >&2; echo "$p" >> "$work/plain"
  v=$(run http://127.0.0.1:18401/products/1); echo "round $r  verify 1%: $v" >&2; echo "$v" >> "$work/verify"
done
echo "checks counted: $(curl -s http://127.0.0.1:19401/metrics | grep '^sidecache_verify_total' | tr '\n' ' ')"
echo "medians over $ROUNDS rounds of $DURATION (rps, p50 ms, p99 ms, backend requests):"
(cd "$work" && medians plain verify)
