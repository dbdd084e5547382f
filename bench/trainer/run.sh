#!/bin/sh
# Runs the C++ trainer benchmark and the PyTorch reference side by side, then an end-to-end
# isoflop-train run (tokens/s from its metrics), then activation checkpointing's memory and time.
# Usage: bench/trainer/run.sh [BUILD_DIR] [THREADS] [STEPS]. Figures drift with machine load: compare lines from the same invocation.
set -eu
build=${1:-build}
threads=${2:-2}
steps=${3:-60}
here=$(dirname "$0")
# Alternate C++ and Python twice so a load change on a shared machine hits both sides.
for round in 1 2; do
  echo "== round $round"
  "$build/bin/trainer_bench" "$threads" "$steps"
  "$build/bin/trainer_bench" "$threads" "$steps" count  # with isoflop-train's tensor counter
  /usr/bin/python3 "$here/torch_reference.py" "$threads" "$steps"
done
out=$(mktemp -d)
"$build/bin/isoflop-train" --out "$out/run" --quiet --tokens 3e5 --threads "$threads" \
  --eval-interval 100000 --eval-tokens 4096
printf 'isoflop-train medium (2x64) end to end: '
tail -n 2 "$out/run/metrics.jsonl" | head -n 1 | sed 's/.*"tokens_per_s":\([0-9.]*\).*/\1 tokens\/s/'
# Activation checkpointing: peak resident memory and wall time of the same run without and with
# it (8 layers x 256, sequence 512, micro-batch 32: activations dominate memory).
for flag in "" --activation-checkpointing; do
  /usr/bin/python3 - "$build/bin/isoflop-train" "$out" "$threads" $flag <<'PY'
import resource, subprocess, sys, time
binary, out, threads, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
t0 = time.time()
subprocess.run([binary, "--out", f"{out}/ckpt{len(flags)}", "--quiet", "--n-layer", "8",
                "--d-model", "256", "--n-head", "8", "--seq-len", "512", "--batch-tokens", "16384",
                "--micro-batch", "32", "--tokens", "32768", "--eval-tokens", "8192",
                "--threads", threads] + flags, check=True)
rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
print(f"8x256, seq 512, micro-batch 32 {'with' if flags else 'without'} activation "
      f"checkpointing: peak RSS {rss_gb:.2f} GB, {time.time() - t0:.1f} s")
PY
done
rm -rf "$out"
