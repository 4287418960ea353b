#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs redis-server
# and chromium when they are missing (tests start their own Redis servers,
# and load the dashboard in headless Chromium), then runs the formatting
# and lint checks and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo test --doc --quiet
  # Last, so its summary closes the output.
  cargo nextest run --lib --bins --tests --no-fail-fast
else
  # One test at a time: tests of one binary share the process's metrics.
  cargo test --lib --bins --tests -- --test-threads=1
fi
