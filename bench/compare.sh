#!/usr/bin/env bash
# sidecache next to nginx proxy_cache and Varnish, on loopback, in front of
# one static origin (nginx serving a generated catalog: 10,000 products of
# about 2 KB of JSON, 50 category listings of about 8 KB).
#
# Targets: the origin served directly (the yardstick), sidecache answering
# from memory (L1), sidecache answering from Redis only (L2, `tier: redis`)
# on one Redis (unix socket) and on a three-master Redis Cluster (TCP, no
# replicas), nginx proxy_cache, Varnish. Every cache is warmed with the whole catalog
# first. Scenarios, each a wrk run per target (see bench/compare/keys.lua):
#   hot      one product
#   uniform  products uniform over 10,000, 10 % category listings
#   zipf     products Zipf (s = 1.0), 10 % category listings
#   miss     a never-seen URL per request: every request goes to the origin
#            (and is stored)
# ROUNDS rounds; in each, every scenario runs on every target in turn (the
# order of targets rotates from round to round), so a noisy machine affects
# all alike. Medians are reported, with ratios from the same run. Servers are
# pinned to core 0, wrk to core 1. Progress goes to stderr; the Markdown
# report for BENCHMARKS.md goes to stdout.
#
#   bash bench/compare.sh            # ROUNDS=3 DURATION=5s CONNECTIONS=64 THREADS=2
#   SKIP_SIDECACHE=1 bash bench/compare.sh     # nginx and Varnish only
#   BASELINE_BIN=/tmp/sidecache-old bash bench/compare.sh
#                                    # adds that binary's L1 as a target, to
#                                    # compare two builds in the same run
#
# Other knobs: SIDECACHE_BIN (default target/release/sidecache), SCENARIOS
# ("hot uniform zipf miss"), TARGETS (a subset of "origin sc_l1 sc_l2
# sc_cluster nginx varnish"; origin is always measured), BASE_PORT (17400:
# ports BASE..BASE+6, BASE+11..BASE+16, BASE+20..BASE+22 and those + 10000
# for the cluster bus), SERVER_CPU (0), CLIENT_CPU (1).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here=$repo/bench/compare

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
SCENARIOS=${SCENARIOS:-hot uniform zipf miss}
TARGETS=${TARGETS:-origin sc_l1 sc_l2 sc_cluster nginx varnish}
SKIP_SIDECACHE=${SKIP_SIDECACHE:-0}
SIDECACHE_BIN=${SIDECACHE_BIN:-$repo/target/release/sidecache}
BASELINE_BIN=${BASELINE_BIN:-}
BASE_PORT=${BASE_PORT:-17400}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

log() { echo "$@" >&2; }
die() { echo "compare.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need nginx nginx
need varnishd varnish
need redis-server redis-server
need redis-cli redis-tools
need wrk wrk
need python3 python3
need curl curl
need taskset util-linux
need ps procps
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools; install them with:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  exit 1
fi
if [ "$SKIP_SIDECACHE" != 1 ] && [ ! -x "$SIDECACHE_BIN" ]; then
  die "no sidecache binary at $SIDECACHE_BIN; build first: cargo build --release (or SKIP_SIDECACHE=1)"
fi
if [ -n "$BASELINE_BIN" ] && { [ "$SKIP_SIDECACHE" = 1 ] || [ ! -x "$BASELINE_BIN" ]; }; then
  die "BASELINE_BIN=$BASELINE_BIN is not an executable (or SKIP_SIDECACHE=1 is set)"
fi
[ "$(nproc --all)" -ge 2 ] || die "needs two cores (servers on one, wrk on the other)"
for s in $SCENARIOS; do
  case $s in hot|uniform|zipf|miss) ;; *) die "unknown scenario $s" ;; esac
done

