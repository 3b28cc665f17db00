# syntax=docker/dockerfile:1.7
# The Kafka-compatible broker Tansu (crates.io), with the SQLite (libsql) storage engine that keeps
# data and committed offsets across restarts (see /work/shared/PLATFORM.md: Kafka cannot be had
# here; Tansu has no transactions). Build (no repository files needed):
#   docker build -f deploy/docker/tansu.Dockerfile -t helios-tansu:0.6.0 deploy/docker
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
ARG TANSU_VERSION=0.6.0
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo install tansu --version "${TANSU_VERSION}" --locked --features libsql,dynostore --root /out \
 && objcopy --strip-debug /out/bin/tansu

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tansu \
 && useradd --system --uid 10001 --gid tansu --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tansu \
 && install -d -o tansu -g tansu -m 0750 /var/lib/tansu
COPY --from=build /out/bin/tansu /usr/local/bin/tansu
VOLUME ["/var/lib/tansu"]
# Tansu joins a relative sqlite path onto its working directory.
WORKDIR /var/lib/tansu
USER 10001:10001
EXPOSE 9092
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/tansu", "broker"]
CMD ["--listener-url", "tcp://0.0.0.0:9092", "--storage-engine", "sqlite://tansu.db"]
