// Learning-rate schedules over tokens (see schedule.h for the formulas).
#include "isoflop/trainer/schedule.h"

#include <algorithm>
#include <cmath>

namespace isoflop::trainer {

int64_t WarmupTokens(const TrainConfig& t) {
  if (t.warmup_tokens > 0) return t.warmup_tokens;
  return static_cast<int64_t>(std::llround(t.warmup_frac * static_cast<double>(t.tokens)));
}

double LearningRate(const TrainConfig& t, int64_t tokens_done) {
  const double done = static_cast<double>(std::clamp<int64_t>(tokens_done, 0, t.tokens));
  const double total = static_cast<double>(t.tokens);
  const double warmup = static_cast<double>(WarmupTokens(t));
  if (done < warmup) return t.lr * done / warmup;
  switch (t.schedule) {
    case Schedule::kConstant:
      return t.lr;
    case Schedule::kCosine: {
      if (total <= warmup) return t.min_lr;
      const double p = (done - warmup) / (total - warmup);  // 0 after warmup .. 1 at last token
      return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * p));
    }
    case Schedule::kWsd: {
      // Warmup-stable-decay (Hu et al. 2024, MiniCPM): constant, then linear to min_lr over
      // the last decay_frac of the budget.
      const double decay_start = std::max(warmup, total * (1.0 - t.decay_frac));
      if (done <= decay_start) return t.lr;
      const double p = (done - decay_start) / (total - decay_start);
      return t.lr + (t.min_lr - t.lr) * p;
    }
  }
  return t.lr;
}

}  // namespace isoflop::trainer
