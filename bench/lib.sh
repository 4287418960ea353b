# Shared by the bench scripts: sourced, not run. A script sets ROUNDS and
# defines run() (URL -> one line of numbers) where it uses `alternate`.

# Fails unless each named command is installed.
need() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null || { echo "$c is needed: apt-get install $c" >&2; exit 1; }
  done
}

# The release binaries, a work folder ($work) and the processes started
# ($pids), stopped and removed on exit.
setup() {
  cargo build --release --bins --quiet
  work=$(mktemp -d)
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
}

# Waits until URL answers 2xx (20 s at most).
wait_for() { for _ in $(seq 400); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done; return 1; }

# demo-backend on core 0 on PORT, DELAY_MS per GET, with more arguments.
start_backend() {
  local port=$1 delay=$2
  shift 2
  taskset -c 0 ./target/release/demo-backend --listen "127.0.0.1:$port" --delay-ms "$delay" "$@" >/dev/null 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$port/"
}

# A redis-server on PORT, keeping nothing on disk.
start_redis() {
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  return 1
}

# sidecache on core 0 with CONFIG, ready on ADMIN_PORT; its pid in $started.
start_sidecache() {
  RUST_LOG=error taskset -c 0 ./target/release/sidecache run --config "$1" --watch false >/dev/null 2>&1 &
  started=$!
  pids+=($started)
  wait_for "http://127.0.0.1:$2/readyz"
}

# ROUNDS rounds of run() on each NAME URL pair in turn, each line appended
# to $work/NAME and shown on stderr.
alternate() {
  local r i line
  for r in $(seq "$ROUNDS"); do
    for ((i = 1; i <= $#; i += 2)); do
      local name=${!i} next=$((i + 1))
      line=$(run "${!next}")
      echo "round $r  $name: $line" >&2
      echo "$line" >> "$work/$name"
    done
  done
}

# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# The demo backend's request counter (its X-Backend-Request), asked on PORT.
backend_count() { curl -si "http://127.0.0.1:$1/" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-backend-request" {print $2}'; }

# From wrk --latency output in FILE: "rps p50_ms p99_ms max_ms".
wrk_summary() {
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ {rps=$2} /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)} /^ +Latency / && !max {max=ms($4)}
    END {printf "%.0f %.3f %.3f %.3f\n", rps, p50, p99, max}' "$1"
}

# Two requests of URL, so its entry is stored.
fill() { curl -sf "$1" -o /dev/null; curl -sf "$1" -o /dev/null; }

# wrk on core 1 (one thread, 50 connections, DURATION) against URL:
# "rps p50_ms p99_ms max_ms".
wrk_hits() {
  taskset -c 1 wrk -t1 -c50 -d"$DURATION" --latency "$1" 2>/dev/null > "$work/out"
  wrk_summary "$work/out"
}

# For each file of $work named: its name, then the median of each of its
# columns (space-separated numbers, one run per line).
medians() {
  local f n i
  for f in "$@"; do
    n=$(head -1 "$work/$f" | wc -w)
    printf "%-10s" "$f"
    for i in $(seq "$n"); do printf " %9s" "$(cut -d' ' -f"$i" "$work/$f" | median)"; done
    echo
  done
}
