#!/bin/sh
# Runs the C++ trainer benchmark and the PyTorch reference side by side, then an end-to-end
# isoflop-train run (tokens/s from its metrics). Usage: bench/trainer/run.sh [BUILD_DIR]
# [THREADS] [STEPS]. Figures drift with machine load: compare lines from the same invocation.
set -eu
build=${1:-build}
threads=${2:-2}
steps=${3:-60}
here=$(dirname "$0")
# Alternate C++ and Python twice so a load change on a shared machine hits both sides.
for round in 1 2; do
  echo "== round $round"
  "$build/bin/trainer_bench" "$threads" "$steps"
  /usr/bin/python3 "$here/torch_reference.py" "$threads" "$steps"
done
out=$(mktemp -d)
"$build/bin/isoflop-train" --out "$out/run" --quiet --tokens 3e5 --threads "$threads" \
  --eval-interval 100000 --eval-tokens 4096
printf 'isoflop-train medium (2x64) end to end: '
tail -n 2 "$out/run/metrics.jsonl" | head -n 1 | sed 's/.*"tokens_per_s":\([0-9.]*\).*/\1 tokens\/s/'
rm -rf "$out"
