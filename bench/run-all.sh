#!/usr/bin/env bash
# Runs every benchmark (each bench/<part>/run.sh) against a build directory and prints the
# figures. Benchmarks measure; they never fail on a timing.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
for script in bench/*/run.sh; do
  [ -x "$script" ] || continue
  echo "=== $script"
  "$script" "$BUILD_DIR"
done
