// What a training step needs from the device without waiting for it. On a GPU the host runs
// ahead of the device, queueing kernels; reading a value back (`.item()`, a blocking copy)
// stops the host until the device has caught up, and the device then idles while the host
// queues the next step. The step therefore keeps its loss and gradient norm on the device
// and copies them back without blocking (StepValues); the host reads them a step later,
// when the copy is long done, or at once where it needs them (a logged step).
#pragma once

#include <torch/torch.h>

#include <c10/core/Event.h>

#include <memory>
#include <vector>

namespace isoflop::trainer {

// A small double tensor on its way to the host. On CPU the copy is made at once; on CUDA it
// goes to pinned memory without blocking, and an event recorded behind it on the current
// stream says when it has landed.
class StepValues {
 public:
  explicit StepValues(const torch::Tensor& values);
  // The values (values.numel() doubles); waits for the copy if it is not done yet.
  const double* Get();
  // Whether the copy has landed (Get() would not wait).
  bool Ready() const;

 private:
  torch::Tensor host_;
  std::unique_ptr<c10::Event> event_;  // CUDA only; reset once the copy is seen done
};

// LibTorch's clip_grad_norm_ (L2), the same operations in the same order, so the same bits,
// without its final read of the norm to the host. Returns the total norm of the gradients
// before clipping, as a tensor on their device (a zero scalar when no parameter has one).
// max_norm <= 0 measures without clipping.
torch::Tensor ClipGradNorm(const std::vector<torch::Tensor>& parameters, double max_norm);

namespace detail {
// c10's sync debug mode (0 off, 1 warn, 2 error, as c10::cuda::SyncDebugMode), set for a scope
// and restored at its end if Set changed it. A no-op in builds without CUDA.
class SyncModeScope {
 public:
  SyncModeScope() = default;
  ~SyncModeScope();
  SyncModeScope(const SyncModeScope&) = delete;
  SyncModeScope& operator=(const SyncModeScope&) = delete;
  void Set(int mode);
  static int Current();

 private:
  int previous_ = -1;  // the mode to restore; -1 while Set has not been called
};
}  // namespace detail

// For the span of its scope, makes a synchronising CUDA call (`.item()`, a blocking copy to the
// host) warn or throw, as torch.cuda.set_sync_debug_mode: ISOFLOP_SYNC_CHECK=warn or error.
// Catches the calls LibTorch routes through its check (not every possible sync). A no-op
// without the variable, on CPU, and in builds without CUDA.
class SyncCheck {
 public:
  explicit SyncCheck(bool on_cuda);
  // The mode ISOFLOP_SYNC_CHECK asks for: 0 off, 1 warn, 2 error (anything else: off).
  static int RequestedMode();

 private:
  detail::SyncModeScope scope_;
};

// Inside a SyncCheck, a read the step cannot do without (a dropless MoE layer's expert sizes):
// for the span of its scope synchronising calls are allowed again. A no-op where no check is on.
class SyncAllowed {
 public:
  SyncAllowed();

 private:
  detail::SyncModeScope scope_;
};

}  // namespace isoflop::trainer