ORIGIN_PORT=$BASE_PORT
SC_L1_PORT=$((BASE_PORT + 1)) SC_L1_ADMIN_PORT=$((BASE_PORT + 11))
SC_L2_PORT=$((BASE_PORT + 2)) SC_L2_ADMIN_PORT=$((BASE_PORT + 12))
NGINX_PORT=$((BASE_PORT + 3))
VARNISH_PORT=$((BASE_PORT + 4))
SC_BASE_PORT=$((BASE_PORT + 5)) SC_BASE_ADMIN_PORT=$((BASE_PORT + 15))
SC_CL_PORT=$((BASE_PORT + 6)) SC_CL_ADMIN_PORT=$((BASE_PORT + 16))
CL_PORTS=($((BASE_PORT + 20)) $((BASE_PORT + 21)) $((BASE_PORT + 22)))
for p in $ORIGIN_PORT $SC_L1_PORT $SC_L1_ADMIN_PORT $SC_L2_PORT $SC_L2_ADMIN_PORT $NGINX_PORT $VARNISH_PORT \
  $SC_BASE_PORT $SC_BASE_ADMIN_PORT $SC_CL_PORT $SC_CL_ADMIN_PORT "${CL_PORTS[@]}" \
  $((CL_PORTS[0] + 10000)) $((CL_PORTS[1] + 10000)) $((CL_PORTS[2] + 10000)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use (set BASE_PORT)"; fi
done

# ---------------------------------------------------------------- lifecycle
work=$(mktemp -d -t sidecache-compare.XXXXXX)
chmod 755 "$work"
declare -A PID=()
descendants() { # pid -> the pid and all its descendants
  local p
  echo "$1"
  for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do descendants "$p"; done
}
cleanup() {
  local rc=$? all=() name p
  trap - EXIT INT TERM
  for name in "${!PID[@]}"; do all+=($(descendants "${PID[$name]}")); done
  for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # name cmd... : a server on the server core, output to $work/NAME.log
  local name=$1; shift
  taskset -c "$SERVER_CPU" "$@" >"$work/$name.log" 2>&1 &
  PID[$name]=$!
}
wait_for() { # name url
  for _ in $(seq 150); do
    curl -sf -o /dev/null "$2" && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$work/$1.log" >&2
  die "$1 did not come up ($2)"
}
fill() { # template -> same with @WORK@ @ROOT@ @PORT@ @ORIGIN_PORT@ filled, on stdout
  sed -e "s#@WORK@#$work#g" -e "s#@ROOT@#$work/catalog#g" -e "s#@ORIGIN_PORT@#$ORIGIN_PORT#g" \
      -e "s#@PORT@#$2#g" "$1"
}

# ---------------------------------------------------------------- catalog and servers
log "== catalog ($work)"
catalog_info=$(python3 "$here/gen_catalog.py" "$work/catalog" 10000 50)
log "$catalog_info"

wanted() { [[ " $TARGETS " == *" $1 "* ]]; }
targets=(origin)
for t in sc_l1 sc_l2 sc_cluster; do
  [ "$SKIP_SIDECACHE" != 1 ] && wanted $t && targets+=($t)
done
[ -z "$BASELINE_BIN" ] || targets+=(sc_base)
for t in nginx varnish; do wanted $t && targets+=($t); done
declare -A LABEL=([origin]="origin, direct" [sc_l1]="sidecache, L1 (memory)"
  [sc_l2]="sidecache, L2 (Redis)" [sc_cluster]="sidecache, L2 (Redis Cluster, 3 masters)"
  [sc_base]="sidecache baseline, L1 (memory)"
  [nginx]="nginx proxy_cache" [varnish]="Varnish")
declare -A PORT=([origin]=$ORIGIN_PORT [sc_l1]=$SC_L1_PORT [sc_l2]=$SC_L2_PORT
  [sc_cluster]=$SC_CL_PORT [sc_base]=$SC_BASE_PORT [nginx]=$NGINX_PORT [varnish]=$VARNISH_PORT)
has() { [[ " ${targets[*]} " == *" $1 "* ]]; }

log "== starting servers on core $SERVER_CPU"
for d in origin nginx; do mkdir -p "$work/$d"/{body,proxy,fastcgi,uwsgi,scgi}; done
fill "$here/origin.nginx.conf" "$ORIGIN_PORT" > "$work/origin.conf"
start origin nginx -p "$work/origin" -e "$work/origin/error.log" -c "$work/origin.conf"
wait_for origin "http://127.0.0.1:$ORIGIN_PORT/products/1"

if [ "$SKIP_SIDECACHE" != 1 ]; then
  mkdir -p "$work/redis"
  export ORIGIN_PORT SC_L1_PORT SC_L1_ADMIN_PORT SC_L2_PORT SC_L2_ADMIN_PORT
  export REDIS_SOCKET=$work/redis/redis.sock
  start redis redis-server --port 0 --unixsocket "$REDIS_SOCKET" --unixsocketperm 700 \
    --save "" --appendonly no --dir "$work/redis"
  for _ in $(seq 100); do redis-cli -s "$REDIS_SOCKET" ping >/dev/null 2>&1 && break; sleep 0.05; done
  redis-cli -s "$REDIS_SOCKET" ping >/dev/null || { tail "$work/redis.log" >&2; die "redis did not come up"; }
  if has sc_l1 || [ -n "$BASELINE_BIN" ]; then
    RUST_LOG=warn start sc_l1 "$SIDECACHE_BIN" run --config "$here/sidecache-l1.yaml" --watch false
    wait_for sc_l1 "http://127.0.0.1:$SC_L1_ADMIN_PORT/readyz"
  fi
  if has sc_l2; then
    RUST_LOG=warn start sc_l2 "$SIDECACHE_BIN" run --config "$here/sidecache-l2.yaml" --watch false
    wait_for sc_l2 "http://127.0.0.1:$SC_L2_ADMIN_PORT/readyz"
  fi
  if has sc_cluster; then
    # Three masters, no replicas (a replica would share the core and copy
    # every write), joined into one cluster.
    for i in 0 1 2; do
      p=${CL_PORTS[$i]}
      mkdir -p "$work/cluster/$p"
      start "cluster$i" redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file nodes.conf --save "" --appendonly no --dir "$work/cluster/$p"
    done
    for p in "${CL_PORTS[@]}"; do
      for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
    done
    redis-cli --cluster create "${CL_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
      >"$work/cluster-create.log" 2>&1 || { cat "$work/cluster-create.log" >&2; die "cluster create failed"; }
    for _ in $(seq 100); do
      redis-cli -p "${CL_PORTS[0]}" cluster info | grep -q cluster_state:ok && break; sleep 0.1
    done
    export SC_CL_PORT SC_CL_ADMIN_PORT CL_PORT_0=${CL_PORTS[0]} CL_PORT_1=${CL_PORTS[1]} CL_PORT_2=${CL_PORTS[2]}
    RUST_LOG=warn start sc_cluster "$SIDECACHE_BIN" run --config "$here/sidecache-cluster.yaml" --watch false
    wait_for sc_cluster "http://127.0.0.1:$SC_CL_ADMIN_PORT/readyz"
  fi
  if [ -n "$BASELINE_BIN" ]; then
    # The same L1 config, on its own ports.
    RUST_LOG=warn start sc_base env SC_L1_PORT="$SC_BASE_PORT" SC_L1_ADMIN_PORT="$SC_BASE_ADMIN_PORT" \
      "$BASELINE_BIN" run --config "$here/sidecache-l1.yaml" --watch false
    wait_for sc_base "http://127.0.0.1:$SC_BASE_ADMIN_PORT/readyz"
  fi
fi

fill "$here/proxy.nginx.conf" "$NGINX_PORT" > "$work/nginx.conf"
start nginx nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx.conf"
wait_for nginx "http://127.0.0.1:$NGINX_PORT/products/1?probe"

fill "$here/varnish.vcl" "" > "$work/varnish.vcl"
# -j none: no privilege separation jail (the work dir belongs to the caller).
start varnish varnishd -F -j none -n "$work/varnish" -a "127.0.0.1:$VARNISH_PORT" \
  -f "$work/varnish.vcl" -s malloc,256m -p thread_pools=1
wait_for varnish "http://127.0.0.1:$VARNISH_PORT/products/1?probe"

# ---------------------------------------------------------------- memory
rss_kib() { # name -> "kib processes": VmRSS summed over the process and its descendants
  local total=0 n=0 p v
  for p in $(descendants "${PID[$1]}"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    [ -n "$v" ] || continue
    total=$((total + v)); n=$((n + 1))
  done
  echo "$total $n"
}
mem_servers=("${targets[@]}")
[ "$SKIP_SIDECACHE" = 1 ] || mem_servers+=(redis)
LABEL[redis]="redis-server (the L2 store)"
if has sc_cluster; then
  mem_servers+=(cluster0 cluster1 cluster2)
  for i in 0 1 2; do LABEL[cluster$i]="redis-server, cluster master $((i + 1))"; done
fi
declare -A RSS_IDLE RSS_WARM RSS_AFTER NPROC
snapshot() { # array-name
  local -n into=$1
  local s kib n
  for s in "${mem_servers[@]}"; do
    read -r kib n < <(rss_kib "$s")
    into[$s]=$kib
    NPROC[$s]=$n
  done
}
sleep 1
snapshot RSS_IDLE

# ---------------------------------------------------------------- warm-up
paths=$work/paths
{ for i in $(seq 10000); do echo "/products/$i"; done
  for i in $(seq 50); do echo "/categories/$i/products"; done; } > "$paths"

is_hit() { # target headers -> 0 if the headers show a cache hit
  case $1 in
    sc_l1|sc_base) grep -qiE '^cache-status: .*; hit.*detail=memory' <<<"$2" ;;
    sc_l2|sc_cluster) grep -qiE '^cache-status: .*; hit.*detail=redis' <<<"$2" ;;
    nginx) grep -qiE '^x-cache-status: HIT' <<<"$2" ;;
    varnish) grep -qiE '^x-varnish: [0-9]+ [0-9]+' <<<"$2" && grep -qiE '^x-cache: HIT' <<<"$2" ;;
  esac
}
hit_header() {
  grep -iE '^(cache-status|x-cache-status|x-cache|x-varnish|age):' <<<"$1" | tr '\n' ' '
}

