#!/usr/bin/env bash
# Two sidecache builds' L1 hits, measured in alternation on loopback: the
# build here (SIDECACHE_BIN) and BASELINE_BIN, both in front of the demo
# backend (no delay), each warmed with 10,000 products and 50 listings.
# Servers on core 0, wrk on core 1; each round runs wrk against one, then
# the other, so a noisy machine affects both alike. Prints one line per run
# and, per mode, the medians and the median of the per-round ratios.
#
#   BASELINE_BIN=/tmp/sidecache-old bash bench/ab.sh    # MODES="hot uniform" ROUNDS=6 DURATION=5s
#
# Build the baseline aside first, e.g. from a worktree of the older commit:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --target-dir "$PWD/../main/target")
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BASELINE_BIN:?set BASELINE_BIN to the sidecache binary of the other build}"
SIDECACHE_BIN=${SIDECACHE_BIN:-target/release/sidecache}
MODES=${MODES:-hot uniform}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5s}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --bins --quiet
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

taskset -c 0 target/release/demo-backend --listen 127.0.0.1:13100 --delay-ms 0 --products 10000 \
  >/dev/null 2>&1 &
pids+=($!)
export ORIGIN_PORT=13100
SC_L1_PORT=13101 SC_L1_ADMIN_PORT=13111 RUST_LOG=warn taskset -c 0 "$SIDECACHE_BIN" run \
  --config bench/compare/sidecache-l1.yaml --watch false >/dev/null 2>&1 &
pids+=($!)
SC_L1_PORT=13102 SC_L1_ADMIN_PORT=13112 RUST_LOG=warn taskset -c 0 "$BASELINE_BIN" run \
  --config bench/compare/sidecache-l1.yaml --watch false >/dev/null 2>&1 &
pids+=($!)
for port in 13111 13112; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
done
for port in 13101 13102; do
  { for i in $(seq 10000); do printf 'url = "http://127.0.0.1:%s/products/%s"\noutput = "/dev/null"\n' "$port" "$i"; done
    for i in $(seq 50); do printf 'url = "http://127.0.0.1:%s/categories/%s/products"\noutput = "/dev/null"\n' "$port" "$i"; done
  } > "$work/warm"
  curl -s --no-progress-meter -Z --parallel-max 16 -K "$work/warm"
  curl -s -D - -o /dev/null "http://127.0.0.1:$port/products/77" | grep -qi 'cache-status: .*hit.*memory' \
    || { echo "port $port: not a hit after warm-up" >&2; exit 1; }
done
for mode in $MODES; do
  for r in $(seq "$ROUNDS"); do
    for port in 13101 13102; do
      rps=$(taskset -c 1 wrk -t2 -c64 -d"$DURATION" -s bench/compare/keys.lua "http://127.0.0.1:$port" \
        -- "$mode" "$r" 2>&1 | awk '/^RESULT/ {print $2}')
      echo "$mode $([ $port = 13101 ] && echo new || echo baseline) $rps"
    done
  done
done | tee "$work/runs"
python3 - "$work/runs" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    mode, which, rps = line.split()
    runs.setdefault(mode, {}).setdefault(which, []).append(float(rps))
for mode, r in runs.items():
    new, base = r["new"], r["baseline"]
    pairs = [a / b for a, b in zip(new, base)]
    print(f"{mode}: new {statistics.median(new):,.0f} req/s, baseline {statistics.median(base):,.0f} req/s, "
          f"ratio of medians {statistics.median(new) / statistics.median(base):.2f}, "
          f"median of round ratios {statistics.median(pairs):.2f} (rounds {min(pairs):.2f}..{max(pairs):.2f})")
PY
