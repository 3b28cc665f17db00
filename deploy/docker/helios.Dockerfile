# syntax=docker/dockerfile:1.7
# The appliance `helios` (bid port 8080, admin port 9100). Build from the repository root:
#   docker build -f deploy/docker/helios.Dockerfile -t helios:dev .
# Stage 1 compiles with the workspace's toolchain (librdkafka is built from source by rdkafka's
# cmake-build feature, hence cmake and the -dev packages); stage 2 is Debian slim with only the
# shared libraries the binary links (libcurl for librdkafka, zlib), run as an unprivileged user.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make pkg-config libcurl4-openssl-dev libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p helios-appliance --bin helios \
 && objcopy --strip-debug target/release/helios /helios

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcurl4 zlib1g tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 helios \
 && useradd --system --uid 10001 --gid helios --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin helios \
 && install -d -o helios -g helios -m 0750 /var/lib/helios
COPY --from=build /helios /usr/local/bin/helios
# Event spool and other node state (a volume on Kubernetes).
VOLUME ["/var/lib/helios"]
WORKDIR /var/lib/helios
USER 10001:10001
# The admin port listens on 127.0.0.1 unless HELIOS_ADMIN_LISTEN says otherwise (the pod IP on
# Kubernetes, for the kubelet's probes and Prometheus).
ENV HELIOS_SERVER_LISTEN=0.0.0.0:8080
EXPOSE 8080 9100
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/helios"]
