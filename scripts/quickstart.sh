#!/usr/bin/env bash
# The quickstart: runs sweeps/quickstart.yaml end to end on this machine (train, fit, print
# the compute-optimal N and D, draw the plots). Called by `make quickstart` after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
exec "$BUILD_DIR/bin/isoflop" --db "${ISOFLOP_DB:-isoflop.db}" sweep run sweeps/quickstart.yaml "$@"
