#!/usr/bin/env bash
# Runs Fleetpulse locally: installs ClickHouse if missing, builds the web dashboard and release
# binaries, starts a private ClickHouse (data under ./.fleetpulse-run/), the collector, the
# analyzer and a simulated fleet with days of history, prints where to look, ending with the
# dashboard's URL (signed in), and runs until Ctrl-C, then stops everything cleanly.
#
# Environment (all optional):
#   FLEETPULSE_RUN_DIR         state directory               [./.fleetpulse-run]
#   FLEETPULSE_CH_HTTP_PORT    ClickHouse HTTP port          [8123]
#   FLEETPULSE_CH_TCP_PORT     ClickHouse native port        [9000]
#   CLICKHOUSE_URL             use this ClickHouse instead of starting one (HTTP URL)
#   FLEETPULSE_GRPC_PORT       collector gRPC port           [7600]
#   FLEETPULSE_HTTP_PORT       collector health/metrics port [7601]
#   FLEETPULSE_ANALYZER_PORT   analyzer HTTP port            [7700]
#   FLEETPULSE_FLEET_DEVICES   simulated devices             [10000]
#   FLEETPULSE_FLEET_RATE      enrollment sessions/s, weekly average [1; 3 with the alert demo,
#                              so that a spike's first half-minute holds enough failures to be
#                              told from noise] (business hours ~2-3x;
#                              model and sources: docs/simulator.md)
#   FLEETPULSE_FLEET_BACKFILL  history generated at start    [7d; 26h with the alert demo]
#                              (0s for none)
#   FLEETPULSE_ALERT_DEMO      1: alerting demo (off by default): the analyzer evaluates at its
#                              defaults (every 60 s, 5 min window; FLEETPULSE_ALERT_DEMO_INTERVAL
#                              and _WINDOW change them) and sends to a local webhook and a syslog (CEF over TCP)
#                              receiver started here, and the fleet's licence failures spike
#                              (x20 for 15 min) FLEETPULSE_ALERT_DEMO_AFTER after launch;
#                              each arrival is logged with its time in logs/alerts-*.log
#   FLEETPULSE_ALERT_DEMO_AFTER  delay of that spike after launch [10m] (a spike reached
#                              before the backfill is generated lands in history instead)
#   FLEETPULSE_ALERT_HOOK_PORT / FLEETPULSE_ALERT_SYSLOG_PORT  the receivers' ports [7710/7714]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

