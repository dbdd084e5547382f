#!/bin/sh
# MoE throughput: dense vs 8- and 16-expert top-2 models of the same active size (whole training
# steps, tokens/s and time per active FLOP), and the MoE layer alone beside the same layer in
# PyTorch (isoflop's sorted dispatch, and Mixtral's per-expert loop as Hugging Face writes it).
# Usage: bench/moe/run.sh [BUILD_DIR] [THREADS] [STEPS]. Compare lines of the same invocation:
# figures drift with machine load, so C++ and Python alternate over two rounds.
set -eu
build=${1:-build}
threads=${2:-2}
steps=${3:-30}
here=$(dirname "$0")
for round in 1 2; do
  echo "== round $round"
  "$build/bin/moe_bench" "$threads" "$steps" "$steps"
  /usr/bin/python3 "$here/moe_reference.py" "$threads" "$steps"
done
