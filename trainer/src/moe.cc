// The Mixture-of-Experts layer (moe.h): route, balance, dispatch without a per-token loop.
// Shape legend: B batch, T sequence length, C d_model, N tokens (B·T), E routed experts,
// K routed experts per token, A assignments (N·K).
#include "isoflop/trainer/moe.h"

#include <algorithm>
#include <cmath>

#include "isoflop/trainer/model.h"
#include "isoflop/trainer/step_values.h"

namespace isoflop::trainer {

using accounting::Shape;

MoeImpl::MoeImpl(const Shape& s) : config_(*s.moe), top_k_(accounting::EffectiveTopK(s)) {
  const int64_t ff_e = accounting::EffectiveExpertDff(s);
  // Bias-free, as in Switch, Mixtral and DeepSeek: a router bias would only shift every
  // token's logits alike.
  router = register_module(
      "router",
      torch::nn::Linear(torch::nn::LinearOptions(s.d_model, config_.n_experts).bias(false)));
  experts_ = register_module("experts", torch::nn::ModuleList());
  for (int e = 0; e < config_.n_experts; ++e) experts_->push_back(Mlp(s, ff_e));
  if (config_.n_shared_experts > 0) {
    // The shared experts always run together, so they are one MLP of their summed width
    // (DeepSeekMoE's implementation does the same).
    shared_ = register_module("shared", Mlp(s, config_.n_shared_experts * ff_e).ptr());
  }
  selection_bias_ = register_buffer("selection_bias", torch::zeros({config_.n_experts}));
  ResetStepStats();
}

std::vector<torch::nn::Linear> MoeImpl::OutputProjections() const {
  std::vector<torch::nn::Linear> out;
  for (const auto& e : *experts_) out.push_back(e->as<MlpImpl>()->proj);
  if (shared_) out.push_back(shared_->as<MlpImpl>()->proj);
  return out;
}

void MoeImpl::ResetStepStats() { stats_ = torch::Tensor(); }

torch::Tensor MoeImpl::step_stats_tensor() const {
  if (stats_.defined()) return stats_;
  return torch::zeros({config_.n_experts + 6},
                      torch::TensorOptions().dtype(torch::kDouble).device(router->weight.device()));
}

void MoeImpl::set_step_stats_tensor(torch::Tensor sums) { stats_ = std::move(sums); }

MoeImpl::StepStats MoeImpl::step_stats() const {
  const torch::Tensor host = step_stats_tensor().to(torch::kCPU);
  const double* v = host.data_ptr<double>();
  const int64_t E = config_.n_experts;
  StepStats st;
  st.load.assign(v, v + E);
  st.assignments = std::llround(v[E]);
  st.dropped = std::llround(v[E + 1]);
  st.tokens = std::llround(v[E + 2]);
  st.entropy_sum = v[E + 3];
  st.aux_sum = v[E + 4];
  st.z_sum = v[E + 5];
  return st;
}

torch::Tensor MoeImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  const int64_t N = B * T, E = config_.n_experts, K = top_k_, A = N * K;
  const auto xf = x.reshape({N, C});                          // (N, C)
  const auto logits = router->forward(xf).to(torch::kFloat);  // (N, E), fp32 from here on

  // Scores choose and weigh the experts; probs is the routing distribution the balance loss
  // and the entropy see (for sigmoid, the scores normalised per token, as DeepSeek-V3's
  // sequence-wise balance loss does).
  torch::Tensor scores, probs;  // (N, E)
  if (config_.router == accounting::Router::kSoftmax) {
    scores = torch::softmax(logits, -1);
    probs = scores;
  } else {
    scores = torch::sigmoid(logits);
    probs = scores / scores.sum(-1, /*keepdim=*/true);
  }
  torch::Tensor chosen;  // (N, K) expert ids
  {
    torch::NoGradGuard no_grad;
    chosen = std::get<1>((scores + selection_bias_).topk(K, -1));  // the bias selects only
  }
  auto weights = scores.gather(1, chosen);                // (N, K), the unbiased scores
  weights = weights / weights.sum(-1, /*keepdim=*/true);  // renormalised over the K

