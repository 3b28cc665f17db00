# syntax=docker/dockerfile:1.7
# The reporter `helios-reporter` (API and dashboard on 8090). Build from the repository root:
#   docker build -f deploy/docker/helios-reporter.Dockerfile -t helios-reporter:dev .
# Stage 1 builds the dashboard (reporter/dashboard, Vite → static files); stage 2 compiles the
# binary; stage 3 is Debian slim with the binary, the dashboard and only the shared libraries the
# binary links, run as an unprivileged user.
ARG RUST_VERSION=1.95
ARG NODE_VERSION=22
ARG DEBIAN_RELEASE=bookworm

FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS dashboard
WORKDIR /dashboard
COPY reporter/dashboard/package.json reporter/dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY reporter/dashboard/ ./
RUN npm run build

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make pkg-config libcurl4-openssl-dev libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p helios-reporter --bin helios-reporter \
 && objcopy --strip-debug target/release/helios-reporter /helios-reporter

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcurl4 zlib1g tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 helios \
 && useradd --system --uid 10001 --gid helios --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin helios
COPY --from=build /helios-reporter /usr/local/bin/helios-reporter
COPY --from=dashboard /dashboard/dist /usr/share/helios/dashboard
USER 10001:10001
ENV HELIOS_REPORTER_LISTEN=0.0.0.0:8090 \
    HELIOS_DASHBOARD_DIR=/usr/share/helios/dashboard
EXPOSE 8090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/helios-reporter"]
