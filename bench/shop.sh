#!/usr/bin/env bash
# A shop day, compressed: the demo backend (100,000 products, 50 ms per
# GET) behind two sidecache replicas sharing one Redis, loaded by
# benches/shop.rs (Zipf product and category reads, a session read on
# every page, cart reads and writes, logins, recommendations, inventory).
# Three runs, each from a cold cache (Redis flushed, replicas restarted):
#   1. with the back-office feed updating products (FEED per second)
#   2. without it
#   3. the same load with the feed, sent straight to the backend
# Prints a Markdown report for BENCHMARKS.md on stdout.
#
#   bash bench/shop.sh            # SECONDS_PER_RUN=240 CONNECTIONS=64 FEED=20
#
# Knobs: SECONDS_PER_RUN, CONNECTIONS, FEED, PRODUCTS (100000), DELAY_MS (50),
# BASE_PORT (18400: ports BASE..BASE+5).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

SECONDS_PER_RUN=${SECONDS_PER_RUN:-240}
CONNECTIONS=${CONNECTIONS:-64}
FEED=${FEED:-20}
PRODUCTS=${PRODUCTS:-100000}
DELAY_MS=${DELAY_MS:-50}
BASE_PORT=${BASE_PORT:-18400}
BACKEND=$BASE_PORT REDIS=$((BASE_PORT + 1))
A=$((BASE_PORT + 2)) A_ADMIN=$((BASE_PORT + 3))
B=$((BASE_PORT + 4)) B_ADMIN=$((BASE_PORT + 5))

for t in redis-server redis-cli curl; do
  command -v $t >/dev/null || { echo "shop.sh: needs $t (apt-get install -y redis-server redis-tools curl)" >&2; exit 1; }
done
for p in $BACKEND $REDIS $A $A_ADMIN $B $B_ADMIN; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "shop.sh: port $p in use (set BASE_PORT)" >&2; exit 1; fi
done

echo "== building (release)" >&2
cargo build --release --bins -q
cargo bench --bench shop --no-run -q 2>/dev/null

work=$(mktemp -d -t sidecache-shop.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # url
  for _ in $(seq 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "shop.sh: $1 never answered" >&2; exit 1
}

redis-server --port "$REDIS" --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
./target/release/demo-backend --listen "127.0.0.1:$BACKEND" --delay-ms "$DELAY_MS" --products "$PRODUCTS" \
  >"$work/backend.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$BACKEND/"

replicas=()
start_replicas() {
  for r in "${replicas[@]}"; do kill "$r" 2>/dev/null || true; wait "$r" 2>/dev/null || true; done
  replicas=()
  redis-cli -p "$REDIS" flushall >/dev/null
  for pair in "$A:$A_ADMIN" "$B:$B_ADMIN"; do
    SHOP_LISTEN=${pair%%:*} SHOP_ADMIN=${pair##*:} SHOP_BACKEND=$BACKEND SHOP_REDIS=$REDIS \
      ./target/release/sidecache run --config bench/shop/sidecache.yaml >>"$work/sidecache.log" 2>&1 &
    replicas+=($!)
    pids+=($!)
  done
  wait_for "http://127.0.0.1:$A_ADMIN/readyz"
  wait_for "http://127.0.0.1:$B_ADMIN/readyz"
}

load() { # label feed target...
  local label=$1 feed=$2; shift 2
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  echo "== $label" >&2
  cargo bench --bench shop -q -- --label "$label" --backend "http://127.0.0.1:$BACKEND" \
    --seconds "$SECONDS_PER_RUN" --connections "$CONNECTIONS" --feed "$feed" \
    --products "$PRODUCTS" "${targets[@]}"
}

echo "### Shop day: $PRODUCTS products, ${DELAY_MS} ms per backend GET, $CONNECTIONS connections, ${SECONDS_PER_RUN} s per run"
echo
echo "Command: \`SECONDS_PER_RUN=$SECONDS_PER_RUN CONNECTIONS=$CONNECTIONS FEED=$FEED bash bench/shop.sh\`"
echo
start_replicas
load "two replicas, back-office feed on" "$FEED" "http://127.0.0.1:$A" "http://127.0.0.1:$B"
start_replicas
load "two replicas, no feed" 0 "http://127.0.0.1:$A" "http://127.0.0.1:$B"
load "straight to the backend, feed on" "$FEED" "http://127.0.0.1:$BACKEND"
