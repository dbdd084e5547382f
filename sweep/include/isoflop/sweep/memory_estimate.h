// Resource estimates for one training run, from its shape and batch alone (no LibTorch): the
// device memory it needs (the scheduler packs runs by it and refuses runs that cannot fit) and
// a rough wall time for `sweep plan`.
#pragma once

#include <cstdint>

#include "isoflop/trainer/accounting.h"

namespace isoflop::sweep {

// What the trainer does that changes memory. Plain value.
struct MemoryOptions {
  int micro_batch = 16;                   // sequences per forward pass
  bool mixed_precision = false;           // 16-bit activations/weights + fp32 master copies
  bool activation_checkpointing = false;  // keep only block inputs; recompute one block
  bool fused_attention = false;           // no (B, heads, T, T) attention matrix kept
  bool gpu = false;                       // a CUDA process: add its context (see below)
};

// Bytes, by part. Plain value.
struct MemoryEstimate {
  int64_t weights = 0;  // parameters (plus fp32 master copies under mixed precision)
  int64_t gradients = 0;
  int64_t optimizer = 0;     // AdamW first and second moments, fp32
  int64_t activations = 0;   // saved for backward, all layers
  int64_t attention = 0;     // the (B, heads, T, T) scores and probabilities, all layers kept
  int64_t logits = 0;        // (B, T, vocab) logits and their gradient
  int64_t overhead = 0;      // allocator slack and workspace (10%, at least 64 MiB)
  int64_t cuda_context = 0;  // GPU only: each process's CUDA context, cuBLAS/cuDNN workspaces
                             // and kernel images, which runs packed on one GPU each pay
                             // (kCudaContextBytes)
  int64_t total = 0;
};

// What one LibTorch process holds on a GPU before any tensor: a CUDA context with lazily
// loaded kernels is typically 0.3-0.6 GiB on recent GPUs and drivers; 512 MiB is assumed.
inline constexpr int64_t kCudaContextBytes = int64_t{512} << 20;

// Estimates peak training memory for `shape` under `opts`. Korthikanti et al. 2022 ("Reducing
// activation recomputation") for the per-layer activation terms, adapted to this model (no
// dropout, SwiGLU or GELU MLP). Never fails; the shape is assumed valid.
MemoryEstimate EstimateMemory(const accounting::Shape& shape, const MemoryOptions& opts);

// Achieved training throughput in FLOP/s for a model of `n_total` parameters (an MoE's active
// ones: its matmuls are of that size). On CPU it
// interpolates measured figures for this project's trainer (8 GFLOP/s at 12k parameters, 45 at
// 800k, with 2 threads; scaled linearly by `threads`); on GPU it assumes 35% of a 400 TFLOP/s
// bf16 device for large models, less for small ones. `override_gflops` > 0 replaces the model.
double EstimateFlopsPerSecond(int64_t n_total, bool gpu, int threads, double override_gflops);

}  // namespace isoflop::sweep
