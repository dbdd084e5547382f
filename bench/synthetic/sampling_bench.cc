// Sampling speed of the synthetic languages: tokens/s of SyntheticLanguage::Sample in the
// windows training draws (65 tokens), single-threaded, beside the build time of each language.
// Training runs at ~1e5-4e5 tokens/s per run here, so sampling must stay far above that.
#include <chrono>
#include <cstdio>
#include <vector>

#include "isoflop/trainer/synthetic.h"

using namespace isoflop::trainer;
using Clock = std::chrono::steady_clock;

int main() {
  struct Case {
    const char* name;
    DataConfig config;
  };
  DataConfig skills;
  skills.language = SyntheticKind::kSkills;
  skills.vocab = 192;  // the quickstart's
  for (const Case& c :
       {Case{"markov V=32 (default)", DataConfig{}}, Case{"skills V=192", skills}}) {
    const auto t0 = Clock::now();
    auto lang = SyntheticLanguage::Build(c.config);
    const double build_s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!lang.ok()) {
      std::printf("%s: %s\n", c.name, lang.status().message().c_str());
      return 1;
    }
    Rng rng(1);
    const int len = 65, windows = 200000;
    std::vector<int64_t> w(len);
    int64_t checksum = 0;
    const auto t1 = Clock::now();
    for (int i = 0; i < windows; ++i) {
      lang->Sample(rng, len, w.data());
      checksum += w[len - 1];
    }
    const double s = std::chrono::duration<double>(Clock::now() - t1).count();
    std::printf(
        "%-22s H %.4f nats/token  build %6.1f ms  sample %6.1f M tokens/s  (checksum %lld)\n",
        c.name, lang->EntropyRate(), 1e3 * build_s, windows * double(len) / s / 1e6,
        static_cast<long long>(checksum));
  }
  return 0;
}
