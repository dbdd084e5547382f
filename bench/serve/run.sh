#!/bin/sh
# Dashboard API latency over a store the size of a live sweep's (dense and MoE metrics).
# Usage: bench/serve/run.sh [BUILD_DIR] [RUNS] [ROWS] [REPEATS]
set -eu
build=${1:-build}
"$build/bin/series_bench" "${2:-40}" "${3:-5000}" "${4:-7}"
