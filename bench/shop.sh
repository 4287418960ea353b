#!/usr/bin/env bash
# A shop day, compressed: the demo backend (100,000 products, 50 ms per
# GET) behind two sidecache replicas sharing one Redis, loaded by
# benches/shop.rs (Zipf product and category reads, a session read on
# every page, cart reads and writes, logins, recommendations, inventory).
# Four runs, each from a cold cache (Redis flushed, replicas restarted):
#   feed     with the back-office feed updating products (FEED per second)
#   nofeed   without it
#   direct   the same load with the feed, sent straight to the backend
#   varnish  the same load with the feed through one Varnish with the xkey
#            vmod (bench/shop/varnish.vcl), in front of a demo backend of
#            its own run with --xkey; skipped without varnishd and the vmod
#            (apt-get install -y varnish varnish-modules)
# Each run is reported minute by minute (benches/shop.rs). Prints a
# Markdown report for BENCHMARKS.md on stdout.
#
#   bash bench/shop.sh            # SECONDS_PER_RUN=240 CONNECTIONS=64 FEED=20
#
# Knobs: SECONDS_PER_RUN, CONNECTIONS, FEED, PRODUCTS (100000), DELAY_MS (50),
# RUNS ("feed nofeed direct varnish"), BASE_PORT (18400: ports BASE..BASE+7).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

SECONDS_PER_RUN=${SECONDS_PER_RUN:-240}
CONNECTIONS=${CONNECTIONS:-64}
FEED=${FEED:-20}
PRODUCTS=${PRODUCTS:-100000}
DELAY_MS=${DELAY_MS:-50}
RUNS=${RUNS:-feed nofeed direct varnish}
BASE_PORT=${BASE_PORT:-18400}
BACKEND=$BASE_PORT REDIS=$((BASE_PORT + 1))
A=$((BASE_PORT + 2)) A_ADMIN=$((BASE_PORT + 3))
B=$((BASE_PORT + 4)) B_ADMIN=$((BASE_PORT + 5))
XKEY_BACKEND=$((BASE_PORT + 6)) VARNISH=$((BASE_PORT + 7))

for t in redis-server redis-cli curl; do
  command -v $t >/dev/null || { echo "shop.sh: needs $t (apt-get install -y redis-server redis-tools curl)" >&2; exit 1; }
done
for p in $BACKEND $REDIS $A $A_ADMIN $B $B_ADMIN $XKEY_BACKEND $VARNISH; do
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

load() { # label feed backend-port target...
  local label=$1 feed=$2 backend=$3; shift 3
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  echo "== $label" >&2
  cargo bench --bench shop -q -- --label "$label" --backend "http://127.0.0.1:$backend" \
    --seconds "$SECONDS_PER_RUN" --connections "$CONNECTIONS" --feed "$feed" \
    --products "$PRODUCTS" "${targets[@]}"
}

echo "### Shop day: $PRODUCTS products, ${DELAY_MS} ms per backend GET, $CONNECTIONS connections, ${SECONDS_PER_RUN} s per run"
echo
echo "Command: \`SECONDS_PER_RUN=$SECONDS_PER_RUN CONNECTIONS=$CONNECTIONS FEED=$FEED bash bench/shop.sh\`"
echo
wanted() { [[ " $RUNS " == *" $1 "* ]]; }
if wanted feed; then
  start_replicas
  load "sidecache, two replicas, back-office feed on" "$FEED" "$BACKEND" "http://127.0.0.1:$A" "http://127.0.0.1:$B"
fi
if wanted nofeed; then
  start_replicas
  load "sidecache, two replicas, no feed" 0 "$BACKEND" "http://127.0.0.1:$A" "http://127.0.0.1:$B"
fi
if wanted direct; then
  load "straight to the backend, feed on" "$FEED" "$BACKEND" "http://127.0.0.1:$BACKEND"
fi
if wanted varnish; then
  if ! command -v varnishd >/dev/null || ! ls /usr/lib/*/varnish/vmods/libvmod_xkey.so >/dev/null 2>&1; then
    echo "shop.sh: no varnishd with the xkey vmod (apt-get install -y varnish varnish-modules): Varnish run skipped" >&2
  else
    ./target/release/demo-backend --listen "127.0.0.1:$XKEY_BACKEND" --delay-ms "$DELAY_MS" \
      --products "$PRODUCTS" --xkey >"$work/xkey-backend.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$XKEY_BACKEND/"
    sed -e "s#@BACKEND_PORT@#$XKEY_BACKEND#g" bench/shop/varnish.vcl >"$work/varnish.vcl"
    varnishd -F -j none -n "$work/varnish" -a "127.0.0.1:$VARNISH" -f "$work/varnish.vcl" \
      -s malloc,256m -p thread_pools=1 >"$work/varnish.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$VARNISH/products/1"
    load "Varnish + xkey, back-office feed on" "$FEED" "$XKEY_BACKEND" "http://127.0.0.1:$VARNISH"
  fi
fi
