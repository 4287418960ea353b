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
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is needed: apt-get install redis-server" >&2; exit 1; }
cargo build --release --bins --quiet

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

REDIS=16500 BACKEND=13500
redis-server --port $REDIS --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
pids+=($!)
taskset -c 0 ./target/release/demo-backend --listen "127.0.0.1:$BACKEND" --delay-ms 0 >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$BACKEND/" >/dev/null && redis-cli -p $REDIS ping >/dev/null 2>&1 && break; sleep 0.05; done
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
  RUST_LOG=error taskset -c 0 ./target/release/sidecache run --config "$work/sc$1.yaml" --watch false >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && break; sleep 0.05; done
done

run() { # url -> "rps p50_ms p99_ms"
  curl -sf "$1" -o /dev/null
  curl -sf "$1" -o /dev/null
  taskset -c 1 wrk -t1 -c50 -d"$DURATION" --latency "$1" 2>/dev/null > "$work/out"
  read -r rps p50 p99 _ < <(wrk_summary "$work/out")
  echo "$rps $p50 $p99"
}

: > "$work/plain"; : > "$work/counted"
for r in $(seq "$ROUNDS"); do
  p=$(run http://127.0.0.1:18500/products/1); echo "round $r  without: $p" >&2; echo "$p" >> "$work/plain"
  c=$(run http://127.0.0.1:18501/products/1); echo "round $r  counted: $c" >&2; echo "$c" >> "$work/counted"
done
for k in $(redis-cli -p $REDIS --scan --pattern 'sidecache:#hot:*'); do
  echo "lookups of product:1 counted in $k: $(redis-cli -p $REDIS zscore "$k" product:1)"
done
echo "medians over $ROUNDS rounds of $DURATION (rps, p50 ms, p99 ms):"
(cd "$work" && medians plain counted)
