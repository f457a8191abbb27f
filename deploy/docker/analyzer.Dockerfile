# syntax=docker/dockerfile:1.7
# Fleetpulse analyzer image: HTTP API, dashboard, /healthz /readyz /metrics on 7602.
# Build from the repository root:
#   docker build -f deploy/docker/analyzer.Dockerfile -t fleetpulse/analyzer .
# The web dashboard is built with npm in the first stage and embedded into the binary (nothing
# is loaded from elsewhere at run time). Configure with FLEETPULSE_ANALYZER_* variables
# (`fleetpulse-analyzer serve --help`) and, for alerts and destinations, a TOML file
# (FLEETPULSE_ANALYZER_CONFIG, see deploy/analyzer.toml).
ARG NODE_IMAGE=node:22-bookworm-slim
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${NODE_IMAGE} AS web
WORKDIR /web
COPY analyzer/web/package.json analyzer/web/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY analyzer/web/ ./
RUN npm run build

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# analyzer/build.rs embeds analyzer/web/dist/ when it holds index.html.
COPY --from=web /web/dist analyzer/web/dist
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p fleetpulse-analyzer --bin fleetpulse-analyzer \
    && install -D -m 0755 target/release/fleetpulse-analyzer /out/fleetpulse-analyzer

FROM ${RUNTIME_IMAGE}
# ca-certificates: TLS to ClickHouse, PostgreSQL and alert destinations (Slack, PagerDuty...).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fleetpulse \
    && useradd --system --uid 10001 --gid fleetpulse --home-dir /var/lib/fleetpulse \
        --shell /usr/sbin/nologin fleetpulse \
    && install -d -o fleetpulse -g fleetpulse -m 0700 /var/lib/fleetpulse
COPY --from=build /out/fleetpulse-analyzer /usr/local/bin/fleetpulse-analyzer
USER 10001:10001
WORKDIR /var/lib/fleetpulse
ENV FLEETPULSE_ANALYZER_LISTEN=0.0.0.0:7602 \
    FLEETPULSE_ANALYZER_DATABASE_URL=sqlite:///var/lib/fleetpulse/analyzer.db
EXPOSE 7602
VOLUME ["/var/lib/fleetpulse"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7602 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["fleetpulse-analyzer"]
CMD ["serve"]
