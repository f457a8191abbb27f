# syntax=docker/dockerfile:1.7
# Fleetpulse collector image: gRPC ingest on 7600, /healthz /readyz /metrics on 7601.
# Build from the repository root:
#   docker build -f deploy/docker/collector.Dockerfile -t fleetpulse/collector .
# Configure with FLEETPULSE_COLLECTOR_* variables (`fleetpulse-collector serve --help`) or a TOML
# file passed as `serve --config FILE`. The SQLite control database lives in the volume
# /var/lib/fleetpulse; several replicas need FLEETPULSE_COLLECTOR_DATABASE_URL=postgres://...
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Only the collector binary; the registry and target caches survive between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p fleetpulse-collector --bin fleetpulse-collector \
    && install -D -m 0755 target/release/fleetpulse-collector /out/fleetpulse-collector

FROM ${RUNTIME_IMAGE}
# ca-certificates: TLS to ClickHouse or PostgreSQL. bash: the health check's HTTP probe.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fleetpulse \
    && useradd --system --uid 10001 --gid fleetpulse --home-dir /var/lib/fleetpulse \
        --shell /usr/sbin/nologin fleetpulse \
    && install -d -o fleetpulse -g fleetpulse -m 0700 /var/lib/fleetpulse
COPY --from=build /out/fleetpulse-collector /usr/local/bin/fleetpulse-collector
USER 10001:10001
WORKDIR /var/lib/fleetpulse
ENV FLEETPULSE_COLLECTOR_GRPC_LISTEN=0.0.0.0:7600 \
    FLEETPULSE_COLLECTOR_HTTP_LISTEN=0.0.0.0:7601 \
    FLEETPULSE_COLLECTOR_DATABASE_URL=sqlite:///var/lib/fleetpulse/collector.db \
    FLEETPULSE_COLLECTOR_LOG_FORMAT=json
EXPOSE 7600 7601
VOLUME ["/var/lib/fleetpulse"]
# Ready = ClickHouse and the control database reachable (/readyz answers 503 otherwise).
# No curl in the image: bash's /dev/tcp sends the request.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7601 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM: stop accepting, flush pending rows, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["fleetpulse-collector"]
CMD ["serve"]
