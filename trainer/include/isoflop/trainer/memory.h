// The memory one training run needs, from its shape and batch alone (no LibTorch): the sweep
// scheduler packs runs by it and refuses runs that cannot fit, and the trainer writes it to
// info.json beside the peak it measures (status.json), so every run checks it.
#pragma once

#include <cstdint>

#include "isoflop/trainer/accounting.h"

namespace isoflop::accounting {

// What the trainer does that changes memory. Plain value.
struct MemoryOptions {
  int micro_batch = 16;                   // sequences per forward pass (ForwardBatch)
  bool mixed_precision = false;           // bf16 autocast: fp32 weights, 16-bit matmul outputs
  bool activation_checkpointing = false;  // keep only block inputs; recompute one block
  bool fused_attention = false;           // no (B, heads, T, T) attention matrix kept
  bool gpu = false;                       // a CUDA process (else a CPU one: see below)
};

// Bytes, by part. Plain value.
struct MemoryEstimate {
  int64_t weights = 0;      // fp32 parameters (plus autocast's bf16 copies under mixed precision)
  int64_t gradients = 0;    // fp32, one per parameter
  int64_t optimizer = 0;    // AdamW first and second moments, fp32
  int64_t activations = 0;  // what autograd saves for backward, all layers (attention matrix aside)
  int64_t attention = 0;    // explicit attention's (B, heads, T, T) probabilities, all layers,
                            // and the two more of the layer backward is working on
  int64_t logits = 0;       // (B, T, vocab): logits, log-softmax and their two gradients
  // Allocator slack: on a GPU the caching allocator's rounding (10%, at least 64 MiB); on CPU
  // glibc's heap, whose freed blocks of the step's temporaries stay resident (45% of the bytes
  // held in tensors of at most 32 MiB: kCpuAllocatorSlack).
  int64_t overhead = 0;
  // What the process holds before any tensor: on a GPU its CUDA context, cuBLAS/cuDNN
  // workspaces and kernel images, which runs packed on one GPU each pay (kCudaContextBytes); on
  // CPU LibTorch's resident code and buffers (kHostRuntimeBytes).
  int64_t runtime = 0;
  int64_t total = 0;
};

// What one LibTorch process holds on a GPU before any tensor: a CUDA context with lazily
// loaded kernels is typically 0.3-0.6 GiB on recent GPUs and drivers; 512 MiB is assumed.
inline constexpr int64_t kCudaContextBytes = int64_t{512} << 20;
// The resident set of isoflop-train on CPU with LibTorch 1.13 and OpenBLAS loaded and a run of
// negligible tensors: a 5k-parameter run peaks at 168-169 MiB with 1, 2 or 8 threads.
inline constexpr int64_t kHostRuntimeBytes = int64_t{176} << 20;
// glibc raises its mmap threshold to the size of the largest block freed (up to 32 MiB), so a
// step's temporaries up to that size come from the heap, whose holes stay resident and grow
// over the first steps: peak RSS measured 1.26-1.31x the same run's with a fixed threshold
// (MALLOC_MMAP_THRESHOLD_, which doubles the step time), and after 10 steps 8-51% of the bytes
// held in such tensors above what they hold (10 shapes); 45% covers all but the worst two within
// 2.5%.
inline constexpr double kCpuAllocatorSlack = 0.45;
inline constexpr double kGlibcMmapThresholdMax = 32 << 20;  // DEFAULT_MMAP_THRESHOLD_MAX, 64-bit

// Estimates the peak memory of one training process (a data-parallel rank: each holds a whole
// replica) for `shape` under `opts`: on a GPU, device memory; on CPU, the resident set. The
// activation terms count the tensors this trainer's autograd graph saves (model.cc), in the
// manner of Korthikanti et al. 2022 ("Reducing activation recomputation"); checked against
// measured peaks by tests/trainer/memory_test.cc. Never fails; the shape is assumed valid.
MemoryEstimate EstimateMemory(const Shape& shape, const MemoryOptions& opts);

// Sequences in one forward pass (MemoryOptions::micro_batch): `micro_batch`, or fewer when a
// rank's share of a step's sequences (batch_tokens / seq_len, rounded up, split over `ranks`)
// is smaller.
int ForwardBatch(int micro_batch, int64_t batch_tokens, int seq_len, int ranks);

}  // namespace isoflop::accounting
