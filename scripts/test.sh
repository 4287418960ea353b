#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the
# tests need when it is missing (redis-server, which tests start their own
# servers of, and redis-cli, which joins six of them into a cluster; chromium, which loads the dashboard; promtool, from prometheus, which checks /metrics; openssl, which makes the
# TLS tests' certificates; ca-certificates, the system's roots; a C linker
# for the build; procps for `kill` and `ps`; python3 with venv, and Django
# from PyPI in a venv, for the shop test; cargo-nextest), then runs the formatting and lint checks, the doc tests and every
# test.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole suite builds once: without the incremental cache (1.7 GB of the
# debug build) unless the caller asks for it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

command -v cargo >/dev/null 2>&1 || {
  echo "cargo is missing: install Rust (https://rustup.rs), then run this again" >&2
  exit 1
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# promtool checks /metrics as Prometheus reads it.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
{ command -v ps >/dev/null 2>&1 && { [ -x /bin/kill ] || [ -x /usr/bin/kill ]; }; } || missing+=(procps)
# Python with venv, for the Django shop a test puts sidecache in front of.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The system's root certificates, which the https upstream tests read.
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "missing ${missing[*]}, and not root without sudo: install them with apt-get" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  # `env` keeps DEBIAN_FRONTEND past sudo, which drops the caller's variables.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

for tool in fmt clippy; do
  cargo "$tool" --version >/dev/null 2>&1 || {
    echo "cargo $tool is missing: rustup component add $([ $tool = fmt ] && echo rustfmt || echo clippy)" >&2
    exit 1
  }
done

# Django, from PyPI, in a venv beside the build (where the test looks).
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
venv="$target/tmp/django-venv"
if ! "$venv/bin/python" -c 'import django' >/dev/null 2>&1; then
  echo "== installing Django for the shop test"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/django_shop/requirements.txt
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== doc tests"
cargo test --doc --quiet
echo "== tests"
if ! cargo nextest --version >/dev/null 2>&1; then
  # nextest runs each test in its own process, with a timeout per test
  # (.config/nextest.toml), so one hang cannot hold the run; it builds
  # from crates.io in a few minutes.
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest >/dev/null 2>&1 || {
    echo "cargo-nextest could not be installed (cargo install --locked cargo-nextest); the tests need its per-test timeout" >&2
    exit 1
  }
fi
# Last, so its summary closes the output.
cargo nextest run --lib --bins --tests --no-fail-fast
