#!/usr/bin/env bash
# Resilience figures, on loopback:
#  1. L1-hit throughput and latency with Redis up, then with Redis killed,
#     alternating ROUNDS times (medians): an L1 hit must not touch Redis.
#  2. Backend requests caused by a cold-start burst (three wrk clients, one
#     per replica, 200 connections in all, 2 s) on a key with no caching,
#     with per-replica collapsing, and with `collapse: global`.
#
#   bash bench/resilience.sh        # ROUNDS=3 DURATION=5s by default
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is needed" >&2; exit 1; }
cargo build --release --bins --quiet

work=$(mktemp -d)
pids=()
redis_pid=""
cleanup() { kill "${pids[@]}" $redis_pid 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

REDIS_PORT=16390 BACKEND=13100
start_redis() {
  redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 && return; sleep 0.05; done
}
stop_redis() { kill $redis_pid 2>/dev/null || true; wait $redis_pid 2>/dev/null || true; redis_pid=""; }

replica() { # n -> starts replica n on 181n0 (admin 191n0)
  cat > "$work/r$1.yaml" <<YAML
listen: 127.0.0.1:181${1}0
upstream: { url: "http://127.0.0.1:$BACKEND", timeout: 10s }
admin: { listen: "127.0.0.1:191${1}0" }
redis: { url: "redis://127.0.0.1:$REDIS_PORT/0", key_prefix: "bench:" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
  - name: global
    match: { path: "/categories/{id}/products" }
    key: "global:{id}:{query.page}"
    ttl: 1h
    collapse: global
  - name: local
    match: { path: "/recommendations/{user_id}" }
    key: "reco:{user_id}"
    ttl: 1h
  - name: nocache
    match: { path: "/cart/{user_id}" }
    cache: false
YAML
  RUST_LOG=error taskset -c 0 ./target/release/sidecache run --config "$work/r$1.yaml" --watch false >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:191${1}0/readyz" >/dev/null && return; sleep 0.05; done
}

measure() { # url -> "rps p50_ms p99_ms"
  taskset -c 1 wrk -t1 -c50 -d"$DURATION" --latency "$1" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    END {printf "%.0f %.3f %.3f\n", rps, ms(p50), ms(p99)}'
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
backend_count() { curl -si "http://127.0.0.1:$BACKEND/" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-backend-request" {print $2}'; }

start_redis
taskset -c 0 ./target/release/demo-backend --listen "127.0.0.1:$BACKEND" --delay-ms 0 >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$BACKEND/" >/dev/null && break; sleep 0.05; done
replica 1

echo "== 1. L1 hit with Redis up and down"
url=http://127.0.0.1:18110/products/1
curl -sf "$url" -o /dev/null; sleep 0.3
: > "$work/up"; : > "$work/down"
for r in $(seq "$ROUNDS"); do
  curl -sf "$url" -o /dev/null
  measure "$url" >> "$work/up"
  stop_redis
  sleep 0.3
  measure "$url" >> "$work/down"
  start_redis
  sleep 1.5   # the purge bus reconnects (and drops L1); warm again
  curl -sf "$url" -o /dev/null
  echo "round $r: redis up $(tail -1 "$work/up") | redis down $(tail -1 "$work/down")"
done
printf "%-14s %10s %10s %10s\n" "" "req/s" "p50 ms" "p99 ms"
for f in up down; do
  printf "%-14s %10s %10s %10s\n" "redis $f" "$(cut -d' ' -f1 "$work/$f" | median)" "$(cut -d' ' -f2 "$work/$f" | median)" "$(cut -d' ' -f3 "$work/$f" | median)"
done

echo
echo "== 2. Backend requests during a cold-start burst (3 replicas, 3 x wrk -c67 -d2s, backend 200 ms per GET)"
kill "${pids[@]}" 2>/dev/null || true; pids=()
taskset -c 0 ./target/release/demo-backend --listen "127.0.0.1:$BACKEND" --delay-ms 200 >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$BACKEND/" >/dev/null && break; sleep 0.05; done
redis-cli -p $REDIS_PORT flushall >/dev/null
replica 1; replica 2; replica 3
burst() { # path -> backend requests it caused
  local before after
  before=$(backend_count)
  for n in 1 2 3; do taskset -c 1 wrk -t1 -c67 -d2s "http://127.0.0.1:181${n}0$1" >/dev/null 2>&1 & done
  wait_pids=$(jobs -p | tail -3); for p in $wait_pids; do wait "$p" 2>/dev/null || true; done
  after=$(backend_count)
  echo $((after - before - 1))
}
printf "%-34s %s\n" "cache: false" "$(burst /cart/1)"
printf "%-34s %s\n" "cached, collapse per replica" "$(burst /recommendations/1)"
printf "%-34s %s\n" "cached, collapse: global" "$(burst '/categories/1/products?page=1')"
