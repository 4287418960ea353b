#!/usr/bin/env bash
# Compressed entries, measured on the catalog of bench/compare (10,000
# products of about 2 KB of JSON, 50 category listings of about 8 KB) from
# a static nginx origin, through sidecache (L1 in front of a Redis of its
# own), side by side: `compress: false`, the default (`[gzip, br]`) and
# `[br, gzip]`, each its own process, the wrk runs interleaved round by
# round so a noisy machine affects all alike. Clients send
# `Accept-Encoding: gzip, br` unless said otherwise.
#
# For each: RSS the cached catalog adds (RSS after caching it less RSS
# before) against its uncompressed bytes; Redis `used_memory` it adds per
# cached product; bytes sent per product and per listing answer; hits per
# second and p99 (wrk, ROUNDS rounds of DURATION, medians) on one hot
# product and on products uniform over the catalog, and on the hot product
# for a client that sends no `Accept-Encoding`. Servers on core 0, wrk and
# the warm-up on core 1. Markdown for BENCHMARKS.md on stdout.
#
#   bash bench/compression.sh         # ROUNDS=3 DURATION=5s CONNECTIONS=64
#
# Knobs: ROUNDS, DURATION, CONNECTIONS, THREADS (2), SIDECACHE_BIN
# (target/release/sidecache), BASE_PORT (17600: ports BASE..BASE+9).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here=$repo/bench/compare

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
SIDECACHE_BIN=${SIDECACHE_BIN:-$repo/target/release/sidecache}
BASE_PORT=${BASE_PORT:-17600}
ORIGIN_PORT=$BASE_PORT
MODES=(false default br)
declare -A SC_PORT=([false]=$((BASE_PORT + 1)) [default]=$((BASE_PORT + 2)) [br]=$((BASE_PORT + 3)))
declare -A SC_ADMIN=([false]=$((BASE_PORT + 4)) [default]=$((BASE_PORT + 5)) [br]=$((BASE_PORT + 6)))
declare -A REDIS_PORT=([false]=$((BASE_PORT + 7)) [default]=$((BASE_PORT + 8)) [br]=$((BASE_PORT + 9)))
declare -A LINE=([false]="  compress: false" [default]="" [br]="  compress: [br, gzip]")

for t in nginx redis-server redis-cli wrk python3 curl taskset; do
  command -v $t >/dev/null || { echo "compression.sh: needs $t (apt-get install -y nginx redis-server redis-tools wrk python3 curl util-linux)" >&2; exit 1; }
done
[ -x "$SIDECACHE_BIN" ] || { echo "compression.sh: build first: cargo build --release" >&2; exit 1; }
for p in $ORIGIN_PORT "${SC_PORT[@]}" "${SC_ADMIN[@]}" "${REDIS_PORT[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "compression.sh: port $p in use (set BASE_PORT)" >&2; exit 1; fi
done

work=$(mktemp -d -t sidecache-compression.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "$@" >&2; }
wait_for() { # url
  for _ in $(seq 150); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  log "compression.sh: $1 never answered"; exit 1
}

log "== catalog ($work)"
python3 "$here/gen_catalog.py" "$work/catalog" 10000 50 >&2
mkdir -p "$work/origin"/{body,proxy,fastcgi,uwsgi,scgi}
sed -e "s#@WORK@#$work#g" -e "s#@ROOT@#$work/catalog#g" -e "s#@PORT@#$ORIGIN_PORT#g" \
  "$here/origin.nginx.conf" >"$work/origin.conf"
taskset -c 0 nginx -p "$work/origin" -e "$work/origin/error.log" -c "$work/origin.conf" >/dev/null 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$ORIGIN_PORT/products/1"
files_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s}'; }
catalog_bytes=$(files_bytes "$work/catalog")
product_bytes=$(( $(files_bytes "$work/catalog/products") / 10000 ))
listing_bytes=$(( $(files_bytes "$work/catalog/categories") / 50 ))

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# Warms the cache with every product and listing, then reads each once
# more from the cache; prints "bytes per product, bytes per listing" of the
# answers sent on the second pass.
warm() { # port
  taskset -c 1 python3 - "$1" <<'EOF'
import http.client, sys
port = int(sys.argv[1])
paths = [f"/products/{i}" for i in range(1, 10001)] + [f"/categories/{i}/products" for i in range(1, 51)]
conn = http.client.HTTPConnection("127.0.0.1", port)
def fetch(path):
    conn.request("GET", path, headers={"Accept-Encoding": "gzip, br"})
    r = conn.getresponse()
    return r.read(), r.getheader("cache-status", "")
for p in paths:
    fetch(p)
sizes, hits = {"products": [], "categories": []}, 0
for p in paths:
    body, status = fetch(p)
    hits += "; hit" in status
    sizes[p.split("/")[1]].append(len(body))
print(sum(sizes["products"]) / len(sizes["products"]), sum(sizes["categories"]) / len(sizes["categories"]), hits)
EOF
}

