// The Mixture-of-Experts feed-forward layer of a `family: moe` model (docs/run-protocol.md,
// `model.moe`): a linear router, top-k routed experts, always-on shared experts, the router's
// balancing losses and DeepSeek-V3's loss-free selection bias. It replaces the dense MLP of the
// MoE blocks (accounting::IsMoeBlock); its parameter count is what accounting counts (tested).
// Modules are not thread-safe.
//
// Shape legend: B batch, T sequence length, C d_model, N tokens (B·T), E routed experts,
// K routed experts per token (accounting::EffectiveTopK), A assignments (N·K).
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "isoflop/trainer/accounting.h"

namespace isoflop::trainer {

class MoeImpl : public torch::nn::Module {
 public:
  // `s.moe` must be set and `s` valid (Shape::Validate).
  explicit MoeImpl(const accounting::Shape& s);

  // x (B, T, C) -> (B, T, C): the shared experts plus, for each token, its K routed experts'
  // outputs weighted by the renormalised router scores. An assignment over an expert's capacity
  // adds nothing (the block's residual carries the token). Sets aux_loss() and z_loss(); in a
  // training forward (grad mode on, module in training mode) adds to step_stats().
  torch::Tensor forward(const torch::Tensor& x);

  // The last forward's router losses, weighted, as scalars with their graph:
  // Switch load balancing (Fedus et al. 2022, eq. 4) aux_loss_weight · E · Σ_i f_i · P_i, with
  // f_i the fraction of the A assignments routed to expert i (before capacity drops) and P_i
  // the mean routing probability of expert i (softmax; sigmoid scores normalised to sum 1): it
  // equals aux_loss_weight when routing is uniform. ST-MoE router z-loss (Zoph et al. 2022,
  // eq. 5) z_loss_weight · mean over tokens of logsumexp(logits)².
  const torch::Tensor& aux_loss() const { return aux_loss_; }
  const torch::Tensor& z_loss() const { return z_loss_; }

  // What the training forwards since the last ResetStepStats routed. They accumulate on the
  // module's device (no read in the step); this copy to the host is for logging.
  struct StepStats {
    std::vector<double> load;  // (E) assignments per expert, before capacity drops
    int64_t assignments = 0;   // A summed over the forwards
    int64_t dropped = 0;       // assignments over capacity
    int64_t tokens = 0;
    double entropy_sum = 0;         // Σ over tokens of the routing distribution's entropy (nats)
    double aux_sum = 0, z_sum = 0;  // Σ over forwards of tokens · aux_loss() (resp. z_loss())
  };
  StepStats step_stats() const;
  // The same as one double tensor on the device, (E + 6): the loads, then assignments, dropped,
  // tokens, entropy_sum, aux_sum, z_sum (counts stay exact in doubles below 2^53); zeros before
  // any training forward. Data parallel: the trainer sums every rank's and sets the sum, so the
  // selection bias and the logged loads follow the whole step's routing on every replica.
  torch::Tensor step_stats_tensor() const;
  void set_step_stats_tensor(torch::Tensor sums);
  void ResetStepStats();

  // How the routed assignments reach their experts. kGrouped: each expert runs on exactly its
  // own (kept) rows, whose number the host must read from the device, once per forward.
  // kPadded: with a capacity, each expert runs on `capacity` rows, the empty ones zeros whose
  // outputs are dropped, so no shape depends on the routing and nothing is read: the step queues
  // without waiting for the device (more rows computed: up to capacity_factor x the assignments).
  // kAuto: padded on CUDA when a capacity is set below the assignments, else grouped. Both
  // compute the same outputs and gradients (tested), with one exception: an expert no token
  // reached in a step has a zero gradient when padded (AdamW then decays it) and none when
  // grouped (AdamW leaves it alone). Either way every step treats it alike, resumed or not.
  enum class Dispatch { kAuto, kGrouped, kPadded };
  void set_dispatch(Dispatch d) { dispatch_ = d; }

  // DeepSeek-V3 (2024, section 2.1.2) auxiliary-loss-free balancing, called after each
  // optimizer step: bias_i += bias_update_rate · sign(mean load - load_i) from the step's
  // stats, on the device. The bias is added to the scores for choosing experts only, never to
  // the combine weights. A no-op when bias_update_rate is 0 or nothing was routed.
  void UpdateSelectionBias();
  // (E) fp32, a registered buffer: saved and restored with the module (checkpoints).
  const torch::Tensor& selection_bias() const { return selection_bias_; }

  // The experts' output projections (GPT-2's scaled residual initialisation applies to them).
  std::vector<torch::nn::Linear> OutputProjections() const;

  torch::nn::Linear router{nullptr};  // C -> E, no bias

 private:
  accounting::MoeShape config_;
  int64_t top_k_;
  torch::nn::ModuleList experts_;              // E MlpImpl of expert_d_ff
  std::shared_ptr<torch::nn::Module> shared_;  // one MlpImpl of n_shared·expert_d_ff, or null
  torch::Tensor selection_bias_;               // (E)
  torch::Tensor aux_loss_, z_loss_;
  torch::Tensor stats_;  // (E + 6) double, see step_stats_tensor(); undefined until a forward
  Dispatch dispatch_ = Dispatch::kAuto;

  // The padded dispatch: the K·N assignments sorted by expert (sorted_token, sorted_weight)
  // into E blocks of `capacity` rows; returns (N, C) in the experts' dtype.
  torch::Tensor DispatchPadded(const torch::Tensor& xf, const torch::Tensor& counts,
                               const torch::Tensor& sorted_token,
                               const torch::Tensor& sorted_weight, int64_t capacity);
};
TORCH_MODULE(Moe);

// The metrics line's MoE extras for one step, from every MoE layer's step_stats()
// (docs/run-protocol.md): aux_loss and z_loss (token-weighted over micro-batches, averaged over
// layers: what the step added to the loss), load_<i> (expert i's fraction of all routed
// assignments, pooled over layers; they sum to 1), load_max_over_mean (the worst layer's
// max_i load_i / mean_i load_i; 1 = balanced), dropped_fraction (dropped / routed assignments)
// and router_entropy (mean nats per token and layer). Empty when `layers` is empty.
std::vector<std::pair<std::string, double>> MoeStepMetrics(const std::vector<MoeImpl*>& layers);

}  // namespace isoflop::trainer
