#!/usr/bin/env bash
# Measures alerting with the simulator (issue 9, figures in BENCHMARKS.md). MODE=live (the
# default) runs the analyzer live; MODE=backtest replays stored history (see the end).
# MODE=live:
#   1. quiet: a private ClickHouse, the collector, the analyzer (webhook + TCP syslog
#      destinations pointing at local receivers started here) and `fleetpulse-agent simulate
#      --backfill` with no spike; then the live phase runs quiet for QUIET_LIVE and every
#      alert the analyzer raised is counted (expected: 0).
#   2. spikes: the same stack keeps running; a second simulate run (live only) injects SPIKES
#      one after the other (each category a new alert key) and writes their starts to
#      --spike-report. Detection delay = first arrival of that category's `firing` at the
#      webhook / syslog receiver minus the spike's start, in evaluation intervals, per spike
#      and tenant.
# Uses binaries in target/debug (build them first:
#   cargo build -p fleetpulse-collector -p fleetpulse-analyzer -p fleetpulse-agent --bins).
# Everything lives under a fresh directory in /tmp on free ports; all processes started here
# are stopped on exit. Results: $DIR/result.txt.
#
# Live mode evaluates the current window only, so the backfill serves as the baseline
# (rolling 24 h when fewer than 2 seasonal weeks exist); 26 h keep the run to minutes.
# MODE=backtest: three simulated fleets of different sizes (2 x 4000, 2 x 400 and one 40-device
#   tenant; 1, 0.1 and 0.01 sessions/s) generate BT_DAYS of history as fast as the collector
#   takes it (`simulate --backfill --duration 0s`): a warm-up day (the rolling baseline), a quiet
#   week, then BT_SPIKES spikes (x10, 30 min, every 4 h, categories in turn) in the two larger
#   fleets, written to --spike-report. `fleetpulse-analyzer alerts backtest` (the live
#   evaluator at the default 60 s cadence and 5 min window, all_tenants on, nothing sent) then
#   replays the quiet week and the spike days. Results: false alerts per tenant in the quiet
#   week; per spike and tenant the delay from its start to the tick that fired, in intervals.
#   Environment: BT_DAYS [10], BT_SPIKES [12], BT_QUIET_DAYS [7], BT_SEED [42] (the three
#   fleets use BT_SEED, +1, +2), BT_CONFIG (extra TOML lines for [alerts], e.g. knobs to
#   compare), BT_GENERATE_ONLY=1 (stop after generating; the history stays in $DIR),
#   BT_REUSE=DIR (skip generation: replay the history a previous run left in DIR, so that
#   detector changes are compared on the same events), BT_PARALLEL [8] (chunks replayed at
#   once, `alerts backtest --parallel`).
# Environment (all optional): DEVICES [2000], RATE sessions/s weekly average [4], BACKFILL [26h],
#   EVAL evaluation interval [20s], WINDOW [1m], QUIET_LIVE seconds [180],
#   SPIKES [license:x20 network:x20 certificate:x20 device_limit:x20] (one after the other, each
#   SPIKE_GAP-20 s long), SPIKE_GAP seconds between spike starts [90], BIN [target/debug]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
BIN="${BIN:-${ROOT}/target/debug}"
DEVICES="${DEVICES:-2000}"
RATE="${RATE:-4}"
BACKFILL="${BACKFILL:-26h}"
EVAL="${EVAL:-20s}"
WINDOW="${WINDOW:-1m}"
QUIET_LIVE="${QUIET_LIVE:-180}"
SPIKES="${SPIKES:-license:x20 network:x20 certificate:x20 device_limit:x20}"
SPIKE_GAP="${SPIKE_GAP:-90}"
if [[ -n "${BT_REUSE:-}" ]]; then
    DIR="${BT_REUSE}"
    [[ -s "${DIR}/history.env" ]] || { echo "alert-demo: ${DIR}/history.env missing: not a generated history" >&2; exit 1; }
else
    DIR=$(mktemp -d /tmp/fp-alert-demo.XXXXXX)
