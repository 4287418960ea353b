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
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --bins --quiet

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

BACKEND=13200
config() { # port admin extra -> a config file for /products/{id}, 2 s TTL, plus extra
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
$3
YAML
  echo "$work/sc$1.yaml"
}
taskset -c 0 ./target/release/demo-backend --listen "127.0.0.1:$BACKEND" --delay-ms 50 >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$BACKEND/" >/dev/null && break; sleep 0.05; done
for spec in "18200 19200" "18201 19201"; do
  set -- $spec
  extra=""; [ "$1" = 18201 ] && extra="    refresh_ahead: 25%"
  RUST_LOG=error taskset -c 0 ./target/release/sidecache run --config "$(config "$1" "$2" "$extra")" --watch false >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && break; sleep 0.05; done
done

run() { # url -> "rps p99_ms max_ms backend_requests"
  curl -sf "$1" -o /dev/null
  local before after
  before=$(backend_count $BACKEND)
  taskset -c 1 wrk -t1 -c50 -d"$DURATION" --latency "$1" 2>/dev/null > "$work/out"
  after=$(backend_count $BACKEND)
  read -r rps _ p99 max < <(wrk_summary "$work/out")
  echo "$rps $p99 $max $((after - before - 1))"
}

: > "$work/plain"; : > "$work/ahead"
for r in $(seq "$ROUNDS"); do
  p=$(run http://127.0.0.1:18200/products/1); echo "round $r  without: $p" >&2; echo "$p" >> "$work/plain"
  a=$(run http://127.0.0.1:18201/products/1); echo "round $r  with:    $a" >&2; echo "$a" >> "$work/ahead"
done
echo "medians over $ROUNDS rounds of $DURATION (rps, p99 ms, max ms, backend requests):"
(cd "$work" && medians plain ahead)
