#!/usr/bin/env bash
# Long coverage-guided fuzzing runs (cargo-fuzz / libFuzzer, nightly) of every target in fuzz/,
# for the figures in BENCHMARKS.md ("Fuzzing"). Not part of CI (CI replays the seed corpus and
# mutates it on stable: tests/tests/fuzz_corpus.rs).
#
# Builds the targets without a sanitizer (`-s none`: coverage guidance, panics, integer
# overflow only where the code checks it, OOM via -rss_limit_mb, hangs via -timeout), then runs
# them LANES at a time under `nice -n 10`, each up to RUNS executions. With DEADLINE (Unix
# seconds) each target's time is capped so that the lane ends by then: what ran is reported
# either way. New inputs go to a scratch corpus under WORK (the committed seeds in
# fuzz/corpus/<target> are read, never written); crashes, timeouts and OOMs to WORK/artifacts.
# Prints one Markdown table row per target (also appended to WORK/summary.md).
#
# Usage: scripts/fuzz-run.sh [TARGET...]          (default: every target in fuzz/fuzz_targets)
# Environment:
#   RUNS      executions per target (default 10000000)
#   LANES     targets run at the same time (default 2)
#   DEADLINE  Unix time by which every lane must end (default: none)
#   WORK      scratch directory (default /tmp/fleetpulse-fuzz)
#   BUILD     0 to run the targets as last built (default 1: build first)
#   MAX_LEN   libFuzzer -max_len for the parsers (default 16384; the Push targets use 66000,
#             just over their 64 KiB max_batch_bytes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs="${RUNS:-10000000}"
lanes="${LANES:-2}"
deadline="${DEADLINE:-0}"
work="${WORK:-/tmp/fleetpulse-fuzz}"
max_len="${MAX_LEN:-16384}"

if (($# > 0)); then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "${f}" .rs)")
    done
fi

if [[ "${BUILD:-1}" != 0 ]]; then
    cargo +nightly fuzz build --fuzz-dir fuzz -s none -O
fi
bin_dir="fuzz/target/x86_64-unknown-linux-gnu/release"
mkdir -p "${work}/logs"

# One target: runs it, then prints its table row.
run_one() {
    local target="$1" cap="$2"
    local len="${max_len}"
    [[ "${target}" == push_* ]] && len=66000
    mkdir -p "${work}/corpus/${target}" "${work}/artifacts/${target}"
    local log="${work}/logs/${target}.log"
    local args=(-runs="${runs}" -rss_limit_mb=2048 -timeout=10 -max_len="${len}"
        -print_final_stats=1 -artifact_prefix="${work}/artifacts/${target}/")
    ((cap > 0)) && args+=(-max_total_time="${cap}")
    local start=$SECONDS status=0
    nice -n 10 "${bin_dir}/${target}" "${args[@]}" \
        "${work}/corpus/${target}" "fuzz/corpus/${target}" >"${log}" 2>&1 || status=$?
    local wall=$((SECONDS - start))
    local execs rate rss cov ft corpus findings
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "${log}" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "${log}" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "${log}" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "${log}" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "${log}" | tail -1 | cut -d' ' -f2)
    corpus=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "${log}" | tail -1 | cut -d' ' -f2)
    findings=$(find "${work}/artifacts/${target}" -type f | wc -l)
    local row="| ${target} | ${execs:-?} | ${rate:-?} | ${wall} | ${rss:-?} | ${corpus:-?} | ${cov:-?} / ${ft:-?} | ${findings} (exit ${status}) |"
    echo "${row}" | tee -a "${work}/summary.md"
}

# Lane i takes targets i, i+lanes, ...; each target gets an equal share of what is left of the
# lane's time.
lane() {
    local i="$1" mine=() k
    for ((k = i; k < ${#targets[@]}; k += lanes)); do
        mine+=("${targets[k]}")
    done
    local left=${#mine[@]} cap
    for t in "${mine[@]}"; do
        cap=0
        if ((deadline > 0)); then
            cap=$(((deadline - $(date +%s)) / left))
            ((cap < 1)) && cap=1
        fi
        run_one "${t}" "${cap}"
        left=$((left - 1))
    done
}

echo "| target | executions | exec/s | wall (s) | peak RSS (MB) | corpus (units/size) | cov / ft | crashes, timeouts, OOMs |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
pids=()
for ((i = 0; i < lanes; i++)); do
    lane "${i}" &
    pids+=($!)
done
for p in "${pids[@]}"; do
    wait "${p}"
done
