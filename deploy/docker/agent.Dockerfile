# syntax=docker/dockerfile:1.7
# Fleetpulse agent image: for the NDJSON import, the Microsoft Graph connector
# (`fleetpulse-agent graph run`) and simulated fleets (`fleetpulse-agent simulate`). On managed
# devices the agent runs as a native service instead (deploy/agent/).
# Build from the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t fleetpulse/agent .
ARG RUST_IMAGE=rust:1.95-bookworm
# Distroless: glibc and CA certificates, no shell, no package manager (~25 MB).
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p fleetpulse-agent --bin fleetpulse-agent \
    && install -D -m 0755 target/release/fleetpulse-agent /out/fleetpulse-agent \
    && install -d -m 0700 /out/state

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/fleetpulse-agent /usr/local/bin/fleetpulse-agent
# uid 10001 like the collector and analyzer images, so that volumes can be shared between
# them (the compose trial's fleet reads the enrollment tokens from the collector's volume).
COPY --from=build --chown=10001:10001 /out/state /var/lib/fleetpulse-agent
USER 10001:10001
WORKDIR /var/lib/fleetpulse-agent
ENV FLEETPULSE_AGENT_STATE_FILE=/var/lib/fleetpulse-agent/state.json \
    FLEETPULSE_AGENT_SPOOL_DIR=/var/lib/fleetpulse-agent/spool \
    FLEETPULSE_AGENT_LOG_FORMAT=json
VOLUME ["/var/lib/fleetpulse-agent"]
# `status` reads the state file and the spool's figures; it fails when the spool is unreadable.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["fleetpulse-agent", "status"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["fleetpulse-agent"]
CMD ["run"]
