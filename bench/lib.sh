# Shared by the bench scripts: sourced, not run.

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

# For each file named: its name, then the median of each of its columns
# (files of space-separated numbers, one run per line).
medians() {
  local f n i
  for f in "$@"; do
    n=$(head -1 "$f" | wc -w)
    printf "%-10s" "$(basename "$f")"
    for i in $(seq "$n"); do printf " %9s" "$(cut -d' ' -f"$i" "$f" | median)"; done
    echo
  done
}
