// The bytes a CPU run holds in tensors, counted as LibTorch allocates and frees them: the
// measured counterpart of the memory estimate's tensor terms (memory.h), free of what the
// resident set adds (LibTorch's own code and buffers, glibc's heap holes). On a GPU the caching
// allocator's allocated-bytes peak is the same measurement and needs no counting.
#pragma once

#include <cstdint>

namespace isoflop::trainer {

// Puts a counting wrapper around LibTorch's default CPU allocator (c10::SetCPUAllocator), so
// every CPU tensor allocated from then on is counted while it lives. Tensors allocated before
// are freed by their own allocator and not counted. The wrapper allocates through the default
// allocator with a 64-byte header (the size; alignment is kept) and keeps its raw interface.
// Idempotent; thread-safe once installed (the counts are atomics).
void CountCpuTensorBytes();

// Bytes held in counted CPU tensors now, and the most held at once since CountCpuTensorBytes
// (0 when it was never called).
int64_t CpuTensorBytesNow();
int64_t CpuTensorBytesPeak();
// Starts the peak afresh from the bytes held now (to measure one phase of a step).
void ResetCpuTensorBytesPeak();

}  // namespace isoflop::trainer
