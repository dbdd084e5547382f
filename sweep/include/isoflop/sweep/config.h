// Sweep files (sweeps/*.yaml): the parsed, validated description of a scaling-law sweep. Parsed
// once, here, from YAML text plus `--set key.path=value` overrides; the planner and scheduler
// never see YAML. The file format is documented in docs/sweep-files.md.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/trainer/accounting.h"

namespace isoflop::sweep {

// Bounds checked where a sweep file is parsed (and, for D, where the planner computes it).
// Token counts travel as JSON numbers and doubles (C / 6N): above 2^53 they are no longer
// exact integers, and the int64 arithmetic after them (steps, warmup) overflows soon after.
inline constexpr double kMaxTokens = 9007199254740992.0;  // 2^53
// The trainer keeps the held-out set in memory as 64-bit tokens (twice while building it) and
// evaluates all of it every eval_interval_steps: 2^28 tokens already need 4 GiB.
inline constexpr int64_t kMaxEvalTokens = int64_t{1} << 28;
// Sequences per forward pass (an int in the trainer); far above what any device holds.
inline constexpr int64_t kMaxMicroBatch = int64_t{1} << 20;
// A sweep name is a folder name (runs/<name>): at most 255 bytes on Linux file systems.
inline constexpr size_t kMaxSweepNameBytes = 255;

// How the sizes trained at each budget are chosen from the ladder. Plain value.
struct SizeSelection {
  enum class Mode { kWindow, kPoints };
  Mode mode = Mode::kWindow;
  // kWindow: every ladder size whose tokens per parameter D/N at the budget lies in
  // [min_tokens_per_param, max_tokens_per_param] (D = C / (6 N_total)).
  double min_tokens_per_param = 0;
  double max_tokens_per_param = std::numeric_limits<double>::infinity();
  // kPoints: `points_per_budget` consecutive ladder sizes centred on the size nearest the guess
  // N = sqrt(C / (6 * guess_tokens_per_param)), moved `shift` ladder steps (negative = smaller).
  int points_per_budget = 5;
  double guess_tokens_per_param = 20;  // Hoffmann et al. 2022: ~20 at scale
  int shift = 0;
};

// Per-size hyperparameter rule: field = field(base) * (per / reference)^exponent, e.g. lr
// proportional to 1/width with {field: lr, per: d_model, exponent: -1, reference: 64}. Scaling
// lr also scales min_lr, keeping their ratio.
struct TrainRule {
  std::string field;  // a numeric train field ("lr", "weight_decay", ...)
  std::string per;    // "d_model" | "n_layer" | "n_total" | "n_non_embedding"
  double exponent = 0;
  double reference = 1;  // the value of `per` at which the base value applies; > 0
};

// One extra grid axis from the W&B-style `parameters:` block. Every combination of every axis
// is a separate cell.
struct ParameterAxis {
  std::string path;                    // "train.lr", "data.lambda", ...
  std::vector<nlohmann::json> values;  // resolved values (min/max/count/q expanded)
};

// The `executor:` section. Plain value.
struct ExecutorConfig {
  std::string kind = "local";   // "local" | "slurm"
  std::string device = "auto";  // "auto" (GPUs when present) | "cpu" | "cuda"
  // Threads per CPU run: 0 = all cores, one run at a time; kAutoCpusPerRun (`auto`) = all cores
  // for one run, or one-thread runs on every core when a measurement says that is faster
  // (ChooseCpuLayout in throughput_probe.h); n = n threads per run, cores / n runs at once.
  static constexpr int kAutoCpusPerRun = -1;
  int cpus_per_run = 0;
  std::vector<int> gpus;         // restrict to these GPU indices; empty = all visible
  int max_parallel = 0;          // most runs at once; 0 = as many as devices/slots allow
  // Data parallel: processes (ranks) per run, one GPU each on GPU, cpus_per_run threads each on
  // CPU (isoflop-train --nproc; SLURM: srun --ntasks). Not part of the cell key.
  int ranks_per_run = 1;
  int max_retries = 1;           // relaunches of a crashed run (not diverged, not bad config)
  double device_memory_gib = 0;  // per-device memory for packing/warnings; 0 = detect
  // Every run recomputes block activations in backward (train.activation_checkpointing).
  bool activation_checkpointing = false;
  // Memory-estimate assumptions about the trainer (they do not change run.json); unset = what
  // the trainer does on the plan's device: on CUDA, bf16 autocast and fused attention (LibTorch
  // 2); on CPU, fp32 and explicit attention.
  std::optional<bool> mixed_precision;  // bf16 compute with fp32 master weights
  std::optional<bool> fused_attention;  // no (B, heads, T, T) matrix kept
  double throughput_gflops = 0;         // achieved FLOP/s per run for time estimates; 0 = model

