#!/usr/bin/env bash
# Measures alerting end to end with the simulator (issue 9, figures in BENCHMARKS.md):
#   1. quiet: a private ClickHouse, the collector, the analyzer (webhook + TCP syslog
#      destinations pointing at local receivers started here) and `fleetpulse-agent simulate
#      --backfill` with no spike; then the live phase runs quiet for QUIET_LIVE and every
#      alert the analyzer raised is counted (expected: 0).
#   2. spike: the same stack keeps running; a second simulate run (live only) injects
#      `--spike SPIKE@0s` and writes its start to --spike-report. Detection delay = first
#      arrival at the webhook / syslog receiver minus the spike's start, in evaluation
#      intervals.
# Uses binaries in target/debug (build them first:
#   cargo build -p fleetpulse-collector -p fleetpulse-analyzer -p fleetpulse-agent --bins).
# Everything lives under a fresh directory in /tmp on free ports; all processes started here
# are stopped on exit. Results: $DIR/result.txt.
#
# The analyzer evaluates the current window only (there is no backtest mode), so the backfill
# serves as the baseline (rolling 24 h when fewer than 2 seasonal weeks exist); 26 h keep the
# run to minutes (a 7d backfill at RATE=4 runs ~25 min on a loaded 2-core machine).
# Environment (all optional): DEVICES [2000], RATE sessions/s weekly average [4], BACKFILL [26h],
#   EVAL evaluation interval [10s], WINDOW [1m], QUIET_LIVE seconds [180], SPIKE [license:x20],
#   SPIKE_WAIT seconds to wait for the spike's alert [120], BIN [target/debug]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
BIN="${BIN:-${ROOT}/target/debug}"
DEVICES="${DEVICES:-2000}"
RATE="${RATE:-4}"
BACKFILL="${BACKFILL:-26h}"
EVAL="${EVAL:-10s}"
WINDOW="${WINDOW:-1m}"
QUIET_LIVE="${QUIET_LIVE:-180}"
SPIKE="${SPIKE:-license:x20}"
SPIKE_WAIT="${SPIKE_WAIT:-120}"
DIR=$(mktemp -d /tmp/fp-alert-demo.XXXXXX)
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
cat >"${DIR}/receivers.py" <<'EOF'
import datetime, http.server, socketserver, sys, threading
out, hook_port, syslog_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lock = threading.Lock()
def record(kind, data):
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    with lock, open(f"{out}/{kind}.log", "a") as f:
        f.write(f"{now}\t{data.decode('utf-8', 'replace')!r}\n")
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        record("webhook", self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
class Syslog(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data: return
            record("syslog", data)
socketserver.ThreadingTCPServer.allow_reuse_address = True
threading.Thread(target=socketserver.ThreadingTCPServer(("127.0.0.1", syslog_port), Syslog).serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Hook).serve_forever()
EOF
touch "${DIR}/webhook.log" "${DIR}/syslog.log"
start receivers python3 "${DIR}/receivers.py" "${DIR}" "${HOOK}" "${SYSLOG}"

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

# ---- collector ----
export FLEETPULSE_COLLECTOR_DATABASE_URL="sqlite://${DIR}/collector.db"
export FLEETPULSE_COLLECTOR_CLICKHOUSE_URL="${CH_URL}"
export FLEETPULSE_COLLECTOR_CLICKHOUSE_DATABASE=fleetpulse
start collector "${BIN}/fleetpulse-collector" serve --grpc-listen "127.0.0.1:${GRPC}" \
    --http-listen "127.0.0.1:${CHTTP}" --ready-file "${DIR}/collector.ready"
wait_for 60 test -s "${DIR}/collector.ready" || die "collector not ready (${LOGS}/collector.log)"
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

# ---- 2. spike, live ----
log "spike run: ${SPIKE}@0s, live"
"${BIN}/fleetpulse-agent" simulate --collector "http://127.0.0.1:${GRPC}" --enrollment-token "${TOKENS}" \
    --devices "${DEVICES}" --rate "${RATE}" --tenant-profiles typical,typical --duration "${SPIKE_WAIT}s" \
    --seed 43 --spool-dir "${DIR}/fleet" --spike "${SPIKE}@0s" --spike-report "${DIR}/spikes.json" \
    >"${LOGS}/fleet-spike.log" 2>&1 &
sim=$!
pids+=("${sim}")
wait_for 30 test -s "${DIR}/spikes.json" || die "no spike report"
deadline=$((SECONDS + SPIKE_WAIT))
until [[ $(wc -l <"${DIR}/webhook.log") -gt ${quiet_hooks} && $(wc -l <"${DIR}/syslog.log") -gt ${quiet_syslog} ]]; do
    ((SECONDS < deadline)) || break
    sleep 0.2
done
kill -TERM "${sim}" 2>/dev/null || true
wait "${sim}" 2>/dev/null || true
alerts_fired >"${DIR}/alerts-all.txt"

python3 - "${DIR}" "${EVAL%s}" "${quiet_hooks}" "${quiet_syslog}" <<'EOF' | tee "${DIR}/result.txt"
import datetime, json, sys
d, ev, qh, qs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
spike = json.loads(open(f"{d}/spikes.json").readline())
start = datetime.datetime.fromisoformat(spike["start"].replace("Z", "+00:00"))
print(f"spike {spike['category']} x{spike['multiplier']} start {spike['start']}")
print(f"quiet run: {qh} webhook and {qs} syslog arrivals")
try:
    for line in open(f"{d}/webhook.log").read().splitlines()[:qh]:
        body = json.loads(eval(line.split("\t", 1)[1]))
        print(f"  quiet webhook: status={body.get('status')} tenant={body.get('tenant')} category={body.get('category')}")
except FileNotFoundError:
    pass
for kind, skip in (("webhook", qh), ("syslog", qs)):
    try:
        lines = open(f"{d}/{kind}.log").read().splitlines()[skip:]
    except FileNotFoundError:
        lines = []
    if not lines:
        print(f"{kind}: nothing arrived"); continue
    t, body = lines[0].split("\t", 1)
    delay = (datetime.datetime.fromisoformat(t) - start).total_seconds()
    print(f"{kind}: first arrival {t}, delay {delay:.1f} s = {delay/ev:.2f} evaluation intervals")
    keys = ("cause", "concentration", "remediation") if kind == "webhook" else ("msg=", "cs4Label=concentration cs4=", "reason=")
    print("  fields present: " + ", ".join(f"{k}={k in body}" for k in keys))
    print(f"  body: {body[:3000]}")
EOF
