#!/usr/bin/env bash
# A new replica's first 30 s, with and without `memory.warm: { from: hot }`.
#
# One Redis, demo-backend with 100,000 products (20 ms a GET), and replica
# A serving Zipf-distributed product requests (wrk, 50 connections) for
# WARM_FOR, then stopping (which merges its counts into Redis). Then, ROUNDS
# times, two new replicas start that differ only in `memory.warm:
# { from: hot, top: 1000 }` (in that order, then the other way round), and
# each gets the same Zipf traffic for 30 s.
# Printed per replica: the share of requests answered from L1 (hit-memory)
# over its first 1 s, 5 s and 30 s, the share that reached the backend, and
# p99 latency (and how long the warm-up took); then the medians over the
# rounds.
#
#   bash bench/warm_hot.sh        # ROUNDS=3 WARM_FOR=20s TOP=1000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROUNDS=${ROUNDS:-3}
WARM_FOR=${WARM_FOR:-20s}
TOP=${TOP:-1000}
PRODUCTS=100000
need wrk redis-server
setup

REDIS=16400 BACKEND=13300
start_redis $REDIS
start_backend $BACKEND 20 --products $PRODUCTS

start() { # port admin warm(yes|no): a replica, once ready; its pid in $started
  local warm=""
  [ "$3" = yes ] && warm="memory: { warm: { from: hot, top: $TOP, timeout: 10s } }"
  cat > "$work/sc$1.yaml" <<YAML
listen: 127.0.0.1:$1
upstream: { url: "http://127.0.0.1:$BACKEND", timeout: 10s }
admin: { listen: "127.0.0.1:$2" }
redis: { url: "redis://127.0.0.1:$REDIS" }
$warm
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
YAML
  start_sidecache "$work/sc$1.yaml" "$2"
}
outcomes() { # admin -> "hit-memory hit-redis other" since start
  curl -sf "http://127.0.0.1:$1/metrics" | awk '
    /^sidecache_requests_total\{/ {
      v = $NF
      if ($0 ~ /outcome="hit-memory"/) m += v
      else if ($0 ~ /outcome="hit-redis"/) r += v
      else o += v
    }
    END { printf "%d %d %d\n", m, r, o }'
}
share() { awk -v m="$1" -v r="$2" -v o="$3" 'BEGIN { t = m + r + o; printf "%.1f", t ? 100 * m / t : 0 }'; }

start 18300 19300 yes; pa=$started
taskset -c 1 wrk -t1 -c50 -d"$WARM_FOR" -s bench/warm_hot.lua http://127.0.0.1:18300 -- $PRODUCTS 1 >/dev/null
kill -TERM "$pa"; wait "$pa" 2>/dev/null || true
echo "replica A served $WARM_FOR; hot sets: $(redis-cli -p $REDIS --scan --pattern 'sidecache:#hot:*' | wc -l), L2 entries: $(redis-cli -p $REDIS dbsize)" >&2

run() { # port admin warm -> "l1_1s l1_5s l1_30s backend_30s p99_ms"
  start "$1" "$2" "$3"; local pid=$started
  local took; took=$(curl -sf "http://127.0.0.1:$2/metrics" | awk '/^sidecache_warmup_seconds / {print $2}')
  [ -n "$took" ] && echo "  warm-up took ${took}s" >&2
  ( sleep 1; outcomes "$2" > "$work/m1"; sleep 4; outcomes "$2" > "$work/m5" ) &
  local sampler=$!
  taskset -c 1 wrk -t1 -c50 -d30s --latency -s bench/warm_hot.lua "http://127.0.0.1:$1" -- $PRODUCTS "$4" > "$work/out"
  wait $sampler
  outcomes "$2" > "$work/m30"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local p99; read -r _ _ p99 _ < <(wrk_summary "$work/out")
  read -r m r o < "$work/m30"
  echo "$(share $(cat "$work/m1")) $(share $(cat "$work/m5")) $(share $m $r $o) $(awk -v o="$o" -v t=$((m + r + o)) 'BEGIN { printf "%.2f", t ? 100 * o / t : 0 }') $p99"
}

: > "$work/without"; : > "$work/with"
without() { w=$(run 18301 19301 no $((r + 1))); echo "round $r  without: $w" >&2; echo "$w" >> "$work/without"; }
with() { h=$(run 18302 19302 yes $((r + 1))); echo "round $r  with:    $h" >&2; echo "$h" >> "$work/with"; }
# Every run leaves more entries in L2: the order alternates.
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then without; with; else with; without; fi
done
echo "medians over $ROUNDS rounds (% from L1 over the first 1 s, 5 s, 30 s; % to the backend over 30 s; p99 ms):"
medians without with
