#!/usr/bin/env bash
# Synthetic benchmarks: the languages' sampling speed (sampling_bench), then the recovery
# sweep: sweeps/synthetic_recovery.yaml (the skills language over a compute span of 128x) in a
# fresh store, printing how close the free fit's E comes to the language's exact entropy, with
# alpha and beta of the free and the E-held fits. 8.5 minutes on 2 cores (measured).
# RECOVERY_SET="budgets=[...]" (space-separated --set values) runs a reduced version;
# SAMPLING_ONLY=1 stops after the sampling figures; RECOVERY_DIR keeps the store and runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=$(realpath "${1:-build}")
SWEEP=$PWD/sweeps/synthetic_recovery.yaml
WORK=${RECOVERY_DIR:-$(mktemp -d /tmp/isoflop-recovery.XXXXXX)}
mkdir -p "$WORK"
ISOFLOP=("$BUILD_DIR/bin/isoflop" --db "$WORK/store.db")
SET=()
for kv in ${RECOVERY_SET:-}; do SET+=(--set "$kv"); done
"$BUILD_DIR/bin/sampling_bench"
[ -n "${SAMPLING_ONLY:-}" ] && exit 0
start=$(date +%s)
# Runs go to $WORK/runs/ (the sweep's output folder is relative to the current directory).
(cd "$WORK" && "${ISOFLOP[@]}" sweep run "$SWEEP" ${SET[@]+"${SET[@]}"} --no-plot) \
  > "$WORK/sweep.log" 2>&1 || { tail -30 "$WORK/sweep.log"; exit 1; }
wall=$(( $(date +%s) - start ))
NAME=synthetic_recovery
"${ISOFLOP[@]}" export --sweep "$NAME" --format json > "$WORK/runs.json"
H=$(/usr/bin/python3 -c 'import json,sys; print(repr(json.load(open(sys.argv[1]))[0]["data_entropy"]))' \
  "$WORK/runs.json")
# The sweep stored its fits; refit without storing for full-precision figures (same optimum).
"${ISOFLOP[@]}" fit --sweep "$NAME" --no-store --format json > "$WORK/free.json"
"${ISOFLOP[@]}" fit --sweep "$NAME" --no-store --fix "E=$H" --format json > "$WORK/held.json"
/usr/bin/python3 - "$WORK" "$wall" "$H" <<'PY'
import json, sys
work, wall, h = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
runs = json.load(open(f"{work}/runs.json"))
free, held = (json.load(open(f"{work}/{n}.json")) for n in ("free", "held"))
budgets = sorted({r["budget_flops"] for r in runs})
pf, ph = free["params"], held["params"]
print(f"synthetic recovery: {len(runs)} runs, budgets {budgets[0]:.3g}..{budgets[-1]:.3g} "
      f"({budgets[-1] / budgets[0]:.0f}x), sweep wall {wall} s")
print(f"  exact entropy H = {h:.4f} nats/token")
print(f"  free fit:    E = {pf['E']:.4f} ({100 * (pf['E'] - h) / h:+.2f}% of H), "
      f"alpha = {pf['alpha']:.3f}, beta = {pf['beta']:.3f}")
print(f"  E held at H: alpha = {ph['alpha']:.3f}, beta = {ph['beta']:.3f}")
for name, f in (("free", free), ("E held", held)):
    x = f["result"].get("extrapolation") or {}
    if "mean_abs_rel_error" in x:
        print(f"  extrapolation ({name}): held-out C={x['held_out_c']:.3g}, {x['n_test']} runs, "
              f"mean {100 * x['mean_abs_rel_error']:.2f}%, max {100 * x['max_abs_rel_error']:.2f}%")
PY
echo "  (store, logs and runs: $WORK)"
