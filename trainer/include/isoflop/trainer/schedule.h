// Learning-rate schedules as functions of tokens trained, so a partial last step and any batch
// size end exactly at min_lr on the last token. Torch-free; pure functions, thread-safe.
#pragma once

#include <cstdint>

#include "isoflop/trainer/run_config.h"

namespace isoflop::trainer {

// Tokens of linear warmup for a run: warmup_tokens when > 0, else warmup_frac of the budget.
int64_t WarmupTokens(const TrainConfig& t);

// Learning rate for the optimizer step that ends after `tokens_done` tokens (1 <= tokens_done
// <= t.tokens). Linear warmup from 0 to lr over WarmupTokens, then
//   cosine:   min_lr + (lr - min_lr)/2 · (1 + cos(π·p)), p = (tokens - warmup)/(D - warmup)
//   wsd:      lr until the last decay_frac·D tokens, then linear to min_lr
//   constant: lr
// so LearningRate(t, t.tokens) == t.min_lr for cosine and wsd.
double LearningRate(const TrainConfig& t, int64_t tokens_done);

}  // namespace isoflop::trainer