  // kind: slurm (sweep/slurm_executor.h). Empty strings are left to the cluster's defaults.
  struct SetupLine {
    std::string shell;              // a shell line, run as written (`module load cuda`)
    std::vector<std::string> argv;  // or a command whose arguments are quoted one by one
  };
  struct Slurm {
    // `mem` as sbatch's --mem takes it, or kAutoMem: each CPU run asks for its own estimate.
    static constexpr const char* kAutoMem = "auto";
    std::string partition, account, qos, time, constraint, gres, mem;
    // GPUs each run takes, one data-parallel rank per GPU (ranks_per_run follows it); read by
    // the local executor too, despite living here. 0: no GPU asked for.
    int gpus_per_run = 0;
    int max_array_size = 1000;   // a job array holds at most this many tasks (MaxArraySize)
    int signal_grace_s = 120;    // USR2 this long before the time limit: checkpoint and exit
    double poll_seconds = 10;    // sacct/squeue polling; backs off to 4x while nothing changes
    std::vector<std::string> sbatch_args;  // passed to sbatch as they are, one argument each
    std::vector<SetupLine> setup;          // run before the trainer in every job
    std::string run_root;  // absolute folder the nodes share; runs go to RUN_ROOT/<sweep name>
  } slurm;
};

// The `fit:` section: what runs after the sweep. Plain value.
struct FitSection {
  std::string method = "parametric";  // parametric | isoflop | envelope
  std::string form = "chinchilla";
  std::string convention = "total";  // total | non_embedding: which N the fit sees
  int bootstrap = 200;               // resamples for intervals; 0 = none
  bool fixed_entropy = true;         // also fit with E held at the data's true entropy
  bool include_diverged = false;     // diverged runs are excluded by default
};

// A parsed sweep file. Plain value; thread-compatible.
struct SweepConfig {
  std::string name;                    // [A-Za-z0-9][A-Za-z0-9._-]*, <= 255 bytes, unique
  std::string file_path;               // as given ("<text>" when parsed from a string)
  std::string text;                    // the file's text (overrides not applied)
  std::vector<std::string> overrides;  // the --set arguments, in order
  std::string hash;                    // hex SHA-256 of text plus overrides
  nlohmann::json data;                 // run.json "data" object, paths made absolute
  std::string family = "dense";
  accounting::Shape base;  // fixed model fields (vocab, seq_len, norm, pos, mlp, ...)
  std::vector<accounting::Shape> ladder;  // sizes, ascending by N_total, distinct
  std::vector<double> budgets;            // FLOPs (C = 6 N_total D), ascending
  std::vector<std::string> budget_where;  // per budget, "FILE:LINE:COL: budgets[i]" for messages
  // Where each run.json field the file sets was written ("data.vocab" -> "FILE:LINE:COL:
  // data.vocab", also "parameters.<axis>" values as "data.x"/"train.x", and sections as
  // "data", "train", "model"), so a cell the trainer would refuse is a plan-time error there.
  std::map<std::string, std::string> field_where;
  SizeSelection sizes;
  nlohmann::json train;  // run.json "train" object without "tokens" (defaults filled)
  std::vector<TrainRule> rules;
  std::vector<uint64_t> seeds = {0};
  std::vector<ParameterAxis> parameters;
  ExecutorConfig executor;
  FitSection fit;
  std::vector<double> report_budgets;  // budgets to answer for; default: next budget up
  std::string output_dir;              // absolute; run dirs are output_dir/<cell key>
  std::string base_dir;                // the `cwd` relative data paths and output resolved against
};

// Parses sweep-file `text` (named `file_path` in messages) with `overrides` ("a.b=value", the
// value parsed as YAML) applied first. `cwd` resolves relative data paths and `output`.
// Errors: InvalidArgument "FILE:LINE:COL: key.path: what was expected" for YAML syntax, unknown
// keys, duplicate keys (the second one is named), wrong types and impossible values, among them
// token counts above 2^53 ("--set a.b=v: ..." for an override's value).
Result<SweepConfig> ParseSweepConfig(const std::string& text, const std::string& file_path,
                                     const std::vector<std::string>& overrides,
                                     const std::string& cwd);

// Reads `path` and parses it against the current directory. NotFound when unreadable;
// InvalidArgument when it is not a regular file (a FIFO or a device would block or never end).
Result<SweepConfig> LoadSweepConfig(const std::string& path,
                                    const std::vector<std::string>& overrides = {});

// Where a run.json field was set, for an error about it: "FILE:LINE:COL: data.train" from
// field_where, else its section's place with the field named, else "FILE: data.train".
std::string FieldWhere(const SweepConfig& config, const std::string& field);

// Lowercase hex SHA-256 of `bytes` (FIPS 180-4); the same on every machine.
std::string Sha256Hex(const std::string& bytes);

}  // namespace isoflop::sweep
