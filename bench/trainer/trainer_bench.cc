// Training throughput of isoflop's model and loop (the same steps as train_loop.cc: windows
// from the synthetic source, forward, sum-reduced cross entropy, backward, clip, AdamW step)
// for three sizes, and model FLOPs utilisation against a measured fp32 matmul peak.
// Prints one line per size; bench/trainer/run.sh puts it beside torch_reference.py. A third
// argument `count` installs the CPU tensor-byte counter isoflop-train runs with
// (tensor_bytes.h) first, to measure what it costs.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "isoflop/trainer/accounting.h"
#include "isoflop/trainer/model.h"
#include "isoflop/trainer/synthetic.h"
#include "isoflop/trainer/tensor_bytes.h"

using namespace isoflop;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Best of several fp32 n×n matmuls, in FLOP/s.
double MatmulPeak(int n) {
  const auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto c = torch::mm(a, b);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    for (int i = 0; i < 10; ++i) c = torch::mm(a, b);
    best = std::max(best, 10 * 2.0 * n * n * n / Seconds(t0));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int steps = argc > 2 ? std::atoi(argv[2]) : 60;
  const bool count = argc > 3 && std::string(argv[3]) == "count";
  if (count) trainer::CountCpuTensorBytes();
  torch::set_num_threads(threads);
  const double peak = MatmulPeak(1024);
  std::printf("threads %d  matmul peak %.1f GFLOP/s (fp32 1024^3)\n", threads, peak / 1e9);
  struct Size {
    const char* name;
    int n_layer, d_model, n_head;
  };
  for (const Size& z :
       {Size{"small", 1, 32, 2}, Size{"medium", 2, 64, 4}, Size{"large", 4, 128, 8}}) {
    accounting::Shape s;
    s.n_layer = z.n_layer, s.d_model = z.d_model, s.n_head = z.n_head;
    s.vocab_size = 32, s.seq_len = 64;
    torch::manual_seed(0);
    trainer::Transformer model(s);
    std::vector<torch::Tensor> decay, no_decay;
    for (auto& p : model->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
    auto opts = torch::optim::AdamWOptions(3e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1);
    auto opts0 = opts;
    opts0.weight_decay(0.0);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(opts));
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(opts0));
    torch::optim::AdamW opt(groups, opts);
    auto lang = trainer::SyntheticLanguage::Build(trainer::DataConfig{});
    trainer::Rng rng(1);
    const int B = 16, T = s.seq_len;
    std::vector<int64_t> buf(B * (T + 1));
    double seconds = 0;
    for (int step = 0; step < steps + 5; ++step) {
      const auto t0 = Clock::now();
      for (int b = 0; b < B; ++b) lang->Sample(rng, T + 1, &buf[b * (T + 1)]);
      const auto tokens = torch::from_blob(buf.data(), {B, T + 1}, torch::kInt64).clone();
      opt.zero_grad();
      const auto logits = model->forward(tokens.narrow(1, 0, T));  // (B, T, V)
      const auto loss = torch::nn::functional::cross_entropy(
          logits.reshape({-1, s.vocab_size}), tokens.narrow(1, 1, T).reshape({-1}),
          torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
      (loss / double(B * T)).backward();
      const double loss_v = loss.item<double>();
      torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
      for (auto& g : opt.param_groups())
        static_cast<torch::optim::AdamWOptions&>(g.options()).lr(3e-3);
      opt.step();
      (void)loss_v;
      if (step >= 5) seconds += Seconds(t0);  // 5 warm-up steps
    }
    const double tps = steps * B * T / seconds;
    const double flops = accounting::FlopsPerToken6NAttention(s);
    std::printf("%-9s %-6s N=%-8lld tokens/s %9.0f  model GFLOP/s %6.2f  MFU %5.2f%%\n",
                count ? "cpp+count" : "cpp", z.name,
                static_cast<long long>(accounting::TotalParams(s)), tps, tps * flops / 1e9,
                100 * tps * flops / peak);
  }
  return 0;
}
