#!/bin/sh
# The pre-launch data check (sweep/data_check.h): `isoflop sweep plan` on a sweep over a 2 GiB
# nanoGPT .bin file, first without a store (a whole scan, from the page cache after round 1)
# and then with one that remembers the scan (a stat). Best and median of ROUNDS each.
# Usage: bench/data/run.sh [BUILD_DIR] [ROUNDS].
set -eu
build=${1:-build}
rounds=${2:-5}
exec /usr/bin/python3 - "$(realpath "$build/bin/isoflop")" "$rounds" <<'PY'
import os, re, statistics, subprocess, sys, tempfile, time
binary, rounds = sys.argv[1], int(sys.argv[2])
tokens = 1 << 30
with tempfile.TemporaryDirectory() as tmp:
    # Ids 0..49999 repeated (uint16, little-endian), written in 64 MiB pieces.
    piece = b"".join(i.to_bytes(2, "little") for i in range(50000)) * 672
    with open(f"{tmp}/train.bin", "wb") as f:
        left = 2 * tokens
        while left > 0:
            f.write(piece[:left])
            left -= min(left, len(piece))
    with open(f"{tmp}/val.bin", "wb") as f:
        f.write(piece[:200000])
    with open(f"{tmp}/s.yaml", "w") as f:
        f.write("name: scan\ndata: {source: bin, train: train.bin, val: val.bin}\n"
                "model:\n  vocab_size: 50304\n  seq_len: 64\n"
                "  ladder:\n    - {n_layer: 1, d_model: 16, n_head: 2}\n"
                "budgets: [1e12]\ntrain: {batch_tokens: 256}\n")
    def plan(db):
        t0 = time.perf_counter()
        r = subprocess.run([binary, "--db", db, "sweep", "plan", "s.yaml", "--no-probe"],
                           cwd=tmp, capture_output=True, text=True, check=True)
        return time.perf_counter() - t0, r.stderr
    scan, rate, cached = [], [], []
    for r in range(rounds):
        db = f"{tmp}/none{r}.db"  # absent: plan scans without a store
        seconds, err = plan(db)
        scan.append(seconds)
        m = re.search(r"\(([\d.]+) GB/s\)", err)
        rate.append(float(m.group(1)) if m else float("nan"))
    # A store that remembers the scan: `sweep run` records it before refusing a vocabulary of
    # 100 (so nothing trains); the plans after it, at 50304, read it from the store.
    r = subprocess.run([binary, "--db", f"{tmp}/kept.db", "sweep", "run", "s.yaml", "--no-probe",
                        "--no-plot", "--set", "model.vocab_size=100"], cwd=tmp,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "token id 49999" in r.stderr, r.stderr
    for r in range(rounds):
        cached.append(plan(f"{tmp}/kept.db")[0])
print(f"sweep plan over a {2 * tokens / 2**30:.0f} GiB .bin file ({tokens} tokens), "
      f"{rounds} rounds:")
print(f"  {'scan, no store':<28} best {min(scan):6.3f} s  median {statistics.median(scan):6.3f} s"
      f"  scan rate median {statistics.median(rate):5.2f} GB/s")
print(f"  {'remembered by the store':<28} best {min(cached):6.3f} s  median "
      f"{statistics.median(cached):6.3f} s")
PY
