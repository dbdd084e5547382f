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
  // Forward passes per optimizer step (per rank; ForwardPasses): above 1 the earlier passes'
  // gradients are live while the later ones run.
  int micro_batches = 1;
  int ranks = 1;  // data-parallel ranks: above 1 each keeps a flat copy of every gradient
};

// Bytes, by part. Plain value.
struct MemoryEstimate {
  int64_t weights = 0;      // fp32 parameters (plus autocast's bf16 copies under mixed precision)
  // fp32 gradients where live at the peak: accumulating passes, or a step whose gradients
  // outweigh its activations; plus, under data parallel, the reducer's flat copy of them
  int64_t gradients = 0;
  int64_t optimizer = 0;    // AdamW first and second moments, fp32
  int64_t activations = 0;  // what autograd saves for backward, all layers (attention matrix aside)
  int64_t attention = 0;    // explicit attention's (B, heads, T, T) probabilities, all layers,
                            // and backward's two more where they outweigh the logits' chain
  int64_t logits = 0;       // (B, T, vocab): logits, log-softmax and their two gradients
                            // (the logits alone where a checkpointed replay peaks)
  // Allocator slack: on a GPU the caching allocator's rounding (10%, at least 64 MiB); on CPU
  // glibc's heap, whose freed blocks of the step's temporaries stay resident (55% of the bytes
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
// (MALLOC_MMAP_THRESHOLD_, which doubles the step time). After 10 steps, 11 shapes' peak RSS
// was above LibTorch's resident set plus the bytes counted in tensors (tensor_bytes.h) by
// 26-76% of the bytes the estimate holds in such tensors (median 45%; a checkpointed run
// counted on its plain run's); 55% puts the estimate at 0.95-1.13x of those peaks.
inline constexpr double kCpuAllocatorSlack = 0.55;
inline constexpr double kGlibcMmapThresholdMax = 32 << 20;  // DEFAULT_MMAP_THRESHOLD_MAX, 64-bit

// Estimates the peak memory of one training process (a data-parallel rank: each holds a whole
// replica) for `shape` under `opts`: on a GPU, device memory; on CPU, the resident set. The
// activation terms count the tensors this trainer's autograd graph saves (model.cc), in the
// manner of Korthikanti et al. 2022 ("Reducing activation recomputation"), as counted at
// LibTorch's CPU allocator (tensor_bytes.h), and take the peak of a step's phases; checked
// against the counted tensor bytes and the resident set by
// BinaryTest.MemoryEstimateBoundsTheMeasuredPeakResidentSet. Never fails; the shape is assumed
// valid.
MemoryEstimate EstimateMemory(const Shape& shape, const MemoryOptions& opts);

// Sequences in one forward pass (MemoryOptions::micro_batch): `micro_batch`, or fewer when a
// rank's share of a step's sequences (batch_tokens / seq_len, rounded up, split over `ranks`)
// is smaller.
int ForwardBatch(int micro_batch, int64_t batch_tokens, int seq_len, int ranks);
// Forward passes one rank makes per optimizer step (MemoryOptions::micro_batches): its share
// of the step's sequences over ForwardBatch's, rounded up.
int ForwardPasses(int micro_batch, int64_t batch_tokens, int seq_len, int ranks);

}  // namespace isoflop::accounting
