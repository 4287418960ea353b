#!/usr/bin/env bash
# Compressed entries, measured on the catalog of bench/compare (10,000
# products of about 2 KB of JSON, 50 category listings of about 8 KB) from
# a static nginx origin, through one sidecache (L1 in front of one Redis),
# once with `compress: false` and once with the default (`[br, gzip]`).
# Clients send `Accept-Encoding: gzip, br` unless said otherwise.
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
# (target/release/sidecache), BASE_PORT (17600: ports BASE..BASE+3).
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
ORIGIN_PORT=$BASE_PORT SC_PORT=$((BASE_PORT + 1)) SC_ADMIN=$((BASE_PORT + 2)) REDIS_PORT=$((BASE_PORT + 3))

for t in nginx redis-server redis-cli wrk python3 curl taskset; do
  command -v $t >/dev/null || { echo "compression.sh: needs $t (apt-get install -y nginx redis-server redis-tools wrk python3 curl util-linux)" >&2; exit 1; }
done
[ -x "$SIDECACHE_BIN" ] || { echo "compression.sh: build first: cargo build --release" >&2; exit 1; }
for p in $ORIGIN_PORT $SC_PORT $SC_ADMIN $REDIS_PORT; do
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
catalog_bytes=$(du -sb --apparent-size "$work/catalog" | cut -f1)
product_bytes=$(( $(du -sb --apparent-size "$work/catalog/products" | cut -f1) / 10000 ))
listing_bytes=$(( $(du -sb --apparent-size "$work/catalog/categories" | cut -f1) / 50 ))

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# Warms the cache with every product and listing, then reads each once
# more from the cache; prints "bytes per product, bytes per listing" of the
# answers sent on the second pass.
warm() {
  taskset -c 1 python3 - "$SC_PORT" <<'EOF'
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

wrk_run() { # mode header... -> "req/s p99ms"
  local mode=$1; shift
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  taskset -c 1 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "${args[@]}" -s "$here/keys.lua" \
    "http://127.0.0.1:$SC_PORT" -- "$mode" 7 | awk '/^RESULT/ {print $2, $4}'
}

report=()
for compress in false default; do
  log "== compress: $compress"
  redis-server --port "$REDIS_PORT" --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
  rpid=$!
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  line=""
  [ "$compress" = default ] || line="  compress: false"
  cat >"$work/sidecache.yaml" <<EOF
listen: 127.0.0.1:$SC_PORT
upstream: { url: "http://127.0.0.1:$ORIGIN_PORT", timeout: 10s }
admin: { listen: "127.0.0.1:$SC_ADMIN" }
memory: { max_size: 512MiB, max_object_size: 1MiB }
redis: { url: "redis://127.0.0.1:$REDIS_PORT/0", key_prefix: "c:" }
defaults:
  ttl: 1h
$line
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
  - name: category-products
    match: { path: "/categories/{id}/products" }
    key: "category:{id}:products"
EOF
  RUST_LOG=warn taskset -c 0 "$SIDECACHE_BIN" run --config "$work/sidecache.yaml" --watch false \
    >"$work/sidecache.log" 2>&1 &
  spid=$!
  wait_for "http://127.0.0.1:$SC_ADMIN/readyz"
  sleep 1
  idle=$(rss_kib "$spid")
  redis_before=$(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
  read -r per_product per_listing hits < <(warm)
  sleep 2
  cached=$(rss_kib "$spid")
  redis_after=$(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
  entries=$(redis-cli -p "$REDIS_PORT" dbsize | tr -d '\r')
  hot=() uniform=() plain=()
  for _ in $(seq "$ROUNDS"); do
    hot+=("$(wrk_run hot 'Accept-Encoding: gzip, br')")
    uniform+=("$(wrk_run uniform 'Accept-Encoding: gzip, br')")
    plain+=("$(wrk_run hot)")
  done
  med() { printf '%s\n' "$@" | awk '{print $1}' | median; }
  med99() { printf '%s\n' "$@" | awk '{print $2}' | median; }
  added=$(( (cached - idle) * 1024 ))
  report+=("| $compress | $((idle / 1024)) MiB | $((added / 1048576)) MiB ($(awk -v a="$added" -v c="$catalog_bytes" 'BEGIN {printf "%.2f", a / c}') x the catalog) | $(( (redis_after - redis_before) / 10050 )) B ($(awk -v r="$((redis_after - redis_before))" -v p="$product_bytes" 'BEGIN {printf "%.2f", r / 10050 / p}') x) | ${per_product%.*} B | ${per_listing%.*} B | $(med "${hot[@]}") / $(med99 "${hot[@]}") ms | $(med "${uniform[@]}") / $(med99 "${uniform[@]}") ms | $(med "${plain[@]}") / $(med99 "${plain[@]}") ms |")
  log "   hits on the second pass: $hits of 10050; Redis keys: $entries"
  kill "$spid" "$rpid"; wait "$spid" "$rpid" 2>/dev/null || true
done

echo "### Compressed entries: the bench/compare catalog through one sidecache (L1 + Redis)"
echo
echo "Command: \`ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CONNECTIONS bash bench/compression.sh\`; catalog $((catalog_bytes / 1024)) KiB: products $product_bytes B each, listings $listing_bytes B each. Clients send \`Accept-Encoding: gzip, br\` except in the last column."
echo
echo "| compress | idle RSS | RSS the cached catalog adds | Redis per cached entry (x a product's JSON) | bytes sent per product | per listing | hot hits/s / p99 | uniform hits/s / p99 | hot, no Accept-Encoding |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${report[@]}"