log "== warm-up: every product and listing once through each cache"
for t in "${targets[@]}"; do
  [ "$t" = origin ] && continue
  awk -v base="http://127.0.0.1:${PORT[$t]}" '{printf "url = \"%s%s\"\noutput = \"/dev/null\"\n", base, $0}' \
    "$paths" > "$work/warm.curl"
  start_ns=$(date +%s%N)
  codes=$(taskset -c "$CLIENT_CPU" curl -s --no-progress-meter -Z --parallel-max 16 -K "$work/warm.curl" -w '%{http_code}\n' 2>/dev/null | sort | uniq -c | tr -s ' ')
  ok=$(awk '$2 == 200 {print $1}' <<<"$codes")
  [ "${ok:-0}" -eq "$(wc -l < "$paths")" ] || die "warm-up of $t: answers $codes"
  sleep 0.3   # stores may finish after the answer
  for path in /products/1 /products/5000 /products/10000 "/products/$((RANDOM % 10000 + 1))" /categories/50/products; do
    h=$(curl -s -D - -o /dev/null "http://127.0.0.1:${PORT[$t]}$path" | tr -d '\r')
    is_hit "$t" "$h" || die "$t: $path is not a hit after warm-up: $(hit_header "$h")"
  done
  log "$(printf '%-24s %6s x 200 in %5.1f s; again: %s' "${LABEL[$t]}" "$ok" \
    "$(awk -v a="$start_ns" -v b="$(date +%s%N)" 'BEGIN {print (b - a) / 1e9}')" "$(hit_header "$h")")"
