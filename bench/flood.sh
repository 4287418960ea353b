#!/usr/bin/env bash
# Memory under a flood: one replica (memory tier, memory.max_size 32MiB)
# in front of the demo backend (no delay), wrk sending unique tagged
# product URLs and unique cart writes for DURATION. RSS is sampled every
# 5 s; the report gives the largest RSS next to max_size.
#
#   bash bench/flood.sh            # DURATION=300 CONNECTIONS=32
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
DURATION=${DURATION:-300}
CONNECTIONS=${CONNECTIONS:-32}
BASE_PORT=${BASE_PORT:-18500}
BACKEND=$BASE_PORT LISTEN=$((BASE_PORT + 1)) ADMIN=$((BASE_PORT + 2))
command -v wrk >/dev/null || { echo "flood.sh: needs wrk (apt-get install -y wrk)" >&2; exit 1; }
cargo build --release --bins -q
work=$(mktemp -d -t sidecache-flood.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
./target/release/demo-backend --listen "127.0.0.1:$BACKEND" --delay-ms 0 --products 1000 >"$work/backend.log" 2>&1 &
pids+=($!)
FLOOD_LISTEN=$LISTEN FLOOD_ADMIN=$ADMIN FLOOD_BACKEND=$BACKEND \
  ./target/release/sidecache run --config bench/flood/sidecache.yaml >"$work/sidecache.log" 2>&1 &
sc=$!
pids+=($sc)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz" && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$sc/status"; }
idle=$(rss)
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s bench/flood/flood.lua "http://127.0.0.1:$LISTEN" >"$work/wrk.txt" 2>&1 &
wrk_pid=$!
pids+=($wrk_pid)
max=0
samples=()
while kill -0 "$wrk_pid" 2>/dev/null; do
  r=$(rss); samples+=("$r"); [ "$r" -gt "$max" ] && max=$r
  sleep 5
done
metrics=$(curl -s "http://127.0.0.1:$ADMIN/metrics")
purge_bytes=$(echo "$metrics" | awk '/^sidecache_purge_memory_bytes / {print $2}')
l1_bytes=$(echo "$metrics" | awk '/^sidecache_l1_bytes / {print $2}')
echo "### Memory under a flood (${DURATION} s, $CONNECTIONS connections, memory.max_size 32 MiB)"
echo
echo "Command: \`DURATION=$DURATION CONNECTIONS=$CONNECTIONS bash bench/flood.sh\`"
echo
grep -E "Requests/sec|requests in" "$work/wrk.txt" | sed 's/^/    /'
echo
echo "- RSS idle: $((idle / 1024)) MiB; largest during the flood: $((max / 1024)) MiB; at the end: $(( ${samples[-1]} / 1024 )) MiB"
echo "- L1 bytes at the end: $((${l1_bytes%.*} / 1048576)) MiB; purge memory: $((${purge_bytes%.*} / 1024)) KiB (budget 2 MiB)"
echo "- RSS every 5 s (MiB): $(for s in "${samples[@]}"; do printf '%s ' $((s / 1024)); done)"
