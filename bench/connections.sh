#!/usr/bin/env bash
# What an idle keep-alive connection costs sidecache's memory: RSS before,
# then with N connections open that have each had one answer (a hit) and
# stay open, as browsers and ingress pools keep them. Prints KiB per
# connection for each N.
#
#   bash bench/connections.sh          # COUNTS="1000 3000" by default
#   SIDECACHE_BIN=/tmp/other-build bash bench/connections.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${COUNTS:-1000 3000}
SIDECACHE_BIN=${SIDECACHE_BIN:-target/release/sidecache}
cargo build --release --bins --quiet
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/sc.yaml" <<YAML
listen: 127.0.0.1:13301
upstream: { url: "http://127.0.0.1:13300" }
admin: { listen: "127.0.0.1:13311" }
limits: { max_connections: 100000 }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
YAML
cat > "$work/idle.py" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /products/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
for s in socks:  # read each answer whole; the connection stays open
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += s.recv(65536)
print("open", flush=True)
sys.stdin.readline()
PY
target/release/demo-backend --listen 127.0.0.1:13300 --delay-ms 0 >/dev/null 2>&1 &
pids+=($!)
RUST_LOG=warn "$SIDECACHE_BIN" run --config "$work/sc.yaml" --watch false >/dev/null 2>&1 &
sc=$!
pids+=($sc)
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:13311/readyz && break; sleep 0.1; done
curl -sf -o /dev/null http://127.0.0.1:13301/products/1
curl -sf -o /dev/null http://127.0.0.1:13301/products/1
rss() { awk '/VmRSS/ {print $2}' "/proc/$sc/status"; }
idle=$(rss)
echo "$SIDECACHE_BIN $("$SIDECACHE_BIN" --version | awk '{print $2}'), idle RSS ${idle} KiB"
for n in $COUNTS; do
  rm -f "$work/in" "$work/out"
  mkfifo "$work/in"
  python3 "$work/idle.py" 13301 "$n" < "$work/in" > "$work/out" &
  client=$!
  exec 3>"$work/in"
  for _ in $(seq 300); do grep -q open "$work/out" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  with=$(rss)
  echo "$n idle keep-alive connections: RSS ${with} KiB, $(( (with - idle) / n )) KiB per connection above idle"
  echo >&3
  exec 3>&-
  wait "$client" || true
  sleep 1
done