RUN_DIR="${FLEETPULSE_RUN_DIR:-${ROOT}/.fleetpulse-run}"
CH_HTTP_PORT="${FLEETPULSE_CH_HTTP_PORT:-8123}"
CH_TCP_PORT="${FLEETPULSE_CH_TCP_PORT:-9000}"
GRPC_PORT="${FLEETPULSE_GRPC_PORT:-7600}"
HTTP_PORT="${FLEETPULSE_HTTP_PORT:-7601}"
ANALYZER_PORT="${FLEETPULSE_ANALYZER_PORT:-7700}"
FLEET_DEVICES="${FLEETPULSE_FLEET_DEVICES:-10000}"
ALERT_DEMO="${FLEETPULSE_ALERT_DEMO:-}"
FLEET_RATE="${FLEETPULSE_FLEET_RATE:-$([[ -n "${ALERT_DEMO}" ]] && echo 3 || echo 1)}"
# The alert demo's default history is 26 h (the rolling baseline needs 24 h), generated in a
# few minutes, so that the spike happens live rather than during the backfill's catch-up.
FLEET_BACKFILL="${FLEETPULSE_FLEET_BACKFILL:-$([[ -n "${ALERT_DEMO}" ]] && echo 26h || echo 7d)}"
ALERT_DEMO_AFTER="${FLEETPULSE_ALERT_DEMO_AFTER:-10m}"
ALERT_DEMO_INTERVAL="${FLEETPULSE_ALERT_DEMO_INTERVAL:-60s}"
ALERT_DEMO_WINDOW="${FLEETPULSE_ALERT_DEMO_WINDOW:-5m}"
ALERT_HOOK_PORT="${FLEETPULSE_ALERT_HOOK_PORT:-7710}"
ALERT_SYSLOG_PORT="${FLEETPULSE_ALERT_SYSLOG_PORT:-7714}"
DATABASE=fleetpulse
TENANTS="contoso fabrikam"
# cargo builds into CARGO_TARGET_DIR when it is set (a relative one is relative to ROOT).
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "${target_dir}" = /* ]] || target_dir="${ROOT}/${target_dir}"
BIN="${target_dir}/release"
LOGS="${RUN_DIR}/logs"

log() { echo "run: $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

bash deploy/install-deps.sh
# The dashboard first: the analyzer binary embeds analyzer/web/dist/.
# Skipped when dist/ is newer than every source of it: a rebuild rewrites dist/, which makes
# cargo recompile the analyzer (minutes in release) for the same bytes.
web_stale=yes
if [[ -f analyzer/web/dist/index.html && -d analyzer/web/node_modules ]]; then
    web_stale=$(find analyzer/web/src analyzer/web/index.html analyzer/web/package.json \
        analyzer/web/package-lock.json analyzer/web/vite.config.ts analyzer/web/tsconfig.json \
        -newer analyzer/web/dist/index.html | head -n 1) || web_stale=yes
fi
if [[ -z "${web_stale}" ]]; then
    log "the web dashboard is up to date (analyzer/web/dist)"
else
    log "building the web dashboard (npm ci, vite build)"
    (cd analyzer/web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build) >&2 ||
        die "the dashboard build failed (Node.js 20.19+ and npm are needed; see the output above)"
fi
log "building release binaries (first build takes several minutes)"
cargo build --release --workspace --bins

mkdir -p "${LOGS}"
pids=()
names=()
stopping=""
# Logs are files, not terminals.
export NO_COLOR=1

# Stops children newest first (fleet, analyzer, collector, ClickHouse) so that each one can
# flush into the next; SIGKILL only after a grace period.
cleanup() {
    trap - INT TERM EXIT
    log "stopping"
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        local pid=${pids[$i]}
        if kill -0 "${pid}" 2>/dev/null; then
            kill -TERM "${pid}" 2>/dev/null || true
            local waited=0
            while kill -0 "${pid}" 2>/dev/null && ((waited < 300)); do
                sleep 0.1
                waited=$((waited + 1))
            done
            if kill -0 "${pid}" 2>/dev/null; then
                log "${names[$i]} did not stop within 30 s; killing it"
                kill -KILL "${pid}" 2>/dev/null || true
            fi
            wait "${pid}" 2>/dev/null || true
            log "stopped ${names[$i]}"
        fi
    done
}
trap cleanup EXIT
trap 'stopping=1' INT TERM

# Each component runs in a session of its own (setsid), so a terminal's Ctrl-C reaches only
# this script, which then stops the components in order (the fleet first, ClickHouse last):
# each one can flush into the next.
start() {
    local name=$1
    shift
    setsid "$@" >"${LOGS}/${name}.log" 2>&1 &
    pids+=($!)
    names+=("${name}")
}

# Waits up to $2 seconds for command $3... to succeed while process $1 is alive.
wait_for() {
    local pid=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        kill -0 "${pid}" 2>/dev/null || return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# ---- ClickHouse ----
if [[ -n "${CLICKHOUSE_URL:-}" ]]; then
    CH_URL="${CLICKHOUSE_URL}"
    CH_CLIENT_HINT="(external ClickHouse ${CH_URL})"
    log "using ClickHouse at ${CH_URL}"
else
    CH_DIR="${RUN_DIR}/clickhouse"
    mkdir -p "${CH_DIR}/data/tmp" "${CH_DIR}/data/user_files"
    cp /etc/clickhouse-server/users.xml "${CH_DIR}/users.xml"
    # The distribution's config with private paths and ports; the first <path> is the data
    # path (a later one belongs to <distributed_ddl>). Replication/TLS ports are removed.
    sed -e "0,/<path>[^<]*<\/path>/s##<path>${CH_DIR}/data/</path>#" \
        -e "s#<tmp_path>[^<]*</tmp_path>#<tmp_path>${CH_DIR}/data/tmp/</tmp_path>#" \
        -e "s#<user_files_path>[^<]*</user_files_path>#<user_files_path>${CH_DIR}/data/user_files/</user_files_path>#" \
        -e "s#<log>[^<]*</log>#<log>${LOGS}/clickhouse-server.log</log>#" \
        -e "s#<errorlog>[^<]*</errorlog>#<errorlog>${LOGS}/clickhouse-server.err.log</errorlog>#" \
        -e "s#<http_port>[^<]*</http_port>#<http_port>${CH_HTTP_PORT}</http_port>#" \
        -e "s#<tcp_port>[^<]*</tcp_port>#<tcp_port>${CH_TCP_PORT}</tcp_port>#" \
        -e "/^[[:space:]]*<interserver_http_port>/d" \
        -e "/^[[:space:]]*<format_schema_path>/d" \
        -e "/^[[:space:]]*<listen_host>::1<\/listen_host>/d" \
        /etc/clickhouse-server/config.xml >"${CH_DIR}/config.xml"
    if clickhouse-client --host 127.0.0.1 --port "${CH_TCP_PORT}" -q 'SELECT 1' >/dev/null 2>&1; then
        die "something already answers on ClickHouse port ${CH_TCP_PORT}; set CLICKHOUSE_URL to use it or FLEETPULSE_CH_HTTP_PORT/FLEETPULSE_CH_TCP_PORT to pick free ports"
    fi
    log "starting ClickHouse (HTTP ${CH_HTTP_PORT}, native ${CH_TCP_PORT}, data ${CH_DIR}/data)"
    start clickhouse clickhouse-server --config-file="${CH_DIR}/config.xml"
    wait_for "${pids[-1]}" 60 clickhouse-client --host 127.0.0.1 --port "${CH_TCP_PORT}" -q 'SELECT 1' ||
        die "ClickHouse did not start; see ${LOGS}/clickhouse.log and ${LOGS}/clickhouse-server.err.log"
    CH_URL="http://127.0.0.1:${CH_HTTP_PORT}"
    CH_CLIENT_HINT="clickhouse-client --port ${CH_TCP_PORT}"
fi

# ---- collector ----
export FLEETPULSE_COLLECTOR_DATABASE_URL="sqlite://${RUN_DIR}/collector.db"
export FLEETPULSE_COLLECTOR_CLICKHOUSE_URL="${CH_URL}"
export FLEETPULSE_COLLECTOR_CLICKHOUSE_DATABASE="${DATABASE}"
rm -f "${RUN_DIR}/collector.ready"
log "starting the collector (gRPC ${GRPC_PORT}, HTTP ${HTTP_PORT})"
start collector "${BIN}/fleetpulse-collector" serve \
    --grpc-listen "127.0.0.1:${GRPC_PORT}" --http-listen "127.0.0.1:${HTTP_PORT}" \
    --ready-file "${RUN_DIR}/collector.ready"
wait_for "${pids[-1]}" 60 test -s "${RUN_DIR}/collector.ready" ||
    die "the collector did not become ready; see ${LOGS}/collector.log"
# One enrollment token per demo tenant: rows of each tenant carry the tenant of its token.
TOKENS=()
for tenant in ${TENANTS}; do
    token=$("${BIN}/fleetpulse-collector" token create --tenant "${tenant}" \
        --description "scripts/run.sh demo fleet" 2>>"${LOGS}/collector-cli.log" | head -n1)
    [[ "${token}" == fpe_* ]] || die "token create did not print a token; see ${LOGS}/collector-cli.log"
    TOKENS+=("${token}")
done
printf '%s\n' "${TOKENS[@]}" >"${RUN_DIR}/demo.tokens"

# ---- alert demo receivers (FLEETPULSE_ALERT_DEMO=1) ----
# A webhook and a syslog (TCP, RFC 6587 octet counting) receiver that log every arrival with
# its receive time, and an analyzer config sending alerts to both.
ANALYZER_CONFIG=()
ALERT_NOTE="alerts demo:     FLEETPULSE_ALERT_DEMO=1 scripts/run.sh (a spike reaching a local webhook and syslog receiver); measured: scripts/alert-demo.sh"
if [[ -n "${ALERT_DEMO}" ]]; then
    log "starting the alert receivers (webhook ${ALERT_HOOK_PORT}, syslog ${ALERT_SYSLOG_PORT}; arrivals in ${LOGS}/alerts-*.log)"
    start alert-receivers python3 "${ROOT}/scripts/alert-receivers.py" "${LOGS}" alerts- "${ALERT_HOOK_PORT}" "${ALERT_SYSLOG_PORT}"
    cat >"${RUN_DIR}/analyzer.toml" <<TOML
[alerts]
evaluation_interval = "${ALERT_DEMO_INTERVAL}"
window = "${ALERT_DEMO_WINDOW}"
[[destinations]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:${ALERT_HOOK_PORT}/hook"
secret = "run.sh demo"
[[destinations]]
name = "siem"
kind = "syslog"
address = "tcp://127.0.0.1:${ALERT_SYSLOG_PORT}"
format = "cef"
records = ["alerts"]
TOML
    ANALYZER_CONFIG=(--config "${RUN_DIR}/analyzer.toml")
    ALERT_NOTE="alerts demo:     licence spike ${ALERT_DEMO_AFTER} after the backfill; arrivals: tail -f ${LOGS}/alerts-webhook.log ${LOGS}/alerts-syslog.log
  alert list:      FLEETPULSE_ANALYZER_DATABASE_URL=sqlite://${RUN_DIR}/analyzer.db ${BIN}/fleetpulse-analyzer alerts list --status all"
fi

# ---- analyzer (when its serve command exists) ----
ANALYZER_NOTE="analyzer: not available in this build"
if "${BIN}/fleetpulse-analyzer" serve --help >/dev/null 2>&1; then
    rm -f "${RUN_DIR}/analyzer.ready"
    log "starting the analyzer (HTTP ${ANALYZER_PORT})"
    start analyzer env \
        FLEETPULSE_ANALYZER_CLICKHOUSE_URL="${CH_URL}" \
        FLEETPULSE_ANALYZER_CLICKHOUSE_DATABASE="${DATABASE}" \
        FLEETPULSE_ANALYZER_DATABASE_URL="sqlite://${RUN_DIR}/analyzer.db" \
        FLEETPULSE_ANALYZER_LISTEN="127.0.0.1:${ANALYZER_PORT}" \
        FLEETPULSE_ANALYZER_READY_FILE="${RUN_DIR}/analyzer.ready" \
        "${BIN}/fleetpulse-analyzer" serve "${ANALYZER_CONFIG[@]}"
    if wait_for "${pids[-1]}" 60 test -s "${RUN_DIR}/analyzer.ready"; then
        # A demo API key for all tenants, kept in the run dir (shown once by the CLI).
        if [[ ! -s "${RUN_DIR}/demo.apikey" ]]; then
            FLEETPULSE_ANALYZER_DATABASE_URL="sqlite://${RUN_DIR}/analyzer.db" \
                "${BIN}/fleetpulse-analyzer" key create --all-tenants --description "run.sh demo" \
                2>>"${LOGS}/analyzer.log" | head -n 1 >"${RUN_DIR}/demo.apikey"
        fi
        API_KEY=$(cat "${RUN_DIR}/demo.apikey")
        # The key rides in the URL fragment, which browsers never send to the server.
        DASHBOARD_URL="http://127.0.0.1:${ANALYZER_PORT}/#key=${API_KEY}"
        ANALYZER_NOTE="analyzer:        http://127.0.0.1:${ANALYZER_PORT}/api/v1/openapi.json  /healthz  (log ${LOGS}/analyzer.log)
  fleet summary:   curl -s -H 'Authorization: Bearer ${API_KEY}' 'http://127.0.0.1:${ANALYZER_PORT}/api/v1/summary?from=$(date -u -d '-1 day' +%Y-%m-%dT%H:00:00Z)&to=$(date -u -d '+1 hour' +%Y-%m-%dT%H:00:00Z)'"
    else
        ANALYZER_NOTE="analyzer: did not become ready; see ${LOGS}/analyzer.log"
        log "${ANALYZER_NOTE}"
    fi
fi

# ---- simulated fleet ----
if "${BIN}/fleetpulse-agent" simulate --help >/dev/null 2>&1; then
    log "starting the simulated fleet (fleetpulse-agent simulate: ${FLEET_DEVICES} devices, ${FLEET_RATE} sessions/s on weekly average, ${FLEET_BACKFILL} of history first; progress in ${LOGS}/fleet.log)"
    sim_tokens=$(IFS=,; echo "${TOKENS[*]}")
    # A fresh run dir gets the history; a restarted demo continues live only (the history of
    # the previous run is still stored).
    backfill="${FLEET_BACKFILL}"
    [[ -d "${RUN_DIR}/fleet" ]] && backfill=0s
    # The spike's offset counts from the start of the run, i.e. of the backfill.
    spike=()
    if [[ -n "${ALERT_DEMO}" ]]; then
        offset="${ALERT_DEMO_AFTER}"
        [[ "${backfill}" != 0s ]] && offset="${backfill}${ALERT_DEMO_AFTER}"
        spike=(--spike "license:x20@${offset}+15m")
    fi
    start fleet "${BIN}/fleetpulse-agent" simulate --collector "http://127.0.0.1:${GRPC_PORT}" \
        --enrollment-token "${sim_tokens}" --devices "${FLEET_DEVICES}" --rate "${FLEET_RATE}" \
        --agents-per-tenant 4 --backfill "${backfill}" --duration forever --seed 42 \
        --spool-dir "${RUN_DIR}/fleet" "${spike[@]}"
else
    log "starting the simulated fleet (fleetpulse-feed: 20 agents, ${FLEET_RATE} events/s)"
    start fleet "${BIN}/fleetpulse-feed" --collector "http://127.0.0.1:${GRPC_PORT}" \
        --token "${TOKENS[0]}" --agents 20 --rate "${FLEET_RATE}"
fi

cat <<EOF

Fleetpulse is running (state and logs in ${RUN_DIR}).
  collector gRPC:  127.0.0.1:${GRPC_PORT}   (enrollment tokens of tenants ${TENANTS// /, }: ${RUN_DIR}/demo.tokens)
  collector HTTP:  http://127.0.0.1:${HTTP_PORT}/healthz  /readyz  /metrics
  ${ANALYZER_NOTE}
  ${ALERT_NOTE}
  ClickHouse:      ${CH_URL}  (database '${DATABASE}')
Events arriving (run it twice, a few seconds apart):
  ${CH_CLIENT_HINT} -q "SELECT tenant, outcome, count() AS events, max(received_at) AS last FROM ${DATABASE}.enrollment_events GROUP BY tenant, outcome ORDER BY events DESC"
Logs:
  ${LOGS}/collector.log  ${LOGS}/fleet.log  ${LOGS}/clickhouse-server.err.log
Press Ctrl-C to stop everything.
EOF
if [[ -n "${DASHBOARD_URL:-}" ]]; then
    cat <<EOF

Open the fleet dashboard, signed in with the demo key (the ${FLEET_BACKFILL} of simulated history
appear while the backfill runs; progress in ${LOGS}/fleet.log):
  ${DASHBOARD_URL}
EOF
fi

# Run until Ctrl-C/SIGTERM (the EXIT trap stops everything), or until a component dies (its
# log says why).
while [[ -z "${stopping}" ]]; do
    for i in "${!pids[@]}"; do
        if [[ -z "${stopping}" ]] && ! kill -0 "${pids[$i]}" 2>/dev/null; then
            wait "${pids[$i]}" && status=0 || status=$?
            die "${names[$i]} exited (status ${status}); see ${LOGS}/${names[$i]}.log"
        fi
    done
    sleep 1 || true
done
exit 0
