// A counting CPU allocator: LibTorch's default one underneath, a header in front of each block
// holding its size, and two atomics (bytes held now and at most).
#include "isoflop/trainer/tensor_bytes.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/version.h>

#include <atomic>
#include <cstring>

namespace isoflop::trainer {
namespace {

// LibTorch 2.3 made Allocator::allocate non-const and added the pure virtual copy_data.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define ISOFLOP_ALLOCATE_CONST
#define ISOFLOP_ALLOCATOR_COPY_DATA 1
#else
#define ISOFLOP_ALLOCATE_CONST const
#define ISOFLOP_ALLOCATOR_COPY_DATA 0
#endif

// 64 bytes: the default allocator's alignment (c10::gAlignment), so the data after it stays
// aligned as LibTorch's vectorised kernels expect.
constexpr size_t kHeader = 64;

std::atomic<int64_t> g_now{0}, g_peak{0};
c10::Allocator* g_base = nullptr;           // the default CPU allocator
c10::DeleterFnPtr g_base_delete = nullptr;  // its raw deleter

void Delete(void* data) {
  if (data == nullptr) return;
  char* block = static_cast<char*>(data) - kHeader;
  int64_t n;
  std::memcpy(&n, block, sizeof n);
  g_now.fetch_sub(n, std::memory_order_relaxed);
  g_base_delete(block);
}

struct CountingAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) ISOFLOP_ALLOCATE_CONST override {
    if (n == 0) return {nullptr, nullptr, &Delete, c10::Device(c10::DeviceType::CPU)};
    char* block = static_cast<char*>(g_base->raw_allocate(n + kHeader));
    const int64_t bytes = static_cast<int64_t>(n);
    std::memcpy(block, &bytes, sizeof bytes);
    const int64_t now = g_now.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    int64_t peak = g_peak.load(std::memory_order_relaxed);
    while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    void* data = block + kHeader;
    // Context == data: the raw interface (raw_allocate / raw_deleter) works as the default's.
    return {data, data, &Delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }
#if ISOFLOP_ALLOCATOR_COPY_DATA
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
#endif
};

}  // namespace

void CountCpuTensorBytes() {
  static CountingAllocator* counting = [] {
    g_base = c10::GetDefaultCPUAllocator();
    g_base_delete = g_base->raw_deleter();
    auto* a = new CountingAllocator();  // lives as long as the process, as LibTorch's own
    // Priority above the default's registration (0), so it is the one LibTorch uses.
    c10::SetCPUAllocator(a, /*priority=*/1);
    return a;
  }();
  (void)counting;
}

int64_t CpuTensorBytesNow() { return g_now.load(std::memory_order_relaxed); }
int64_t CpuTensorBytesPeak() { return g_peak.load(std::memory_order_relaxed); }
void ResetCpuTensorBytesPeak() { g_peak.store(g_now.load(std::memory_order_relaxed)); }

}  // namespace isoflop::trainer