wrk_run() { # port mode header... -> "req/s p99ms"
  local port=$1 mode=$2; shift 2
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  taskset -c 1 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "${args[@]}" -s "$here/keys.lua" \
    "http://127.0.0.1:$port" -- "$mode" 7 | awk '/^RESULT/ {print $2, $4}'
}

declare -A idle=() cached=() redis_before=() redis_after=() per_product=() per_listing=() spid=()
for m in "${MODES[@]}"; do
  redis-server --port "${REDIS_PORT[$m]}" --save "" --appendonly no --dir "$work" >"$work/redis-$m.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do redis-cli -p "${REDIS_PORT[$m]}" ping >/dev/null 2>&1 && break; sleep 0.05; done
  cat >"$work/sidecache-$m.yaml" <<EOF
listen: 127.0.0.1:${SC_PORT[$m]}
upstream: { url: "http://127.0.0.1:$ORIGIN_PORT", timeout: 10s }
admin: { listen: "127.0.0.1:${SC_ADMIN[$m]}" }
memory: { max_size: 512MiB, max_object_size: 1MiB }
redis: { url: "redis://127.0.0.1:${REDIS_PORT[$m]}/0", key_prefix: "c:" }
defaults:
  ttl: 1h
${LINE[$m]}
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
  - name: category-products
    match: { path: "/categories/{id}/products" }
    key: "category:{id}:products"
EOF
  RUST_LOG=warn taskset -c 0 "$SIDECACHE_BIN" run --config "$work/sidecache-$m.yaml" --watch false \
    >"$work/sidecache-$m.log" 2>&1 &
  spid[$m]=$!
  pids+=($!)
  wait_for "http://127.0.0.1:${SC_ADMIN[$m]}/readyz"
done
sleep 1
for m in "${MODES[@]}"; do
  log "== warming: compress $m"
  idle[$m]=$(rss_kib "${spid[$m]}")
  redis_before[$m]=$(redis-cli -p "${REDIS_PORT[$m]}" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
  read -r pp pl hits < <(warm "${SC_PORT[$m]}")
  per_product[$m]=$pp per_listing[$m]=$pl
  log "   hits on the second pass: $hits of 10050"
done
sleep 2
for m in "${MODES[@]}"; do
  cached[$m]=$(rss_kib "${spid[$m]}")
  redis_after[$m]=$(redis-cli -p "${REDIS_PORT[$m]}" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
done
declare -A hot=() uniform=() plain=()
for r in $(seq "$ROUNDS"); do
  log "== round $r"
  for m in "${MODES[@]}"; do
    hot[$m]+="$(wrk_run "${SC_PORT[$m]}" hot 'Accept-Encoding: gzip, br');"
    uniform[$m]+="$(wrk_run "${SC_PORT[$m]}" uniform 'Accept-Encoding: gzip, br');"
    plain[$m]+="$(wrk_run "${SC_PORT[$m]}" hot);"
  done
done
med() { tr ';' '\n' <<<"$1" | awk 'NF {print $1}' | median; }
med99() { tr ';' '\n' <<<"$1" | awk 'NF {print $2}' | median; }
report=()
for m in "${MODES[@]}"; do
  added=$(( (cached[$m] - idle[$m]) * 1024 ))
  redis=$(( redis_after[$m] - redis_before[$m] ))
  label=${LINE[$m]#  }
  report+=("| ${label:-(default: compress [gzip, br])} | $((idle[$m] / 1024)) MiB | $((added / 1048576)) MiB ($(awk -v a="$added" -v c="$catalog_bytes" 'BEGIN {printf "%.2f", a / c}') x the catalog) | $((redis / 10050)) B ($(awk -v r="$redis" -v p="$product_bytes" 'BEGIN {printf "%.2f", r / 10050 / p}') x) | ${per_product[$m]%.*} B | ${per_listing[$m]%.*} B | $(med "${hot[$m]}") / $(med99 "${hot[$m]}") ms | $(med "${uniform[$m]}") / $(med99 "${uniform[$m]}") ms | $(med "${plain[$m]}") / $(med99 "${plain[$m]}") ms |")
done

echo "### Compressed entries: the bench/compare catalog through one sidecache (L1 + Redis)"
echo
echo "Command: \`ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CONNECTIONS bash bench/compression.sh\`; catalog $((catalog_bytes / 1024)) KiB: products $product_bytes B each, listings $listing_bytes B each. Clients send \`Accept-Encoding: gzip, br\` except in the last column."
echo
echo "| config | idle RSS | RSS the cached catalog adds | Redis per cached entry (x a product's JSON) | bytes sent per product | per listing | hot hits/s / p99 | uniform hits/s / p99 | hot, no Accept-Encoding |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${report[@]}"
