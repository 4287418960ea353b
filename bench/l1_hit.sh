#!/usr/bin/env bash
# L1-hit throughput and latency of sidecache next to the demo backend served
# directly, with wrk on loopback; and the same L1 hit on an entry carrying
# three tags, to show what the tag-generation check costs a hit. Servers are pinned to core 0, wrk to core 1;
# the two targets are measured in alternation ROUNDS times and the medians
# reported, so a noisy machine affects both alike.
#
#   bash bench/l1_hit.sh            # ROUNDS=5 DURATION=10s CONNECTIONS=50 by default
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
BACKEND_PORT=${BACKEND_PORT:-13000}
PROXY_PORT=${PROXY_PORT:-18080}
ADMIN_PORT=${ADMIN_PORT:-19901}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --bins --quiet

work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
pids=()
trap cleanup EXIT

cat > "$work/bench.yaml" <<YAML
listen: 127.0.0.1:$PROXY_PORT
upstream: { url: "http://127.0.0.1:$BACKEND_PORT" }
admin: { listen: "127.0.0.1:$ADMIN_PORT" }
rules:
  - name: product-tagged
    match: { path: "/products/{id}", host: tagged.local }
    key: "tagged:{id}"
    ttl: 1h
    tags: ["product:{id}", "catalog", "category:{response.category_id}"]
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
YAML

# The backend without its artificial delay: its own speed is the yardstick.
taskset -c 0 ./target/release/demo-backend --listen "127.0.0.1:$BACKEND_PORT" --delay-ms 0 >/dev/null 2>&1 &
pids+=($!)
RUST_LOG=warn taskset -c 0 ./target/release/sidecache run --config "$work/bench.yaml" >/dev/null 2>&1 &
pids+=($!)
for port in "$BACKEND_PORT" "$PROXY_PORT"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/products/1" >/dev/null && break; sleep 0.1; done
done
curl -sf "http://127.0.0.1:$PROXY_PORT/products/1" -o /dev/null
curl -sf -H "Host: tagged.local" "http://127.0.0.1:$PROXY_PORT/products/1" -o /dev/null
sleep 0.2
status=$(curl -si "http://127.0.0.1:$PROXY_PORT/products/1" | tr -d '\r' | grep -i '^cache-status' || true)
tagged=$(curl -si -H "Host: tagged.local" "http://127.0.0.1:$PROXY_PORT/products/1" | tr -d '\r' | grep -i '^cache-status' || true)
echo "warm: $status / tagged: $tagged"

measure() { # url [host] -> "rps p50_ms p99_ms"
  local host=()
  [ -n "${2:-}" ] && host=(-H "Host: $2")
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${host[@]}" "$1" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    END {printf "%.0f %.3f %.3f\n", rps, ms(p50), ms(p99)}'
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: > "$work/origin"; : > "$work/proxy"; : > "$work/tagged"
for r in $(seq "$ROUNDS"); do
  measure "http://127.0.0.1:$BACKEND_PORT/products/1" >> "$work/origin"
  measure "http://127.0.0.1:$PROXY_PORT/products/1" >> "$work/proxy"
  measure "http://127.0.0.1:$PROXY_PORT/products/1" tagged.local >> "$work/tagged"
  echo "round $r: origin $(tail -1 "$work/origin") | L1 hit $(tail -1 "$work/proxy") | L1 hit, 3 tags $(tail -1 "$work/tagged")"
done

report() {
  printf "%-22s %10s %10s %10s\n" "$1" "$(cut -d' ' -f1 "$2" | median)" "$(cut -d' ' -f2 "$2" | median)" "$(cut -d' ' -f3 "$2" | median)"
}
echo
echo "medians over $ROUNDS rounds, wrk -t1 -c$CONNECTIONS -d$DURATION, body $(curl -s "http://127.0.0.1:$BACKEND_PORT/products/1" | wc -c) bytes"
printf "%-22s %10s %10s %10s\n" "target" "req/s" "p50 ms" "p99 ms"
report "origin (demo backend)" "$work/origin"
report "sidecache L1 hit" "$work/proxy"
report "L1 hit, 3 tags" "$work/tagged"
o=$(cut -d' ' -f1 "$work/origin" | median); p=$(cut -d' ' -f1 "$work/proxy" | median); t=$(cut -d' ' -f1 "$work/tagged" | median)
awk -v o="$o" -v p="$p" -v t="$t" 'BEGIN {printf "ratio sidecache/origin throughput: %.2f; tagged/untagged hit: %.3f\n", p/o, t/p}'
