// MoE throughput: (1) whole training steps (isoflop's model, synthetic windows, cross entropy
// plus the router losses, backward, clip, AdamW) of a dense model and of 8- and 16-expert top-2
// MoE models with the same active parameters (experts of half the dense d_ff), as tokens/s and
// time per active FLOP; (2) the feed-forward layer alone, forward and backward, for
// side-by-side comparison with bench/moe/moe_reference.py (the same layer in PyTorch).
// Usage: moe_bench [THREADS] [STEPS] [LAYER_REPS]. Prints one line per measurement.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "isoflop/trainer/accounting.h"
#include "isoflop/trainer/model.h"
#include "isoflop/trainer/moe.h"
#include "isoflop/trainer/synthetic.h"

using namespace isoflop;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Variant {
  std::string name;
  accounting::Shape shape;
};

// The dense base and its MoE variants: E experts of half the dense hidden size, top-2, so a
// token's active feed-forward parameters equal the dense model's (plus the router).
std::vector<Variant> Variants(int n_layer, int d_model, int n_head) {
  accounting::Shape dense;
  dense.n_layer = n_layer, dense.d_model = d_model, dense.n_head = n_head;
  dense.vocab_size = 32, dense.seq_len = 64;
  std::vector<Variant> out = {{"dense", dense}};
  for (int experts : {8, 16}) {
    accounting::Shape s = dense;
    s.moe.emplace();
    s.moe->n_experts = experts;
    s.moe->top_k = 2;
    s.moe->expert_d_ff = accounting::EffectiveDff(dense) / 2;
    out.push_back({"moe" + std::to_string(experts) + "x2", s});
  }
  return out;
}

// Median seconds per training step over `steps` steps (after 5 warm-up steps).
double StepSeconds(const accounting::Shape& s, int steps) {
  torch::manual_seed(0);
  trainer::Transformer model(s);
  torch::optim::AdamW opt(model->parameters(),
                          torch::optim::AdamWOptions(3e-3).betas({0.9, 0.95}).weight_decay(0.1));
  auto lang = trainer::SyntheticLanguage::Build(trainer::DataConfig{});
  trainer::Rng rng(1);
  const int B = 16, T = s.seq_len;
  std::vector<int64_t> buf(B * (T + 1));
  std::vector<double> times;
  for (int step = 0; step < steps + 5; ++step) {
    const auto t0 = Clock::now();
    for (int b = 0; b < B; ++b) lang->Sample(rng, T + 1, &buf[b * (T + 1)]);
    const auto tokens = torch::from_blob(buf.data(), {B, T + 1}, torch::kInt64).clone();
    opt.zero_grad();
    const auto logits = model->forward(tokens.narrow(1, 0, T));
    auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, s.vocab_size}),
                                                     tokens.narrow(1, 1, T).reshape({-1}));
    if (s.moe) loss = loss + model->MoeAuxLoss();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    opt.step();
    for (trainer::MoeImpl* m : model->moe_layers()) m->ResetStepStats();
    if (step >= 5) times.push_back(Seconds(t0));
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

// Median seconds of one forward + backward of the feed-forward layer on (16, 64, C) input.
template <typename Layer>
double LayerSeconds(Layer& layer, int d_model, int reps) {
  torch::manual_seed(1);
  const auto x = torch::randn({16, 64, d_model}).requires_grad_(true);
  std::vector<double> times;
  for (int r = 0; r < reps + 3; ++r) {
    const auto t0 = Clock::now();
    auto loss = layer->forward(x).pow(2).mean();
    if constexpr (std::is_same_v<Layer, trainer::Moe>) loss = loss + layer->aux_loss() + layer->z_loss();
    loss.backward();
    if (r >= 3) times.push_back(Seconds(t0));
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int steps = argc > 2 ? std::atoi(argv[2]) : 30;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 30;
  torch::set_num_threads(threads);
  std::printf("threads %d, batch 16 x 64 tokens, median of %d steps / %d layer calls\n", threads,
              steps, reps);
  const int B = 16, T = 64;
  for (const auto& [L, C, H] : {std::tuple{2, 128, 8}, std::tuple{4, 256, 8}}) {
    double dense_ps = 0;
    for (const Variant& v : Variants(L, C, H)) {
      const double sec = StepSeconds(v.shape, steps);
      const double tps = B * T / sec;
      const double flops = accounting::FlopsPerToken6NAttention(v.shape);  // active, per token
      const double ps = 1e12 / (tps * flops);
      if (!v.shape.moe) dense_ps = ps;
      std::printf(
          "step   %dx%-4d %-8s N_active %9lld  N_total %9lld  tokens/s %8.0f  active GFLOP/s "
          "%6.2f  ps/active FLOP %7.2f  vs dense %5.2fx\n",
          L, C, v.name.c_str(), static_cast<long long>(accounting::ActiveParams(v.shape)),
          static_cast<long long>(accounting::TotalParams(v.shape)), tps, tps * flops / 1e9, ps,
          ps / dense_ps);
    }
    for (const Variant& v : Variants(L, C, H)) {
      double sec;
      if (v.shape.moe) {
        trainer::Moe layer(v.shape);
        sec = LayerSeconds(layer, C, reps);
      } else {
        trainer::Mlp layer(v.shape);
        sec = LayerSeconds(layer, C, reps);
      }
      std::printf("layer  C=%-4d   %-8s forward+backward %8.3f ms  (cpp)\n", C, v.name.c_str(),
                  1e3 * sec);
    }
  }
  return 0;
}