done
sleep 1
snapshot RSS_WARM

# ---------------------------------------------------------------- measurement
measure() { # target scenario seed run_id -> "rps p50 p99 requests errors"
  local out
  out=$(taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
    -s "$here/keys.lua" "http://127.0.0.1:${PORT[$1]}" -- "$2" "$3" "$4" 2>&1) || true
  grep -q '^RESULT ' <<<"$out" || { echo "$out" >&2; die "wrk against $1 ($2) gave no result"; }
  awk '/^RESULT / {print $2, $3, $4, $5, $6}' <<<"$out"
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print 0; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

n_runs=$((ROUNDS * $(wc -w <<<"$SCENARIOS") * ${#targets[@]}))
secs=${DURATION%s}
[[ $secs =~ ^[0-9]+$ ]] && log "== measuring: $n_runs wrk runs of $DURATION (about $((n_runs * secs / 60 + 1)) min)" \
  || log "== measuring: $n_runs wrk runs of $DURATION"
mkdir -p "$work/res"
for r in $(seq "$ROUNDS"); do
  # rotate the order of targets each round
  order=()
  for i in $(seq 0 $((${#targets[@]} - 1))); do
    order+=("${targets[$(((i + r - 1) % ${#targets[@]}))]}")
  done
  for s in $SCENARIOS; do
    line="round $r $(printf '%-7s' "$s"):"
    for t in "${order[@]}"; do
      res=$(measure "$t" "$s" "$r" "r$r-$t-$(date +%s%N)")
      echo "$res" >> "$work/res/$s.$t"
      read -r rps p50 p99 _ err <<<"$res"
      line+=" $t $rps/s $p50/$p99 ms"
      [ "$err" = 0 ] || line+=" ($err errors)"
      line+=" |"
    done
    log "${line%|}"
  done
done
sleep 1
snapshot RSS_AFTER

# ---------------------------------------------------------------- report
col() { cut -d' ' -f"$2" "$1" | median; }
fmt_int() { printf '%.0f' "$1" | sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }

product_mean=$(sed -n 's/.*products, mean \([0-9]*\) B.*/\1/p' <<<"$catalog_info")
listing_mean=$(sed -n 's/.*listings, mean \([0-9]*\) B.*/\1/p' <<<"$catalog_info")
cmd="ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CONNECTIONS"
[ "$THREADS" = 2 ] || cmd+=" THREADS=$THREADS"
[ "$SCENARIOS" = "hot uniform zipf miss" ] || cmd+=" SCENARIOS=\"$SCENARIOS\""
[ "$TARGETS" = "origin sc_l1 sc_l2 sc_cluster nginx varnish" ] || cmd+=" TARGETS=\"$TARGETS\""
[ "$SKIP_SIDECACHE" = 1 ] && cmd+=" SKIP_SIDECACHE=1"
[ -z "$BASELINE_BIN" ] || cmd+=" BASELINE_BIN=$BASELINE_BIN"
cmd+=" bash bench/compare.sh"

declare -A SCEN=([hot]="hot key (/products/1)" [uniform]="uniform, 10 % listings"
  [zipf]="Zipf s=1.0, 10 % listings" [miss]="miss (unique URL)")

echo "### sidecache, nginx proxy_cache and Varnish in front of one static origin"
echo
echo '```sh'
echo "$cmd"
echo '```'
echo
echo "- Origin: nginx $(nginx -v 2>&1 | sed 's#.*nginx/##') serving 10,000 product files (mean $(fmt_int "$product_mean") B) and 50 category listings (mean $(fmt_int "$listing_mean") B) as static JSON, \`Cache-Control: max-age=3600\`."
sc_version=""
if [ "$SKIP_SIDECACHE" != 1 ]; then
  sc_version="sidecache $("$SIDECACHE_BIN" --version 2>/dev/null | awk '{print $2}') (L2: Redis $(redis-server --version | sed 's/.*v=\([0-9.]*\).*/\1/'), one server on a unix socket, or a three-master cluster over TCP), "
fi
echo "- Proxies: ${sc_version}nginx $(nginx -v 2>&1 | sed 's#.*nginx/##') \`proxy_cache\`, Varnish $(varnishd -V 2>&1 | sed -n 's/.*varnish-\([0-9.]*\).*/\1/p;q'); configs in \`bench/compare/\`. Every server on core $SERVER_CPU (one nginx worker each), wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}') on core $CLIENT_CPU: \`-t$THREADS -c$CONNECTIONS -d$DURATION\`."
echo "- $ROUNDS round(s); in each, every scenario on every target in turn (order rotated per round). Medians over rounds; ratios are of the medians. Every cache warmed with the whole catalog first."
echo "- Machine: $(nproc --all) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)."
echo
has_l1=0; [ -s "$work/res/${SCENARIOS%% *}.sc_l1" ] && has_l1=1
if [ $has_l1 = 1 ]; then
  echo "| scenario | target | req/s | × origin | × sidecache L1 | p50 | p99 | errors |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
else
  echo "| scenario | target | req/s | × origin | p50 | p99 | errors |"
  echo "|---|---|---:|---:|---:|---:|---:|"
fi
total_errors=0
for s in $SCENARIOS; do
  o=$(col "$work/res/$s.origin" 1)
  l1=""
  [ $has_l1 = 1 ] && l1=$(col "$work/res/$s.sc_l1" 1)
  for t in "${targets[@]}"; do
    f=$work/res/$s.$t
    rps=$(col "$f" 1); p50=$(col "$f" 2); p99=$(col "$f" 3)
    err=$(awk '{e += $5} END {print e + 0}' "$f")
    total_errors=$((total_errors + err))
    ratio=$(awk -v a="$rps" -v b="$o" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
    row="| ${SCEN[$s]} | ${LABEL[$t]} | $(fmt_int "$rps") | $ratio |"
    if [ $has_l1 = 1 ]; then
      vs_l1="—"
      [ "$t" = sc_l2 ] || [ "$t" = sc_cluster ] || [ "$t" = sc_base ] && vs_l1=$(awk -v a="$rps" -v b="$l1" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
      row+=" $vs_l1 |"
    fi
    row+=" $p50 ms | $p99 ms | $err |"
    echo "$row"
  done
done
echo
echo "Memory, VmRSS summed over each server's processes (nginx: master, worker, cache manager/loader; Varnish: manager and child): idle before warm-up, after warm-up, after the measurement."
echo
echo "| server | processes | idle | warm | after the run |"
echo "|---|---:|---:|---:|---:|"
for s in "${mem_servers[@]}"; do
  echo "| ${LABEL[$s]} | ${NPROC[$s]} | $(mib "${RSS_IDLE[$s]}") | $(mib "${RSS_WARM[$s]}") | $(mib "${RSS_AFTER[$s]}") |"
done
echo
if has nginx; then
  echo "nginx keeps its cache on disk: $(du -sm "$work/nginx/cache" | cut -f1) MiB under \`proxy_cache_path\` after the run (page cache, not in its RSS)."
fi
if [[ " $SCENARIOS " == *" miss "* ]]; then
  echo "The miss scenario stores every unique URL it asks for, so \"after the run\" includes those entries; \"warm\" is the catalog alone."
fi
[ "$total_errors" = 0 ] || log "warning: $total_errors failed requests in all (see the errors column)"
