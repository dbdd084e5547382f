// Resource estimates for one training run, from its shape and batch alone (no LibTorch): the
// device memory it needs (the trainer's own estimate, trainer/memory.h: the scheduler packs
// runs by it and refuses runs that cannot fit) and a rough wall time for `sweep plan`.
#pragma once

#include <cstdint>

#include "isoflop/trainer/accounting.h"
#include "isoflop/trainer/memory.h"

namespace isoflop::sweep {

using accounting::EstimateMemory;
using accounting::kCudaContextBytes;
using accounting::kHostRuntimeBytes;
using accounting::MemoryEstimate;
using accounting::MemoryOptions;

// Achieved training throughput in FLOP/s for a model of `n_total` parameters (an MoE's active
// ones: its matmuls are of that size). On CPU it
// interpolates measured figures for this project's trainer (8 GFLOP/s at 12k parameters, 45 at
// 800k, with 2 threads; scaled linearly by `threads`); on GPU it assumes 35% of a 400 TFLOP/s
// bf16 device for large models, less for small ones. `override_gflops` > 0 replaces the model.
double EstimateFlopsPerSecond(int64_t n_total, bool gpu, int threads, double override_gflops);

}  // namespace isoflop::sweep