  // Assignment a = j·N + n is token n's j-th choice: slot-major, so that under a capacity the
  // first choices of all tokens are served before any second choice (Lepikhin et al. 2020,
  // GShard, Algorithm 1), and within a slot earlier tokens first.
  const auto expert_of = chosen.t().reshape({A});  // (A)
  const auto opts = expert_of.options();
  const auto token_of = torch::arange(N, opts).repeat({K});  // (A)
  const auto weight_of = weights.t().reshape({A});           // (A)
  // Grouped by expert, assignment order kept within a group: unique keys, so any sort agrees.
  const auto order = (expert_of * A + torch::arange(A, opts)).argsort();  // (A)
  // (E) int64. Not bincount: on CUDA it reads the ids' range back to the host to size its
  // output.
  const auto counts =
      torch::zeros({E}, opts).scatter_add_(0, expert_of, torch::ones_like(expert_of));

  // Balancing losses (weighted) and the router entropy, from every assignment before drops.
  const auto f = counts.to(torch::kFloat) / static_cast<double>(A);  // (E)
  const auto p = probs.mean(0);                                      // (E)
  aux_loss_ = config_.aux_loss_weight * static_cast<double>(E) * (f * p).sum();
  z_loss_ = config_.z_loss_weight * torch::logsumexp(logits, -1).pow(2).mean();
  const auto entropy = -(probs * torch::log(probs.clamp_min(1e-30))).sum();

  // Switch Transformer's expert capacity (Fedus et al. 2022, eq. 3) per forward pass.
  const int64_t capacity =
      config_.capacity_factor > 0
          ? std::min(A, static_cast<int64_t>(
                            std::ceil(config_.capacity_factor * static_cast<double>(A) / E)))
          : A;
  const bool padded = dispatch_ == Dispatch::kPadded ||
                      (dispatch_ == Dispatch::kAuto && x.is_cuda() && capacity < A);

  // Dispatch: gather the assignments' rows in expert order, run each expert on its contiguous
  // rows (the first `capacity` of its group), scatter back weighted with one index_add_.
  const auto sorted_token = token_of.index_select(0, order);    // (A)
  const auto sorted_weight = weight_of.index_select(0, order);  // (A)
  torch::Tensor out;                                            // (N, C)
  if (padded) {
    out = DispatchPadded(xf, counts, sorted_token, sorted_weight, capacity).to(x.scalar_type());
  } else {
    // The group sizes shape the experts' inputs: the one read of this layer's forward.
    torch::Tensor host;
    {
      SyncAllowed sizes;
      host = counts.to(torch::kCPU);
    }
    const int64_t* h = host.data_ptr<int64_t>();
    const auto sorted_x = xf.index_select(0, sorted_token);  // (A, C)
    std::vector<torch::Tensor> outputs, rows;
    int64_t start = 0;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t kept = std::min(h[e], capacity);
      if (kept > 0) {
        auto* expert = experts_[e]->as<MlpImpl>();
        const auto y = expert->forward(sorted_x.narrow(0, start, kept));  // (kept, C)
        outputs.push_back(y * sorted_weight.narrow(0, start, kept).unsqueeze(1));
        rows.push_back(sorted_token.narrow(0, start, kept));
      }
      start += h[e];
    }
    if (outputs.empty()) {
      out = torch::zeros({N, C}, xf.options());
    } else {
      const auto y = torch::cat(outputs);
      out =
          torch::zeros({N, C}, y.options()).index_add_(0, torch::cat(rows), y).to(x.scalar_type());
    }
  }
  if (shared_) out = out + shared_->as<MlpImpl>()->forward(xf);

  if (is_training() && torch::GradMode::is_enabled()) {
    torch::NoGradGuard no_grad;
    const auto d = torch::TensorOptions().dtype(torch::kDouble).device(x.device());
    const torch::Tensor dropped = (counts - capacity).clamp_min(0).sum().to(torch::kDouble);
    const torch::Tensor step = torch::cat(
        {counts.to(torch::kDouble), torch::full({1}, static_cast<double>(A), d), dropped.view({1}),
         torch::full({1}, static_cast<double>(N), d), entropy.to(torch::kDouble).view({1}),
         (aux_loss_.to(torch::kDouble) * static_cast<double>(N)).view({1}),
         (z_loss_.to(torch::kDouble) * static_cast<double>(N)).view({1})});
    stats_ = stats_.defined() ? stats_ + step : step;
  }
  return out.view({B, T, C});
}

