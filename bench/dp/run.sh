#!/bin/sh
# Data-parallel step throughput on this machine: one rank against two ranks over Gloo, with the
# gradient all-reduce after backward and overlapped with it (buckets of 25 MB and of 1 MB).
# Interleaved rounds, medians. Usage: bench/dp/run.sh [BUILD_DIR] [ROUNDS] [STEPS].
# On a 2-core host two ranks of one thread each share the cores with Gloo's threads, so
# the figures show the overhead of the reduction, not a GPU cluster's scaling.
set -eu
build=${1:-build}
rounds=${2:-3}
steps=${3:-16}
exec /usr/bin/python3 - "$build/bin/isoflop-train" "$rounds" "$steps" <<'PY'
import json, os, statistics, subprocess, sys, tempfile
binary, rounds, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seq, batch = 128, 8192
model = ["--n-layer", "4", "--d-model", "256", "--n-head", "4", "--seq-len", str(seq),
         "--batch-tokens", str(batch), "--micro-batch", "32",
         "--tokens", str(steps * batch), "--eval-interval", "1000000", "--eval-tokens", "2048",
         "--log-interval", "1", "--ckpt-interval", "1000000", "--quiet"]
cases = [  # (label, nproc, threads per rank, environment)
    ("1 rank x 2 threads", 1, 2, {}),
    ("2 ranks x 1 thread, all-reduce after backward", 2, 1, {"ISOFLOP_GRAD_REDUCE": "after-backward"}),
    ("2 ranks x 1 thread, overlapped, 25 MB buckets", 2, 1, {}),
    ("2 ranks x 1 thread, overlapped, 1 MB buckets", 2, 1, {"ISOFLOP_BUCKET_MB": "1"}),
]
seen = {label: [] for label, *_ in cases}
with tempfile.TemporaryDirectory() as tmp:
    for r in range(rounds):
        for i, (label, nproc, threads, env) in enumerate(cases):
            out = f"{tmp}/r{r}c{i}"
            subprocess.run([binary, "--out", out, "--nproc", str(nproc), "--threads", str(threads)]
                           + model, check=True, env={**os.environ, **env})
            rows = [json.loads(l) for l in open(f"{out}/metrics.jsonl") if '"tokens_per_s"' in l]
            # Skip the first steps (allocator and thread-pool warm-up).
            seen[label].append(statistics.median(x["tokens_per_s"] for x in rows[3:]))
print(f"4 x 256 model (3.2M parameters), {batch} tokens/step, {steps} steps, "
      f"median of {rounds} interleaved rounds (each a median over steps):")
base = statistics.median(seen[cases[0][0]])
for label, *_ in cases:
    m = statistics.median(seen[label])
    print(f"  {label:<48} {m:9.0f} tokens/s  {m / base:5.2f}x  "
          f"(rounds: {', '.join(f'{v:.0f}' for v in seen[label])})")
PY
