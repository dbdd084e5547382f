// Skips a multi-rank CPU test in builds without Gloo: scripts/device-check.sh compiles the
// trainer against a pip LibTorch, which ships no gloo headers (ISOFLOP_NO_GLOO). make test's
// build always has Gloo (libgloo-dev), so there these tests always run.
#pragma once

#include <gtest/gtest.h>

#ifdef ISOFLOP_NO_GLOO
#define ISOFLOP_REQUIRE_GLOO() GTEST_SKIP() << "built without Gloo (ISOFLOP_NO_GLOO)"
#else
#define ISOFLOP_REQUIRE_GLOO() (void)0
#endif
