// The planner: budgets x selected ladder sizes x seeds x parameter axes -> cells with resolved
// run configs, stable keys, every N/FLOP convention and resource estimates.
#include "isoflop/sweep/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include "isoflop/common/format.h"
#include "isoflop/trainer/run_config.h"

namespace isoflop::sweep {
namespace {

using nlohmann::json;

// Ladder indices trained at budget C.
// `note` receives why the sizes are not the ones asked for ("" when they are).
std::vector<size_t> SelectSizes(const SweepConfig& c, double budget, std::string* note) {
  std::vector<size_t> out;
  const auto& ladder = c.ladder;
  if (c.sizes.mode == SizeSelection::Mode::kWindow) {
    for (size_t i = 0; i < ladder.size(); ++i) {
      // Tokens per active parameter: what a token costs (for a dense model, per parameter).
      const double tpp =
          budget / accounting::FlopsPerToken6N(ladder[i]) / accounting::ActiveParams(ladder[i]);
      if (tpp >= c.sizes.min_tokens_per_param && tpp <= c.sizes.max_tokens_per_param) {
        out.push_back(i);
      }
    }
    return out;
  }
  // Points around the guess N* = sqrt(C / (6 g)) (from C = 6 N D with D = g N).
  const double guess = std::sqrt(budget / (6.0 * c.sizes.guess_tokens_per_param));
  size_t best = 0;
  double best_err = INFINITY;
  for (size_t i = 0; i < ladder.size(); ++i) {
    const double err =
        std::abs(std::log(double(accounting::ActiveParams(ladder[i]))) - std::log(guess));
    if (err < best_err) best_err = err, best = i;
  }
  const int k = std::min<int>(c.sizes.points_per_budget, ladder.size());
  const int wanted = static_cast<int>(best) + c.sizes.shift - (k - 1) / 2;
  const int start = std::clamp(wanted, 0, static_cast<int>(ladder.size()) - k);
  if (k < c.sizes.points_per_budget) {
    *note = "sizes.points_per_budget " + std::to_string(c.sizes.points_per_budget) +
            " is more than the ladder's " + std::to_string(ladder.size()) +
            " sizes: every size trains";
  } else {
    // N* beyond an end of the ladder: no size on that side of it trains, so the minimum the
    // isoFLOP fit looks for may lie beyond the ladder (ParseSweepConfig sorts it by N_active).
    const double lo = double(accounting::ActiveParams(ladder.front()));
    const double hi = double(accounting::ActiveParams(ladder.back()));
    if (guess < lo || guess > hi) {
      const bool low = guess < lo;
      *note = "N* = sqrt(C / 6g) = " + Fmt("%.3g", guess) + " is " +
              (low ? "below the ladder's smallest" : "above the ladder's largest") + " size (" +
              Fmt("%.3g", low ? lo : hi) + "): no size " + (low ? "below" : "above") +
              " it trains, so the isoFLOP minimum may lie beyond the ladder: extend model.ladder";
    }
  }
  for (int i = 0; i < k; ++i) out.push_back(start + i);
  return out;
}

double RuleBase(const TrainRule& r, const accounting::Shape& s) {
  if (r.per == "d_model") return s.d_model;
  if (r.per == "n_layer") return s.n_layer;
  if (r.per == "n_total") return double(accounting::TotalParams(s));
  return double(accounting::NonEmbeddingParams(s));
}

// The trainer's own check of a cell's run.json (trainer/run_config.h, the one definition), as
// a sweep-file error: "FILE:LINE:COL: data.vocab: must be in 2..512 (cell ...)".
Status ValidateCell(const SweepConfig& c, const Cell& cell, const std::string& tag) {
  json run = cell.config;
  run["name"] = tag;
  Result<trainer::RunConfig> parsed = trainer::ParseRunConfig(run.dump());
  if (parsed.ok()) return Status::Ok();
  const trainer::FieldError e = trainer::SplitFieldError(parsed.status().message());
  return Status::InvalidArgument((e.field.empty() ? c.file_path : FieldWhere(c, e.field)) + ": " +
                                 e.what + " (the trainer would refuse " + tag + ")");
}

// Every combination of the parameter axes, first axis slowest.
std::vector<std::map<std::string, json>> AxisGrid(const std::vector<ParameterAxis>& axes) {
  std::vector<std::map<std::string, json>> grid = {{}};
  for (const auto& ax : axes) {
    std::vector<std::map<std::string, json>> next;
    for (const auto& g : grid) {
      for (const auto& v : ax.values) {
        auto m = g;
        m[ax.path] = v;
        next.push_back(std::move(m));
      }
    }
    grid = std::move(next);
  }
  return grid;
}

}  // namespace

std::string Cell::ShapeString() const {
  return std::to_string(shape.n_layer) + "x" + std::to_string(shape.d_model) + "h" +
         std::to_string(shape.n_head);
}

const char* ToString(Cell::EstimateSource source) {
  switch (source) {
    case Cell::EstimateSource::kProbed:
      return "probed";
    case Cell::EstimateSource::kInterpolated:
      return "interpolated";
    case Cell::EstimateSource::kModel:
      break;
  }
  return "model";
}

Result<Plan> PlanSweep(const SweepConfig& c, const PlanEnvironment& env) {
  Plan plan;
  plan.gpu = env.gpu;
  plan.device_memory_bytes = env.device_memory_bytes;
  std::set<std::string> keys;
  // The grid multiplies: five axes of 10 values are 100,000 combinations per size and budget.
  // Past kMaxCells the plan is refused before it is built (20 million cells took gigabytes).
  double cells = static_cast<double>(c.budgets.size()) * c.ladder.size() * c.seeds.size();
  std::string axes_said;
  for (const auto& ax : c.parameters) {
    cells *= static_cast<double>(ax.values.size());
    axes_said += " x " + std::to_string(ax.values.size()) + " (" + ax.path + ")";
  }
  if (cells > kMaxCells) {
    return Status::InvalidArgument(
        c.file_path + ": the sweep is up to " + Fmt("%.4g", cells) + " cells (" +
        std::to_string(c.budgets.size()) + " budgets x " + std::to_string(c.ladder.size()) +
        " sizes x " + std::to_string(c.seeds.size()) + " seeds" + axes_said + "), more than " +
        std::to_string(kMaxCells) + ": fewer values per parameter axis, or several sweeps");
  }
  const auto grid = AxisGrid(c.parameters);
  MemoryOptions mem_opts;
  mem_opts.mixed_precision = c.executor.mixed_precision.value_or(env.gpu);
  mem_opts.activation_checkpointing = c.executor.activation_checkpointing;
  mem_opts.fused_attention = c.executor.fused_attention.value_or(env.gpu);
  mem_opts.gpu = env.gpu;
  bool warned_memory = false;

  for (size_t bi = 0; bi < c.budgets.size(); ++bi) {
    const double budget = c.budgets[bi];
    const std::string where =
        bi < c.budget_where.size() ? c.budget_where[bi] : "budgets[" + std::to_string(bi) + "]";
    std::vector<std::string> dropped;  // sizes whose run would be shorter than one batch
    double smallest_step_flops = HUGE_VAL;
    int planned = 0;
    std::string size_note;
    const std::vector<size_t> sizes = SelectSizes(c, budget, &size_note);
    if (!size_note.empty())
      plan.warnings.push_back("budget " + Fmt("%.3g", budget) + ": " + size_note);
    if (sizes.empty()) {
      plan.warnings.push_back(
          "budget " + Fmt("%.3g", budget) +
          ": no ladder size has tokens per parameter inside sizes.tokens_per_param; "
          "widen the window or extend the ladder");
    } else if (sizes.size() < 3) {
      plan.warnings.push_back("budget " + Fmt("%.3g", budget) + ": only " +
                              std::to_string(sizes.size()) +
                              " size(s), which cannot bracket an isoFLOP minimum (need >= 3)");
    }
    for (size_t si : sizes) {
      for (uint64_t seed : c.seeds) {
        for (const auto& axes : grid) {
          // Expert axes change the model itself (and so N, D and the FLOPs); n_experts 0 is the
          // dense model of the same shape, with the dense sweep's cell key.
          accounting::Shape shape = c.ladder[si];
          std::string family = c.family;
          for (const auto& [path, value] : axes) {
            if (path.rfind("model.moe.", 0) != 0 || !shape.moe) continue;
            const int v = value.get<int>();
            const std::string f = path.substr(10);
            if (f == "n_experts") shape.moe->n_experts = v;
            if (f == "top_k") shape.moe->top_k = v;
            if (f == "granularity") shape.moe->granularity = v;
            if (f == "n_shared_experts") shape.moe->n_shared_experts = v;
          }
          if (shape.moe && shape.moe->n_experts == 0) {
            shape.moe.reset();
            family = "dense";
          }
          Cell cell;
          cell.budget_index = static_cast<int>(bi);
          cell.budget_flops = budget;
          cell.shape = shape;
          cell.seed = seed;
          cell.axes = axes;
          cell.n_total = accounting::TotalParams(shape);
          cell.n_non_embedding = accounting::NonEmbeddingParams(shape);
          cell.n_active = accounting::ActiveParams(shape);
          cell.flops_per_token_6n = accounting::FlopsPerToken6N(shape);
          cell.flops_per_token_6n_attn = accounting::FlopsPerToken6NAttention(shape);
          cell.flops_per_token_chinchilla = accounting::FlopsPerTokenChinchilla(shape);
          // D as a double first: above 2^53 llround is inexact, and past int64 undefined (1e30
          // FLOPs came out negative and was refused as "less than one optimizer step").
          const double d = budget / cell.flops_per_token_6n;
          if (!(d <= kMaxTokens)) {
            return Status::InvalidArgument(
                where + ": " + Fmt("%.3g", budget) + " FLOPs gives size " + cell.ShapeString() +
                " " + Fmt("%.3g", d) +
                " tokens (D = C / 6N); the count exceeds 2^53 (9.007e15): lower the budget or "
                "choose larger sizes for it");
          }
          cell.tokens = std::llround(d);

          json data = c.data;
          json train = c.train;
          for (const auto& [path, value] : axes) {
            if (path.rfind("model.", 0) == 0) continue;  // applied to the shape above
            const std::string field = path.substr(path.find('.') + 1);
            (path.rfind("train.", 0) == 0 ? train : data)[field] = value;
          }
          for (const TrainRule& r : c.rules) {
            const double factor = std::pow(RuleBase(r, shape) / r.reference, r.exponent);
            train[r.field] = train[r.field].get<double>() * factor;
            if (r.field == "lr") train["min_lr"] = train["min_lr"].get<double>() * factor;
          }
          train["tokens"] = cell.tokens;
          // The runs really recompute activations, so the memory estimate below holds. Only
          // written when on, so the keys of sweeps without it do not change.
          if (c.executor.activation_checkpointing) train["activation_checkpointing"] = true;
          cell.config = json{{"schema", 1},
                             {"seed", seed},
                             {"model", trainer::ModelToJson(family, shape)},
                             {"data", data},
                             {"train", train}};
          cell.key = Sha256Hex(cell.config.dump()).substr(0, 16);
          if (!keys.insert(cell.key).second) continue;  // identical run already planned

          const int64_t batch_tokens = train["batch_tokens"].get<int64_t>();
          cell.steps = (cell.tokens + batch_tokens - 1) / batch_tokens;
          const int64_t wt = train["warmup_tokens"].get<int64_t>();
          cell.warmup_tokens =
              wt > 0 ? wt : std::llround(train["warmup_frac"].get<double>() * cell.tokens);
          // Per rank: each data-parallel rank holds a whole replica and its share of the step.
          const int micro_batch = train["micro_batch"].get<int>();
          const int ranks = c.executor.ranks_per_run;
          mem_opts.micro_batch =
              accounting::ForwardBatch(micro_batch, batch_tokens, shape.seq_len, ranks);
          mem_opts.micro_batches =
              accounting::ForwardPasses(micro_batch, batch_tokens, shape.seq_len, ranks);
          mem_opts.ranks = ranks;
          cell.memory = EstimateMemory(shape, mem_opts);
          const double flops = cell.flops_per_token_6n * double(cell.tokens);
          cell.est_seconds =
              // An MoE runs matmuls of its active size (each expert on its share of tokens).
              flops / EstimateFlopsPerSecond(cell.n_active, env.gpu, env.threads_per_run,
                                             c.executor.throughput_gflops);
          const std::string tag = "cell " + cell.key + " (budget " + Fmt("%.3g", budget) + ", " +
                                  cell.ShapeString() + ")";
          if (cell.tokens < batch_tokens) {
            // The trainer would refuse it: not planned. A budget that loses every size is an
            // error below.
            dropped.push_back(cell.ShapeString() + " (" + std::to_string(cell.tokens) + " tokens)");
            smallest_step_flops =
                std::min(smallest_step_flops, cell.flops_per_token_6n * double(batch_tokens));
            continue;
          }
          ++planned;
          // (A run no longer than train.warmup_tokens is refused here, as the trainer would.)
          ISOFLOP_RETURN_IF_ERROR(ValidateCell(c, cell, tag));
          if (cell.steps < 20) {
            plan.warnings.push_back(tag + ": only " + std::to_string(cell.steps) +
                                    " optimizer steps; the loss will be far from converged");
          }
          if (env.device_memory_bytes > 0 && cell.memory.total > env.device_memory_bytes &&
              !warned_memory) {
            plan.warnings.push_back(tag + ": needs about " +
                                    Fmt("%.1f", cell.memory.total / double(1 << 30)) +
                                    " GiB, more than one device has (" +
                                    Fmt("%.1f", env.device_memory_bytes / double(1 << 30)) +
                                    " GiB); it will be refused (lower train.micro_batch or enable "
                                    "activation_checkpointing)");
            warned_memory = true;
          }
          plan.total_flops += flops;
          plan.total_est_seconds += cell.est_seconds;
          plan.cells.push_back(std::move(cell));
        }
      }
    }
    if (!dropped.empty() && planned == 0) {
      return Status::InvalidArgument(
          where + ": " + Fmt("%.3g", budget) +
          " FLOPs is less than one optimizer step of every size chosen for it; the cheapest "
          "step (6 N x train.batch_tokens) takes " +
          Fmt("%.3g", smallest_step_flops) +
          " FLOPs: raise the budget or lower train.batch_tokens");
    }
    if (!dropped.empty()) {
      std::string list;
      for (const auto& d : dropped) list += (list.empty() ? "" : ", ") + d;
      plan.warnings.push_back(where + ": budget " + Fmt("%.3g", budget) + ": " +
                              std::to_string(dropped.size()) +
                              " size(s) not planned, each shorter than one batch: " + list);
    }
  }
  // Data files that do not exist (warned, not refused: the runs that use them fail alone), and
  // ones that are not regular files (refused).
  std::set<std::string> missing;
  for (const Cell& cell : plan.cells) {
    const json& d = cell.config["data"];
    for (const char* k : {"paths", "train", "val"}) {
      if (!d.contains(k)) continue;
      json list = d[k].is_array() ? d[k] : json::array({d[k]});
      for (const auto& f : list) {
        if (!f.is_string()) continue;
        const std::string path = f.get<std::string>();
        std::error_code ec;
        const auto st = std::filesystem::status(path, ec);
        if (!std::filesystem::exists(st)) {
          missing.insert(path);
        } else if (!std::filesystem::is_regular_file(st)) {
          // The trainer maps its data files: a FIFO would block every run, a folder fail it.
          return Status::InvalidArgument(FieldWhere(c, "data." + std::string(k)) + ": " + path +
                                         ": not a regular file (data files are mapped whole)");
        }
      }
    }
  }
  for (const auto& f : missing) plan.warnings.push_back("data file does not exist: " + f);
  if (plan.cells.empty()) plan.warnings.push_back("the plan has no cells");
  return plan;
}

Result<std::string> RunJson(const Cell& cell, const std::string& name, int threads,
                            const std::string& device) {
  json j = cell.config;
  j["name"] = name;
  j["train"]["threads"] = threads;
  j["train"]["device"] = device;
  // Through the trainer's parser: run.json is written in its fully resolved form, by the same
  // code that reads it.
  ISOFLOP_ASSIGN_OR_RETURN(trainer::RunConfig parsed, trainer::ParseRunConfig(j.dump()));
  return trainer::RunConfigToJson(parsed);
}

PlanDiff DiffKeys(const std::vector<std::string>& old_keys, const std::vector<Cell>& cells) {
  PlanDiff d;
  std::set<std::string> old_set(old_keys.begin(), old_keys.end()), new_set;
  for (const Cell& c : cells) {
    new_set.insert(c.key);
    (old_set.count(c.key) ? d.kept : d.added).push_back(c.key);
  }
  for (const auto& k : old_keys)
    if (!new_set.count(k)) d.removed.push_back(k);
  return d;
}

}  // namespace isoflop::sweep