torch::Tensor MoeImpl::DispatchPadded(const torch::Tensor& xf, const torch::Tensor& counts,
                                      const torch::Tensor& sorted_token,
                                      const torch::Tensor& sorted_weight, int64_t capacity) {
  const int64_t N = xf.size(0), C = xf.size(1), E = config_.n_experts, A = sorted_token.size(0);
  // Slot (e, r) holds expert e's r-th assignment in sorted order when r < counts[e]; an empty
  // slot reads row N of the input, a row of zeros, and adds to row N of the output, which is
  // dropped (so its weight, some other assignment's, gets no gradient from it).
  const auto opts = counts.options();
  const auto starts = counts.cumsum(0) - counts;  // (E) each group's first sorted index
  const auto r = torch::arange(capacity, opts);   // (cap)
  const auto empty = (r.unsqueeze(0) >= counts.unsqueeze(1)).reshape({E * capacity});
  const auto index =
      (starts.unsqueeze(1) + r.unsqueeze(0)).clamp_max(A - 1).reshape({E * capacity});
  const auto slot_token = sorted_token.index_select(0, index).masked_fill(empty, N);
  const auto slot_weight = sorted_weight.index_select(0, index);
  const auto padded_x = torch::cat({xf, torch::zeros({1, C}, xf.options())});
  const auto slots = padded_x.index_select(0, slot_token);  // (E·cap, C)
  std::vector<torch::Tensor> outputs;
  for (int64_t e = 0; e < E; ++e) {
    auto* expert = experts_[e]->as<MlpImpl>();
    outputs.push_back(expert->forward(slots.narrow(0, e * capacity, capacity)));
  }
  const auto y = torch::cat(outputs) * slot_weight.unsqueeze(1);  // (E·cap, C)
  return torch::zeros({N + 1, C}, y.options()).index_add_(0, slot_token, y).narrow(0, 0, N);
}

void MoeImpl::UpdateSelectionBias() {
  if (config_.bias_update_rate <= 0 || !stats_.defined()) return;
  torch::NoGradGuard no_grad;
  const int64_t E = config_.n_experts;
  // Nothing routed: the loads and their mean are 0, every sign is 0 and the bias stays.
  const auto mean = stats_.narrow(0, E, 1) / static_cast<double>(E);
  const auto gap = mean - stats_.narrow(0, 0, E);  // > 0: underloaded, raise its bias
  selection_bias_.add_((torch::sign(gap) * config_.bias_update_rate).to(torch::kFloat));
}

std::vector<std::pair<std::string, double>> MoeStepMetrics(const std::vector<MoeImpl*>& layers) {
  if (layers.empty()) return {};
  const size_t E = layers[0]->step_stats().load.size();
  std::vector<double> load(E, 0.0);
  double aux = 0, z = 0, entropy = 0, worst = 0;
  int64_t assignments = 0, dropped = 0, tokens = 0;
  for (const MoeImpl* m : layers) {
    const auto& st = m->step_stats();
    if (st.tokens == 0) continue;
    aux += st.aux_sum / st.tokens;
    z += st.z_sum / st.tokens;
    entropy += st.entropy_sum;
    tokens += st.tokens;
    assignments += st.assignments;
    dropped += st.dropped;
    const double mean = static_cast<double>(st.assignments) / E;
    worst = std::max(worst, *std::max_element(st.load.begin(), st.load.end()) / mean);
    for (size_t e = 0; e < E; ++e) load[e] += st.load[e];
  }
  if (tokens == 0) return {};
  const double n_layers = static_cast<double>(layers.size());
  std::vector<std::pair<std::string, double>> out = {
      {"aux_loss", aux / n_layers},
      {"z_loss", z / n_layers},
      {"load_max_over_mean", worst},
      {"dropped_fraction", static_cast<double>(dropped) / static_cast<double>(assignments)},
      {"router_entropy", entropy / static_cast<double>(tokens)}};
  for (size_t e = 0; e < E; ++e) {
    out.emplace_back("load_" + std::to_string(e), load[e] / static_cast<double>(assignments));
  }
  return out;
}

}  // namespace isoflop::trainer
