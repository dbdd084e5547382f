#!/usr/bin/env bash
# Fit benchmark: the 4,500-start parametric fit and 1,000 bootstrap resamples on the 240
# Chinchilla points (C++/Ceres), then scipy L-BFGS-B over the same grid for comparison.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-build}
"$BUILD_DIR/bin/fit_bench"
/usr/bin/python3 bench/fit/scipy_reference.py ${SCIPY_ARGS:-} 2>&1 || echo "(scipy reference failed)"
