// The CUDA test cases run where LibTorch sees a GPU (scripts/device-check.sh) and skip
// elsewhere; with ISOFLOP_EXPECT_CUDA=1 a missing GPU is a failure instead of a skip.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>

namespace isoflop::trainer {

inline bool ExpectCuda() {
  const char* v = std::getenv("ISOFLOP_EXPECT_CUDA");
  return v && std::strcmp(v, "1") == 0;
}

}  // namespace isoflop::trainer

#define ISOFLOP_REQUIRE_CUDA()                                                          \
  do {                                                                                  \
    if (!torch::cuda::is_available()) {                                                 \
      if (::isoflop::trainer::ExpectCuda())                                             \
        FAIL() << "ISOFLOP_EXPECT_CUDA=1 but LibTorch sees no GPU";                     \
      GTEST_SKIP() << "no CUDA device";                                                 \
    }                                                                                   \
  } while (0)
