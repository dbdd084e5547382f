// The resolved configuration of one training run: what DIR/run.json holds (docs/run-protocol.md).
// Parsed and validated once, here; the training loop never sees JSON. Torch-free.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/trainer/accounting.h"

namespace isoflop::trainer {

enum class DataSource { kSynthetic, kText, kBin, kLlmc };
// Which built-in synthetic language (docs/synthetic-data.md): the order-2 Markov mixture, or the
// Zipf-distributed skills whose learnable part grows as a power of N and D.
enum class SyntheticKind { kMarkov, kSkills };
enum class Schedule { kCosine, kWsd, kConstant };

// Data options; which fields matter depends on `source`. Plain value.
struct DataConfig {
  DataSource source = DataSource::kSynthetic;
  // synthetic (see synthetic.h for the process)
  int vocab = 32;                      // must equal model.vocab_size
  uint64_t build_seed = 0;             // the language itself: same seed, same tables, same entropy
  std::optional<uint64_t> train_seed;  // training stream; unset = the run's seed
  uint64_t val_seed = 1234567;         // held-out stream; fixed so every run sees the same val set
  int k1 = 8;                          // successors per order-1 context
  int k2 = 3;                          // successors per order-2 context
  double lambda = 0.7;                 // weight of the order-2 table in the mixture
  double zipf = 1.0;                   // exponent of the token popularity law u_i ~ i^-zipf
  // k1, k2, lambda and zipf belong to the markov language; skill_zipf to the skills language.
  SyntheticKind language = SyntheticKind::kMarkov;  // markov keeps every older sweep's data
  double skill_zipf = 1.4;  // skill frequency p_k ~ k^-skill_zipf; > 1 gives a power-law tail
  // text
  std::vector<std::string> paths;  // files whose raw bytes are the corpus (vocab 256)
  double val_fraction = 0.1;       // tail fraction of each file held out for validation
  // bin
  std::string train_bin, val_bin;  // nanoGPT uint16 token files
  // llmc
  std::vector<std::string> train_shards, val_shards;  // llm.c shards (header + tokens)
};

// Optimisation options. Units are tokens and optimizer steps. Plain value.
// The most CPU threads a run may ask for: more makes no sense on any machine, and a pool of
// 100,000 threads took gigabytes and minutes to start, deaf to SIGTERM all the while.
inline constexpr int kMaxThreads = 1024;

struct TrainConfig {
  int64_t tokens = 0;           // exact training budget D (required)
  int64_t batch_tokens = 1024;  // tokens per optimizer step; a multiple of seq_len
  int micro_batch = 16;         // sequences per forward pass; accumulation above it
  double lr = 3e-3;             // peak learning rate
  double min_lr = 3e-4;         // reached exactly at the last token
  Schedule schedule = Schedule::kCosine;
  double warmup_frac = 0.1;   // of the budget, when warmup_tokens is 0
  int64_t warmup_tokens = 0;  // overrides warmup_frac when > 0
  double decay_frac = 0.2;    // wsd: final fraction spent decaying to min_lr
  double weight_decay = 0.1;  // matrices only (dim >= 2)
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;        // global L2 norm; <= 0 disables
  int eval_interval_steps = 50;  // and at the end
  int64_t eval_tokens = 65536;   // size of the fixed held-out set
  int log_interval_steps = 10;
  int ckpt_interval_steps = 200;          // and at every signal-driven stop
  int threads = 0;                        // CPU threads; 0 = all cores; at most kMaxThreads
  std::string device = "auto";            // auto | cpu | cuda
  bool activation_checkpointing = false;  // recompute block activations in backward (memory)
};

struct RunConfig {
  int schema = 1;
  std::string name;
  uint64_t seed = 0;             // model init and data window RNG
  std::string family = "dense";  // dense | moe; "moe" exactly when model.moe is set
  accounting::Shape model;
  DataConfig data;
  TrainConfig train;

  // Cross-field checks (shape and its MoE fields, batch multiple of seq_len, budget >= one
  // batch, vocab match).
  // InvalidArgument names the field as "field 'train.tokens': ...".
  Status Validate() const;
};

// Parses run.json text. InvalidArgument names the field on a missing required field, a wrong
// type, an unknown key or an invalid value; the caller prefixes the file name.
Result<RunConfig> ParseRunConfig(const std::string& json_text);
// Reads run.json's "model.moe" object into `moe` (fields absent keep their values: the
// defaults of accounting::MoeShape). InvalidArgument names the field ("field 'model.moe.top_k':
// ..."); cross-field checks are accounting::Shape::Validate's. The sweep parser uses it for a
// sweep file's `model.moe` block.
Status ParseMoeObject(const nlohmann::json& j, accounting::MoeShape* moe);

// The field a run-config error names and what it says: "field 'data.vocab': must be in 2..512"
// (the form every error above has) -> {"data.vocab", "must be in 2..512"}; {"", message} for a
// message in another form. Callers that know where a field came from (the sweep parser) name
// that place instead.
struct FieldError {
  std::string field, what;
};
FieldError SplitFieldError(const std::string& message);

// Reads and parses a file; errors are prefixed with the path.
Result<RunConfig> LoadRunConfig(const std::string& path);
// Serialises every field (the fully resolved form), pretty-printed.
std::string RunConfigToJson(const RunConfig& c);

// run.json's "model" and "train" objects as RunConfigToJson writes them: every field ("moe"
// only when shape.moe is set, so a dense object is what it was before MoE existed). The sweep
// planner builds each cell's config (and from it the cell key) from these, so a default changed
// here is changed everywhere, and moves the keys of cells that relied on it.
nlohmann::json ModelToJson(const std::string& family, const accounting::Shape& shape);
nlohmann::json TrainToJson(const TrainConfig& train);

std::string ToString(DataSource s);
std::string ToString(Schedule s);

}  // namespace isoflop::trainer