fi
LOGS="${DIR}/logs"
mkdir -p "${LOGS}"
export NO_COLOR=1
log() { echo "alert-demo: $(date -u +%H:%M:%S) $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() {
    trap - EXIT INT TERM
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${pid}" 2>/dev/null || true
        wait "${pid}" 2>/dev/null || true
    done
    log "stopped everything; logs in ${LOGS}"
}
trap cleanup EXIT INT TERM
start() {
    local name=$1
    shift
    "$@" >"${LOGS}/${name}.log" 2>&1 &
    pids+=($!)
}
wait_for() {
    local timeout=$1
    shift
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

CH_HTTP=$(free_port) CH_TCP=$(free_port) GRPC=$(free_port) CHTTP=$(free_port)
APORT=$(free_port) HOOK=$(free_port) SYSLOG=$(free_port)

# ---- receivers: every arrival with its receive time (RFC 3339, UTC) ----
touch "${DIR}/webhook.log" "${DIR}/syslog.log"
start receivers python3 "${ROOT}/scripts/alert-receivers.py" "${DIR}" "" "${HOOK}" "${SYSLOG}"

# ---- ClickHouse (as scripts/run.sh starts it) ----
CH_DIR="${DIR}/clickhouse"
mkdir -p "${CH_DIR}/data/tmp" "${CH_DIR}/data/user_files"
cp /etc/clickhouse-server/users.xml "${CH_DIR}/users.xml"
sed -e "0,/<path>[^<]*<\/path>/s##<path>${CH_DIR}/data/</path>#" \
    -e "s#<tmp_path>[^<]*</tmp_path>#<tmp_path>${CH_DIR}/data/tmp/</tmp_path>#" \
    -e "s#<user_files_path>[^<]*</user_files_path>#<user_files_path>${CH_DIR}/data/user_files/</user_files_path>#" \
    -e "s#<log>[^<]*</log>#<log>${LOGS}/clickhouse-server.log</log>#" \
    -e "s#<errorlog>[^<]*</errorlog>#<errorlog>${LOGS}/clickhouse-server.err.log</errorlog>#" \
    -e "s#<http_port>[^<]*</http_port>#<http_port>${CH_HTTP}</http_port>#" \
    -e "s#<tcp_port>[^<]*</tcp_port>#<tcp_port>${CH_TCP}</tcp_port>#" \
    -e "/^[[:space:]]*<interserver_http_port>/d" \
    -e "/^[[:space:]]*<format_schema_path>/d" \
    -e "/^[[:space:]]*<listen_host>::1<\/listen_host>/d" \
    /etc/clickhouse-server/config.xml >"${CH_DIR}/config.xml"
log "ClickHouse on ${CH_TCP}/${CH_HTTP}, data in ${CH_DIR}"
start clickhouse clickhouse-server --config-file="${CH_DIR}/config.xml"
wait_for 60 clickhouse-client --host 127.0.0.1 --port "${CH_TCP}" -q 'SELECT 1' || die "ClickHouse did not start"
CH_URL="http://127.0.0.1:${CH_HTTP}"

# ---- collector (not needed to replay a kept history) ----
if [[ -z "${BT_REUSE:-}" ]]; then
    export FLEETPULSE_COLLECTOR_DATABASE_URL="sqlite://${DIR}/collector.db"
    export FLEETPULSE_COLLECTOR_CLICKHOUSE_URL="${CH_URL}"
    export FLEETPULSE_COLLECTOR_CLICKHOUSE_DATABASE=fleetpulse
    start collector "${BIN}/fleetpulse-collector" serve --grpc-listen "127.0.0.1:${GRPC}" \
        --http-listen "127.0.0.1:${CHTTP}" --ready-file "${DIR}/collector.ready"
    wait_for 60 test -s "${DIR}/collector.ready" || die "collector not ready (${LOGS}/collector.log)"
    token() {
        local t
        t=$("${BIN}/fleetpulse-collector" token create --tenant "$1" --description alert-demo 2>>"${LOGS}/cli.log" | head -n1)
        [[ "${t}" == fpe_* ]] || die "no token for $1"
        echo "${t}"
    }
fi

if [[ "${MODE:-live}" == backtest ]]; then
    BT_DAYS="${BT_DAYS:-10}"
    BT_SPIKES="${BT_SPIKES:-12}"
    BT_QUIET_DAYS="${BT_QUIET_DAYS:-7}"
    BT_SEED="${BT_SEED:-42}"
    if [[ -z "${BT_REUSE:-}" ]]; then
        cats=(license network certificate device_limit tenant_config autopilot)
        spikes=()
        for ((k = 0; k < BT_SPIKES; k++)); do
            # After the warm-up day and the quiet week; 4 h apart, at an odd minute and second.
            off=$(((1 + BT_QUIET_DAYS) * 86400 + 3600 + k * 4 * 3600 + (k * 7 % 60) * 60 + k * 13 % 60))
            spikes+=(--spike "${cats[$((k % ${#cats[@]}))]}:x10@${off}+30m")
        done
        big="$(token big1),$(token big2)"
        mid="$(token mid1),$(token mid2)"
        tiny="$(token tiny1)"
        # A fixed, hour-aligned start: the same seeds give the same events, and the replay
        # windows are exact.
        start0=$((($(date -u +%s) / 3600 - 1) * 3600 - BT_DAYS * 86400))
        start_at=$(date -u -d "@${start0}" +%Y-%m-%dT%H:%M:%SZ)
        log "backtest: generating ${BT_DAYS}d of history from ${start_at}, seeds ${BT_SEED}+ (fleets 2x4000, 2x400, 1x40 devices; ${BT_SPIKES} spikes after day $((1 + BT_QUIET_DAYS)))"
        sims=()
        sim() {
            local name=$1
            shift
            "${BIN}/fleetpulse-agent" simulate --collector "http://127.0.0.1:${GRPC}" --backfill "${BT_DAYS}d" \
                --start-at "${start_at}" --duration 0s --drain-timeout 1800s --tenant-profiles typical,typical \
                --spool-dir "${DIR}/fleet-${name}" "$@" >"${LOGS}/fleet-${name}.log" 2>&1 &
            pids+=($!)
            sims+=($!)
        }
        sim big --enrollment-token "${big}" --devices 8000 --rate 1 --seed "${BT_SEED}" "${spikes[@]}" --spike-report "${DIR}/spikes-big.json"
        sim mid --enrollment-token "${mid}" --devices 800 --rate 0.1 --seed $((BT_SEED + 1)) "${spikes[@]}" --spike-report "${DIR}/spikes-mid.json"
        sim tiny --enrollment-token "${tiny}" --devices 40 --rate 0.01 --seed $((BT_SEED + 2))
        started=$(date -u +%s)
        for p in "${sims[@]}"; do wait "${p}" || die "simulate failed (${LOGS}/fleet-*.log)"; done
        touch "${DIR}/spikes-big.json" "${DIR}/spikes-mid.json"
        log "backtest: history generated in $(($(date -u +%s) - started)) s"
        printf 'start0=%s\nBT_DAYS=%s\nBT_QUIET_DAYS=%s\nBT_SEED=%s\n' "${start0}" "${BT_DAYS}" "${BT_QUIET_DAYS}" "${BT_SEED}" >"${DIR}/history.env"
        [[ "${BT_GENERATE_ONLY:-0}" == 1 ]] && { log "history kept in ${DIR} (replay with BT_REUSE=${DIR})"; exit 0; }
    fi
    # shellcheck disable=SC1091
    . "${DIR}/history.env"
    iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
    RUN="${DIR}/run-$(date -u +%H%M%S)"
    mkdir -p "${RUN}"
    cat >"${RUN}/analyzer.toml" <<EOF2
clickhouse_url = "${CH_URL}"
clickhouse_database = "fleetpulse"
database_url = "sqlite://${RUN}/analyzer.db"
[alerts]
all_tenants = true
${BT_CONFIG:-}
EOF2
    bt() {
        local name=$1 from=$2 to=$3
        local s
        s=$(date -u +%s)
        RUST_LOG=warn,fleetpulse_analyzer::alerts::evaluator=info "${BIN}/fleetpulse-analyzer" alerts backtest --config "${RUN}/analyzer.toml" --json --parallel "${BT_PARALLEL:-8}" \
            --from "$(iso "${from}")" --to "$(iso "${to}")" >"${RUN}/backtest-${name}.json" 2>"${RUN}/backtest-${name}.log" ||
            die "backtest ${name} failed (${RUN}/backtest-${name}.log)"
        log "backtest ${name}: $(tail -n1 "${RUN}/backtest-${name}.log") in $(($(date -u +%s) - s)) s"
    }
    # Migrations once (two backtests applying them at the same time would race), then the
    # quiet week and the spike days in parallel (two cores).
    "${BIN}/fleetpulse-analyzer" migrate --config "${RUN}/analyzer.toml" >"${RUN}/migrate.log" 2>&1 ||
        die "migrate failed (${RUN}/migrate.log)"
    bt quiet $((start0 + 86400)) $((start0 + (1 + BT_QUIET_DAYS) * 86400)) &
    q=$!
    if ((BT_DAYS > 1 + BT_QUIET_DAYS)); then
        # The generated sessions are cut off at the history's end (no retry or success
        # follows the last failures), so the replay stops an hour before it.
        bt spikes $((start0 + (1 + BT_QUIET_DAYS) * 86400)) $((start0 + BT_DAYS * 86400 - 3600)) &
        b=$!
        wait "${b}" || die "spike backtest failed"
    fi
    wait "${q}" || die "quiet backtest failed"
    python3 "${ROOT}/scripts/alert-backtest-report.py" "${DIR}" "${RUN}" "${BT_QUIET_DAYS}" | tee "${RUN}/result.txt"
    exit 0
fi

# Two tenants in the simulator's default time zones (UTC-5, UTC+1), so one of them is in its
# working day at most hours of a weekday.
TOKENS=""
for tenant in contoso fabrikam; do
    t=$("${BIN}/fleetpulse-collector" token create --tenant "${tenant}" --description alert-demo 2>>"${LOGS}/cli.log" | head -n1)
    [[ "${t}" == fpe_* ]] || die "no token for ${tenant}"
    TOKENS="${TOKENS:+${TOKENS},}${t}"
done

# ---- analyzer: webhook + TCP syslog (CEF) ----
cat >"${DIR}/analyzer.toml" <<EOF
clickhouse_url = "${CH_URL}"
clickhouse_database = "fleetpulse"
database_url = "sqlite://${DIR}/analyzer.db"
listen = "127.0.0.1:${APORT}"
[alerts]
evaluation_interval = "${EVAL}"
window = "${WINDOW}"
[[destinations]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:${HOOK}/hook"
secret = "alert-demo"
[[destinations]]
name = "siem"
kind = "syslog"
address = "tcp://127.0.0.1:${SYSLOG}"
format = "cef"
records = ["alerts"]
EOF
start analyzer "${BIN}/fleetpulse-analyzer" serve --config "${DIR}/analyzer.toml" --ready-file "${DIR}/analyzer.ready"
wait_for 90 test -s "${DIR}/analyzer.ready" || die "analyzer not ready (${LOGS}/analyzer.log)"
alerts_fired() {
    FLEETPULSE_ANALYZER_DATABASE_URL="sqlite://${DIR}/analyzer.db" \
        "${BIN}/fleetpulse-analyzer" alerts list --status all 2>>"${LOGS}/cli.log" || true
}

# ---- 1. quiet: backfill, then QUIET_LIVE seconds live, no spike ----
log "quiet run: ${DEVICES} devices, rate ${RATE}/s, backfill ${BACKFILL}, then ${QUIET_LIVE}s live (eval ${EVAL}, window ${WINDOW})"
quiet_start=$(date -u +%s)
"${BIN}/fleetpulse-agent" simulate --collector "http://127.0.0.1:${GRPC}" --enrollment-token "${TOKENS}" \
    --devices "${DEVICES}" --rate "${RATE}" --tenant-profiles typical,typical --backfill "${BACKFILL}" \
    --duration "${QUIET_LIVE}s" --seed 42 --spool-dir "${DIR}/fleet" >"${LOGS}/fleet-quiet.log" 2>&1 &
sim=$!
pids+=("${sim}")
# (in the background, so that Ctrl-C reaches the trap at once)
wait "${sim}" || die "quiet simulate failed (${LOGS}/fleet-quiet.log)"
quiet_end=$(date -u +%s)
alerts_fired >"${DIR}/alerts-quiet.txt"
quiet_hooks=$(wc -l <"${DIR}/webhook.log")
quiet_syslog=$(wc -l <"${DIR}/syslog.log")
evals=$(curl -s "http://127.0.0.1:${APORT}/metrics" | awk '/^fleetpulse_alert_evaluations_total/ {s+=$2} END {print s+0}')
log "quiet run: $((quiet_end - quiet_start)) s, webhook arrivals ${quiet_hooks}, syslog arrivals ${quiet_syslog}, evaluations ${evals}"

# ---- 2. spikes, live: one category after the other, each a new key ----
spike_args=()
k=0
for c in ${SPIKES}; do
    spike_args+=(--spike "${c}@$((k * SPIKE_GAP))s+$((SPIKE_GAP - 20))s")
    k=$((k + 1))
done
live_for=$((k * SPIKE_GAP + 30))
log "spike run: ${SPIKES} every ${SPIKE_GAP}s, live for ${live_for}s"
"${BIN}/fleetpulse-agent" simulate --collector "http://127.0.0.1:${GRPC}" --enrollment-token "${TOKENS}" \
    --devices "${DEVICES}" --rate "${RATE}" --tenant-profiles typical,typical --duration "${live_for}s" \
    --seed 43 --spool-dir "${DIR}/fleet" "${spike_args[@]}" --spike-report "${DIR}/spikes.json" \
    >"${LOGS}/fleet-spike.log" 2>&1 &
sim=$!
pids+=("${sim}")
wait "${sim}" || log "spike simulate ended with an error (${LOGS}/fleet-spike.log)"
sleep 2
alerts_fired >"${DIR}/alerts-all.txt"

python3 - "${DIR}" "${EVAL%s}" "${quiet_hooks}" "${quiet_syslog}" <<'EOF2' | tee "${DIR}/result.txt"
import datetime, json, re, sys
d, ev, qh, qs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def ts(s):
    base = datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    frac = s[19:].rstrip("Z").split("+")[0]
    return base + (float(frac) if frac.startswith(".") else 0.0)
def arrivals(kind, skip):
    out = []
    for line in open(f"{d}/{kind}.log").read().splitlines()[skip:]:
        t, body = line.split("\t", 1)
        out.append((ts(t), eval(body)))
    return out
print(f"evaluation interval {ev:.0f} s")
print(f"quiet run: {qh} webhook and {qs} syslog arrivals")
# The simulator's category names where the analyzer's catalog names them differently.
CAT = {"device_limit": "device_cap", "tpm_attestation": "tpm", "platform_restricted": "platform_blocked"}
hooks = arrivals("webhook", qh)
syslog = arrivals("syslog", qs)
delays = []
for line in open(f"{d}/spikes.json"):
    s = json.loads(line)
    start = ts(s["start"])
    s["category"] = CAT.get(s["category"], s["category"])
    for tenant in ("contoso", "fabrikam"):
        h = [(t, json.loads(b)) for t, b in hooks]
        h = [(t, b) for t, b in h if b.get("tenant") == tenant and b.get("category") == s["category"] and b.get("kind") == "firing" and t >= start]
        y = [t for t, b in syslog if f"cs1={tenant} " in b and f"cat={s['category']} " in b and "act=firing" in b and t >= start]
        if not h:
            print(f"{s['category']} x{s['multiplier']} {tenant}: no webhook arrival"); continue
        t, b = h[0]
        delay = t - start
        delays.append(delay / ev)
        ok = all(k in json.dumps(b) for k in ('"cause"', '"concentration"', '"remediation"'))
        conc = ", ".join(f"{c['dimension']}={c['value']} {c['share']:.0%}" for c in b.get("concentration", [])[:2])
        print(f"{s['category']} x{s['multiplier']} {tenant}: webhook {delay:.1f} s = {delay / ev:.2f} intervals, syslog "
              + (f"{y[0] - start:.1f} s" if y else "none") + f"; cause/concentration/remediation present: {ok}; {conc}")
if delays:
    delays.sort()
    print(f"delay: n={len(delays)} min {delays[0]:.2f} median {delays[len(delays) // 2]:.2f} max {delays[-1]:.2f} intervals; <= 2 intervals: {sum(x <= 2 for x in delays)}/{len(delays)}")
EOF2
