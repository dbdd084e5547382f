#include "isoflop/trainer/step_values.h"

#include <c10/core/impl/VirtualGuardImpl.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#ifdef ISOFLOP_HAVE_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace isoflop::trainer {

StepValues::StepValues(const torch::Tensor& values) {
  const torch::Tensor v = values.detach().to(torch::kDouble).reshape({-1});
  if (!v.is_cuda()) {
    host_ = v.clone();
    return;
  }
  host_ = torch::empty({v.numel()},
                       torch::TensorOptions().dtype(torch::kDouble).pinned_memory(true));
  host_.copy_(v, /*non_blocking=*/true);
  event_ = std::make_unique<c10::Event>(c10::DeviceType::CUDA);
  event_->record(c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(v.device()));
}

bool StepValues::Ready() const { return !event_ || event_->query(); }

const double* StepValues::Get() {
  if (event_) {
    // LibTorch 1.13's c10::Event has no synchronize(): poll. By the time a step reads the
    // previous step's values the copy is normally done, so this does not spin.
    while (!event_->query()) std::this_thread::yield();
    event_.reset();
  }
  return host_.data_ptr<double>();
}

torch::Tensor ClipGradNorm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const auto& p : parameters)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty())
    return torch::zeros({}, parameters.empty() ? torch::TensorOptions()
                                               : torch::TensorOptions().device(
                                                     parameters.front().device()));
  std::vector<torch::Tensor> norms;
  norms.reserve(grads.size());
  for (const auto& g : grads) norms.push_back(g.norm(2));
  const torch::Tensor total = norms.size() == 1 ? norms[0] : torch::stack(norms).norm(2);
  if (max_norm > 0) {
    // Multiplying by a clamped coefficient (never above 1) rather than branching on the norm
    // keeps the decision on the device.
    const torch::Tensor coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
    for (auto& g : grads) g.mul_(coef);
  }
  return total;
}

int SyncCheck::RequestedMode() {
  const char* v = std::getenv("ISOFLOP_SYNC_CHECK");
  if (v == nullptr) return 0;
  if (std::strcmp(v, "warn") == 0) return 1;
  if (std::strcmp(v, "error") == 0) return 2;
  return 0;
}

namespace detail {

SyncModeScope::~SyncModeScope() {
#ifdef ISOFLOP_HAVE_CUDA
  if (previous_ >= 0)
    c10::cuda::warning_state().set_sync_debug_mode(
        static_cast<c10::cuda::SyncDebugMode>(previous_));
#endif
}

void SyncModeScope::Set(int mode) {
#ifdef ISOFLOP_HAVE_CUDA
  static_assert(static_cast<int>(c10::cuda::SyncDebugMode::L_DISABLED) == 0 &&
                    static_cast<int>(c10::cuda::SyncDebugMode::L_WARN) == 1 &&
                    static_cast<int>(c10::cuda::SyncDebugMode::L_ERROR) == 2,
                "modes are numbered as ISOFLOP_SYNC_CHECK's");
  auto& state = c10::cuda::warning_state();
  if (previous_ < 0) previous_ = static_cast<int>(state.get_sync_debug_mode());
  state.set_sync_debug_mode(static_cast<c10::cuda::SyncDebugMode>(mode));
#else
  (void)mode;
#endif
}

int SyncModeScope::Current() {
#ifdef ISOFLOP_HAVE_CUDA
  return static_cast<int>(c10::cuda::warning_state().get_sync_debug_mode());
#else
  return 0;
#endif
}

}  // namespace detail

SyncCheck::SyncCheck(bool on_cuda) {
  const int mode = on_cuda ? RequestedMode() : 0;
  if (mode != 0) scope_.Set(mode);
}

SyncAllowed::SyncAllowed() {
  if (detail::SyncModeScope::Current() != 0) scope_.Set(0);
}

}  // namespace isoflop::trainer
