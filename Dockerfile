# syntax=docker/dockerfile:1
#
# The tlsrpt binary in a small Debian image. One image serves every role: the command decides
# (`tlsrpt up`, `tlsrpt ingest`, `tlsrpt transform`, `tlsrpt query`; see docker-compose.yml).
#
#   docker build -t tlsrpt .
#   docker run --rm -p 8460:8460 -p 2525:2525 -p 8461:8461 -p 8462:8462 tlsrpt      # `up`: everything in one
#
# The first build compiles the whole dependency tree (DataFusion, bundled librdkafka): about 20
# minutes on 2 cores. Later builds reuse the BuildKit cache mounts below.

# ---- build -------------------------------------------------------------------------------
# The toolchain named by rust-version in Cargo.toml.
FROM rust:1.95-slim-trixie AS build

# What the native parts of the dependency tree need beyond the gcc and libc6-dev the slim image
# has. rdkafka 0.39 (default features: libz, plus zstd) builds its bundled librdkafka 2.12 with
# its own ./configure (bash) and `make libs`, not cmake; that configure refuses to go on without
# a C++ compiler, because `make libs` also builds the C++ wrapper:
#   g++          librdkafka's configure and its src-cpp/ library
#   make         `make libs`
#   pkg-config   libz-sys and librdkafka's configure find the system zlib with it
#   zlib1g-dev   the system zlib, linked dynamically (zlib1g is in every Debian image)
# zstd, lz4 (librdkafka's builtin), libdeflate, liblzma, mimalloc and ring are all compiled from
# the crates' own C sources by the `cc` crate. python3 is optional: librdkafka's configure only
# uses it for the linker script of its shared library, which tlsrpt does not link.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The release profile keeps line tables for backtraces, which makes the binary several hundred
# megabytes; the image drops them by default (backtraces then name functions, without file and
# line). `docker build --build-arg STRIP=none .` keeps them.
ARG STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP="${STRIP}" cargo build --release --locked --bin tlsrpt \
    && cp target/release/tlsrpt /usr/local/bin/tlsrpt

# ---- runtime -----------------------------------------------------------------------------
FROM debian:trixie-slim

# ca-certificates: HTTPS to a real object store (AWS S3 and the like). The binary itself needs
# only libc, libgcc_s and zlib, all part of the base image. No curl: the health checks in
# docker-compose.yml speak HTTP through bash's /dev/tcp.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tlsrpt \
    && useradd --system --uid 10001 --gid tlsrpt --home-dir /var/lib/tlsrpt --shell /usr/sbin/nologin tlsrpt \
    && install -d -o tlsrpt -g tlsrpt -m 0750 /var/lib/tlsrpt

COPY --from=build /usr/local/bin/tlsrpt /usr/local/bin/tlsrpt

# The data directory for `--data-dir` (the embedded log and tables of `up`, the refused inputs
# of `ingest`). Mount a volume here to keep it (`-v tlsrpt-data:/var/lib/tlsrpt`): a new named
# volume starts out owned by the tlsrpt user. No VOLUME line, so that transform and query, which
# keep nothing here, do not each get an anonymous volume; and no TLSRPT_DATA_DIR, so that the
# commands that take no data directory see none.
WORKDIR /var/lib/tlsrpt
USER tlsrpt:tlsrpt

# 8460 reports over HTTP (+ /healthz, /metrics), 2525 reports by SMTP, 8461 SQL over HTTP,
# 8462 Arrow Flight SQL, 8463 the transformer's /healthz and /metrics.
EXPOSE 8460 2525 8461 8462 8463

ENTRYPOINT ["tlsrpt"]
# Without a command: the whole pipeline in one process, listening on every interface (the
# defaults, 127.0.0.1, would be unreachable from outside the container). The SQL services
# then require bearer tokens, read from /etc/tlsrpt/sql-tokens.toml: mount one there
# (`docker run --rm tlsrpt:local token new --name me >> sql-tokens.toml`, then
# `-v $PWD/sql-tokens.toml:/etc/tlsrpt/sql-tokens.toml:ro`).
CMD ["up", "--data-dir", "/var/lib/tlsrpt", "--http-listen", "0.0.0.0:8460", "--smtp-listen", "0.0.0.0:2525", "--query-listen", "0.0.0.0:8461", "--flight-listen", "0.0.0.0:8462", "--sql-tokens", "/etc/tlsrpt/sql-tokens.toml"]
