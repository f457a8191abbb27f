#!/usr/bin/env bash
# Runs every Fleetpulse check: installs missing system packages (ClickHouse, PostgreSQL, a C
# compiler, Chromium, Node.js), builds the web dashboard (npm ci, type check, Vite build; the
# analyzer embeds it) and all binaries (the end-to-end tests spawn them), then formatting,
# clippy and the whole test suite (unit + end-to-end against real ClickHouse/PostgreSQL started
# by the harness, the dashboard in headless Chromium), and the offline validation of deploy/.
# Every step runs even when an earlier one fails; the exit status is non-zero when
# any failed.
#
# Environment:
#   FLEETPULSE_TEST_THREADS  parallel tests per test binary (default 4: most tests wait on
#                            servers, so twice the 2 cores of the CI machine is right)
#   CLICKHOUSE_URL           run shared-server tests against this ClickHouse instead of
#                            private ones (outage tests still start their own)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash deploy/install-deps.sh

threads="${FLEETPULSE_TEST_THREADS:-4}"
failed=()
step() {
    local name="$1"
    shift
    echo "==> ${name}: $*" >&2
    local start=$SECONDS
    if "$@"; then
        echo "==> ${name}: ok ($((SECONDS - start)) s)" >&2
    else
        echo "==> ${name}: FAILED ($((SECONDS - start)) s)" >&2
        failed+=("${name}")
    fi
}

step fmt cargo fmt --all -- --check
# deploy/: every file parses, the Helm chart renders and matches the Kubernetes schemas,
# hadolint, docker compose config (offline; flags vs --help: tests/tests/deploy_artifacts.rs).
step deploy bash deploy/validate/run.sh
# The dashboard first: `cargo build` embeds analyzer/web/dist/ when it exists.
step web bash -c 'cd analyzer/web && npm ci --no-audit --no-fund && npm run build'
if step build cargo build --workspace --bins; then
    step test cargo test --workspace --no-fail-fast -- --test-threads="${threads}"
else
    failed+=("test (skipped: build failed)")
fi
step clippy cargo clippy --workspace --all-targets -- -D warnings

if ((${#failed[@]} > 0)); then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all checks passed" >&2
