// Token sources for training and validation: the synthetic language, raw text bytes, nanoGPT
// .bin files and llm.c shards. Files are memory-mapped; windows are drawn with a caller-owned
// Rng, so the data position of a run is exactly the Rng state (checkpointed). Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/trainer/rng.h"
#include "isoflop/trainer/run_config.h"

namespace isoflop::trainer {

// llm.c shard header: 256 little-endian int32; [0] magic, [1] version, [2] token count.
inline constexpr int32_t kLlmcMagicV1 = 20240520;  // version 1, uint16 tokens
inline constexpr int32_t kLlmcMagicV7 = 20240801;  // version 7, uint32 tokens
inline constexpr int kLlmcHeaderInts = 256;

// A source of token windows. Not thread-safe (one per training process); the files it maps
// stay mapped for its lifetime.
class TokenSource {
 public:
  virtual ~TokenSource() = default;
  // Writes one training window of `len` tokens to `out`. Corrupt when a token id is >= the
  // model's vocabulary (names the file).
  virtual Status SampleTrain(Rng& rng, int len, int64_t* out) = 0;
  // Same for the held-out split.
  virtual Status SampleVal(Rng& rng, int len, int64_t* out) = 0;
  // Validation loss averages only targets with at least this many tokens of context
  // (2 for the synthetic order-2 source, so the floor is exactly its entropy rate; else 1).
  virtual int MinValContext() const { return 1; }
  // Exact entropy rate in nats/token when known (synthetic only).
  virtual std::optional<double> EntropyNats() const { return std::nullopt; }
};

// Opens the source a run config names, for windows of up to `max_len` tokens and token ids
// below `vocab_size`. NotFound / Corrupt / InvalidArgument with the file name and what is wrong.
Result<std::unique_ptr<TokenSource>> OpenTokenSource(const DataConfig& c, int max_len,
                                                     int vocab_size);

// What a token file holds, for the checks made before any run starts (the sweep manager, at
// `sweep plan`, `run`, `retry` and `sync`). Plain value.
struct TokenFileSummary {
  int64_t tokens = 0;   // tokens in the file (an llm.c shard's header count)
  uint32_t max_id = 0;  // its largest token id
  int64_t max_at = -1;  // the first token index holding max_id; -1: the file holds no token
};

// Reads a nanoGPT .bin file (DataSource::kBin) or an llm.c shard (kLlmc) whole, with the checks
// OpenTokenSource makes (Corrupt naming the file: an odd .bin size, a bad llm.c header or size).
// `progress(bytes_done, bytes_total)`, when given, is called after each 64 MiB and at the end.
// NotFound when the file cannot be opened; InvalidArgument for another source.
Result<TokenFileSummary> SummarizeTokenFile(
    const std::string& path, DataSource source,
    const std::function<void(int64_t, int64_t)>& progress = nullptr);

// The one wording, for the trainer and the manager's check, of a token id the model cannot
// embed: Corrupt "FILE: token id 50256 at token 17 is >= model.vocab_size 50000; raise ...".
Status TokenIdTooLarge(const std::string& path, uint32_t id, int64_t at, int vocab_size);

// How a text file's bytes split: the last ceil(val_fraction * bytes) are held out.
int64_t TextValTokens(int64_t bytes, double val_fraction);

// Windows of `max_len` tokens (seq_len + 1: inputs and the shifted targets) a split of files
// with these token counts offers; the split is unusable at 0. `what` is "training data" or
// "validation data"; NoWindow is the error for an unusable split, naming its files.
int64_t WindowStarts(const std::vector<int64_t>& file_tokens, int max_len);
Status NoWindow(const std::string& what, const std::vector<std::string>& files, int max_len);

// Writes an llm.c shard (for tests and tools): version 1 (uint16) or 7 (uint32).
Status WriteLlmcShard(const std::string& path, const std::vector<uint32_t>& tokens, int version);
// Writes a nanoGPT .bin file (uint16, little-endian).
Status WriteBinTokens(const std::string& path, const std::vector<uint16_t>& tokens);

}  // namespace isoflop::trainer
