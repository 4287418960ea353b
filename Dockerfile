# syntax=docker/dockerfile:1
# The line above selects a Dockerfile frontend that knows `RUN --mount` and
# `COPY --chmod`; both need BuildKit (the default builder since Docker 23).
#
#   docker build -t sidecache .
#   docker run --rm -p 8080:8080 -p 9901:9901 -e SIDECACHE_ADMIN_TOKEN=... \
#     -v $PWD/my.yaml:/etc/sidecache/sidecache.yaml:ro sidecache
#   docker run --rm -v $PWD/my.yaml:/etc/sidecache/sidecache.yaml:ro sidecache check
#
# The built-in demo config expects its backend on 127.0.0.1:3000 and binds the
# admin listener to 127.0.0.1:9901, inside the container: mount your own with
# the backend's address, and with `admin.listen: 0.0.0.0:9901` and a token for
# -p 9901 to reach it. deploy/kubernetes/ runs the image as a sidecar.
#
# Expected size (no image was built here): about 46 MB uncompressed, that is
# gcr.io/distroless/cc-debian12 at about 23 MB plus the release binary at
# 23.0 MB once its debug info is stripped (measured 2026-12-08:
# `cargo build --release && strip --strip-debug target/release/sidecache`
# gave 23,000,632 bytes, 8.6 MB gzipped; cargo leaves it at 93 MB, most of it
# the line tables the release profile keeps; a full `strip` would take it
# to 19.1 MB but lose the symbols a panic's backtrace names).

# ---- build -----------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src

# Dependencies are cached with BuildKit cache mounts rather than a dummy-main
# layer: the crate has a library and two binaries and will grow benches and
# tests, and a dummy build would need a stub for every target Cargo.toml
# declares. The registry and target/ persist between builds on one builder, so
# a source change recompiles only this crate (an ephemeral CI builder starts
# cold unless it exports its cache). The whole context is copied (see
# .dockerignore) so that every target Cargo.toml names is present.
COPY . .

# Cargo judges this crate fresh by comparing file mtimes with what target/
# holds, and files from the build context can be older than a cached build (a
# checkout of an older commit, mtimes restored by CI): touching the crate roots
# always recompiles sidecache itself, never its dependencies.
# target/ is a cache mount, not part of the image layer, so the binary is
# copied out of it in the same step. `--locked` builds exactly Cargo.lock.
# The copy loses its debug info (the line tables that the release profile's
# `debug = "line-tables-only"` keeps: three quarters of the file) but keeps its
# symbols, so a panic's backtrace still names the functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    touch src/lib.rs src/main.rs \
 && cargo build --release --locked --bin sidecache \
 && install -m 0755 target/release/sidecache /usr/local/bin/sidecache \
 && strip --strip-debug /usr/local/bin/sidecache

# ---- run -------------------------------------------------------------------
# distroless/cc-debian12 rather than debian:bookworm-slim: it holds what a Rust
# binary linked against glibc needs (glibc, libgcc_s for unwinding, plus
# ca-certificates and tzdata) but no shell and no package manager, so there is
# less to patch and less to exploit. Its Debian 12 glibc matches the bookworm
# builder. sidecache needs no TLS library: Redis and the upstream are plain TCP.
# For a shell while debugging, swap in the :debug-nonroot tag.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /usr/local/bin/sidecache /usr/local/bin/sidecache
# Owned by root and read-only for the service user: the process cannot change
# its own config. Mount a file over it, or set SIDECACHE_CONFIG, to use another.
COPY --chmod=0644 config/demo.yaml /etc/sidecache/sidecache.yaml

# A fixed numeric uid (not distroless's 65532) so that volume permissions and
# Kubernetes `runAsUser` / `runAsNonRoot` checks can name it; no passwd entry is
# needed for a static uid.
USER 10001:10001
ENV SIDECACHE_CONFIG=/etc/sidecache/sidecache.yaml
# 8080: the proxy; 9901: the admin API (/healthz, /readyz, /metrics, /purge).
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/sidecache"]
CMD ["run"]
