// run.json parsing and validation (docs/run-protocol.md). Every error names the field, e.g.
// "field 'train.tokens': expected an integer, got string"; unknown keys are errors so typos
// never silently fall back to defaults.
#include "isoflop/trainer/run_config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <vector>

namespace isoflop::trainer {

using nlohmann::json;

namespace {

// Reads fields of one JSON object, remembering which keys were used so unknown ones are errors.
class ObjectReader {
 public:
  ObjectReader(const json& obj, std::string prefix) : obj_(obj), prefix_(std::move(prefix)) {}

  std::string Field(const std::string& key) const { return prefix_ + key; }
  Status Error(const std::string& key, const std::string& what) const {
    return Status::InvalidArgument("field '" + Field(key) + "': " + what);
  }
  // Whether the object holds `key`. A null is held, and meets each reader's type error: it is
  // what a NaN or an infinity becomes in JSON, never "use the default".
  bool Has(const std::string& key) {
    used_.insert(key);
    return obj_.contains(key);
  }

  Status Int(const std::string& key, int64_t* out, bool required = false) {
    if (!Has(key)) return required ? Error(key, "required") : Status::Ok();
    const json& v = obj_.at(key);
    if (v.is_number_integer()) {
      *out = v.get<int64_t>();
      return Status::Ok();
    }
    // Accept 2e6 and 2000000.0 (human-written budgets) when the value is integral.
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9.2e18) {
        *out = static_cast<int64_t>(d);
        return Status::Ok();
      }
      return Error(key, "expected an integer, got " + v.dump());
    }
    return Error(key, std::string("expected an integer, got ") + v.type_name());
  }
  Status Int(const std::string& key, int* out) {
    int64_t v = *out;
    ISOFLOP_RETURN_IF_ERROR(Int(key, &v));
    if (v < INT32_MIN || v > INT32_MAX) return Error(key, "out of range");
    *out = static_cast<int>(v);
    return Status::Ok();
  }
  Status Uint(const std::string& key, uint64_t* out) {
    int64_t v = static_cast<int64_t>(*out);
    ISOFLOP_RETURN_IF_ERROR(Int(key, &v));
    if (v < 0) return Error(key, "must be >= 0");
    *out = static_cast<uint64_t>(v);
    return Status::Ok();
  }
  Status Double(const std::string& key, double* out) {
    if (!Has(key)) return Status::Ok();
    const json& v = obj_.at(key);
    if (v.is_null())
      return Error(key, "expected a finite number, got null (what JSON makes of NaN or inf)");
    if (!v.is_number()) return Error(key, std::string("expected a number, got ") + v.type_name());
    *out = v.get<double>();
    if (!std::isfinite(*out)) return Error(key, "must be finite");
    return Status::Ok();
  }
  Status Bool(const std::string& key, bool* out) {
    if (!Has(key)) return Status::Ok();
    const json& v = obj_.at(key);
    if (!v.is_boolean())
      return Error(key, std::string("expected true/false, got ") + v.type_name());
    *out = v.get<bool>();
    return Status::Ok();
  }
  Status String(const std::string& key, std::string* out, bool required = false) {
    if (!Has(key)) return required ? Error(key, "required") : Status::Ok();
    const json& v = obj_.at(key);
    if (!v.is_string()) return Error(key, std::string("expected a string, got ") + v.type_name());
    *out = v.get<std::string>();
    return Status::Ok();
  }
  // A string or a list of strings.
  Status Strings(const std::string& key, std::vector<std::string>* out) {
    if (!Has(key)) return Status::Ok();
    const json& v = obj_.at(key);
    if (v.is_string()) {
      *out = {v.get<std::string>()};
      return Status::Ok();
    }
    if (!v.is_array()) return Error(key, "expected a string or a list of strings");
    out->clear();
    for (const auto& e : v) {
      if (!e.is_string()) return Error(key, "expected a list of strings");
      out->push_back(e.get<std::string>());
    }
    return Status::Ok();
  }
  // Applies a parser (ParseNorm, ...) to a string field.
  template <typename T, typename F>
  Status Enum(const std::string& key, T* out, F parse) {
    if (!Has(key)) return Status::Ok();
    std::string s;
    ISOFLOP_RETURN_IF_ERROR(String(key, &s));
    auto r = parse(s);
    if (!r.ok()) return Error(key, r.status().message());
    *out = *r;
    return Status::Ok();
  }
  Status Object(const std::string& key, const json** out, bool required) {
    *out = nullptr;
    if (!Has(key)) return required ? Error(key, "required") : Status::Ok();
    if (!obj_.at(key).is_object()) return Error(key, "expected an object");
    *out = &obj_.at(key);
    return Status::Ok();
  }
  Status NoUnknownKeys() const {
    for (const auto& [k, v] : obj_.items()) {
      if (!used_.count(k)) return Error(k, "unknown key");
    }
    return Status::Ok();
  }

 private:
  const json& obj_;
  std::string prefix_;
  std::set<std::string> used_;
};

Result<SyntheticKind> ParseSyntheticKind(const std::string& s) {
  if (s == "markov") return SyntheticKind::kMarkov;
  if (s == "skills") return SyntheticKind::kSkills;
  return Status::InvalidArgument("expected one of markov, skills; got '" + s + "'");
}

Result<DataSource> ParseDataSource(const std::string& s) {
  if (s == "synthetic") return DataSource::kSynthetic;
  if (s == "text") return DataSource::kText;
  if (s == "bin") return DataSource::kBin;
  if (s == "llmc") return DataSource::kLlmc;
  return Status::InvalidArgument("expected one of synthetic, text, bin, llmc; got '" + s + "'");
}

Result<Schedule> ParseSchedule(const std::string& s) {
  if (s == "cosine") return Schedule::kCosine;
  if (s == "wsd") return Schedule::kWsd;
  if (s == "constant") return Schedule::kConstant;
  return Status::InvalidArgument("expected one of cosine, wsd, constant; got '" + s + "'");
}

}  // namespace

// model.moe: every field optional, defaults from accounting::MoeShape.
Status ParseMoeObject(const json& j, accounting::MoeShape* m) {
  ObjectReader r(j, "model.moe.");
  ISOFLOP_RETURN_IF_ERROR(r.Int("n_experts", &m->n_experts));
  ISOFLOP_RETURN_IF_ERROR(r.Int("top_k", &m->top_k));
  ISOFLOP_RETURN_IF_ERROR(r.Int("granularity", &m->granularity));
  ISOFLOP_RETURN_IF_ERROR(r.Int("expert_d_ff", &m->expert_d_ff));
  ISOFLOP_RETURN_IF_ERROR(r.Int("n_shared_experts", &m->n_shared_experts));
  ISOFLOP_RETURN_IF_ERROR(r.Enum("router", &m->router, accounting::ParseRouter));
  ISOFLOP_RETURN_IF_ERROR(r.Double("aux_loss_weight", &m->aux_loss_weight));
  ISOFLOP_RETURN_IF_ERROR(r.Double("z_loss_weight", &m->z_loss_weight));
  ISOFLOP_RETURN_IF_ERROR(r.Double("bias_update_rate", &m->bias_update_rate));
  ISOFLOP_RETURN_IF_ERROR(r.Double("capacity_factor", &m->capacity_factor));
  ISOFLOP_RETURN_IF_ERROR(r.Int("moe_every", &m->moe_every));
  ISOFLOP_RETURN_IF_ERROR(r.Int("n_dense_layers", &m->n_dense_layers));
  return r.NoUnknownKeys();
}

namespace {

// `family` has been read by the caller: "moe" reads (or defaults) the moe object, "dense"
// refuses one.
Status ParseModel(const json& j, const std::string& family, accounting::Shape* m) {
  ObjectReader r(j, "model.");
  ISOFLOP_RETURN_IF_ERROR(r.Int("n_layer", &m->n_layer));
  ISOFLOP_RETURN_IF_ERROR(r.Int("d_model", &m->d_model));
  ISOFLOP_RETURN_IF_ERROR(r.Int("n_head", &m->n_head));
  ISOFLOP_RETURN_IF_ERROR(r.Int("d_ff", &m->d_ff));
  ISOFLOP_RETURN_IF_ERROR(r.Int("vocab_size", &m->vocab_size));
  ISOFLOP_RETURN_IF_ERROR(r.Int("seq_len", &m->seq_len));
  ISOFLOP_RETURN_IF_ERROR(r.Enum("norm", &m->norm, accounting::ParseNorm));
  ISOFLOP_RETURN_IF_ERROR(r.Enum("pos", &m->pos, accounting::ParsePosEmbedding));
  ISOFLOP_RETURN_IF_ERROR(r.Enum("mlp", &m->mlp, accounting::ParseMlp));
  ISOFLOP_RETURN_IF_ERROR(r.Bool("tie_embeddings", &m->tie_embeddings));
  ISOFLOP_RETURN_IF_ERROR(r.Bool("bias", &m->bias));
  r.Has("family");  // read by the caller
  const json* moe = nullptr;
  ISOFLOP_RETURN_IF_ERROR(r.Object("moe", &moe, /*required=*/false));
  if (family == "moe") {
    m->moe.emplace();
    if (moe) ISOFLOP_RETURN_IF_ERROR(ParseMoeObject(*moe, &*m->moe));
  } else if (moe) {
    return r.Error("moe", "only with model.family 'moe' (family is '" + family + "')");
  }
  return r.NoUnknownKeys();
}

Status ParseData(const json& j, DataConfig* d) {
  ObjectReader r(j, "data.");
  std::string source;
  ISOFLOP_RETURN_IF_ERROR(r.String("source", &source, /*required=*/true));
  auto s = ParseDataSource(source);
  if (!s.ok()) return r.Error("source", s.status().message());
  d->source = *s;
  switch (d->source) {
    case DataSource::kSynthetic: {
      ISOFLOP_RETURN_IF_ERROR(r.Int("vocab", &d->vocab));
      ISOFLOP_RETURN_IF_ERROR(r.Uint("build_seed", &d->build_seed));
      if (r.Has("train_seed")) {
        uint64_t v = 0;
        ISOFLOP_RETURN_IF_ERROR(r.Uint("train_seed", &v));
        d->train_seed = v;
      }
      ISOFLOP_RETURN_IF_ERROR(r.Uint("val_seed", &d->val_seed));
      ISOFLOP_RETURN_IF_ERROR(r.Enum("language", &d->language, ParseSyntheticKind));
      if (d->language == SyntheticKind::kSkills) {
        for (const char* markov_only : {"k1", "k2", "lambda", "zipf"}) {
          if (r.Has(markov_only)) {
            return r.Error(markov_only, "only with data.language 'markov' (this is 'skills')");
          }
        }
        ISOFLOP_RETURN_IF_ERROR(r.Double("skill_zipf", &d->skill_zipf));
        if (d->vocab < 6 || d->vocab > 512) {
          return r.Error("vocab", "must be in 6..512 for the skills language (three alphabets)");
        }
        if (!(d->skill_zipf > 0 && d->skill_zipf <= 10)) {
          return r.Error("skill_zipf", "must be in (0, 10]");
        }
        break;
      }
      if (r.Has("skill_zipf")) {
        return r.Error("skill_zipf", "only with data.language 'skills'");
      }
      ISOFLOP_RETURN_IF_ERROR(r.Int("k1", &d->k1));
      ISOFLOP_RETURN_IF_ERROR(r.Int("k2", &d->k2));
      ISOFLOP_RETURN_IF_ERROR(r.Double("lambda", &d->lambda));
      ISOFLOP_RETURN_IF_ERROR(r.Double("zipf", &d->zipf));
      if (d->vocab < 2 || d->vocab > 512) return r.Error("vocab", "must be in 2..512");
      if (d->k1 < 1 || d->k1 > d->vocab) return r.Error("k1", "must be in 1..vocab");
      if (d->k2 < 1 || d->k2 > d->vocab) return r.Error("k2", "must be in 1..vocab");
      if (d->lambda < 0 || d->lambda > 1) return r.Error("lambda", "must be in [0, 1]");
      if (d->zipf < 0) return r.Error("zipf", "must be >= 0");
      break;
    }
    case DataSource::kText:
      ISOFLOP_RETURN_IF_ERROR(r.Strings("paths", &d->paths));
      ISOFLOP_RETURN_IF_ERROR(r.Double("val_fraction", &d->val_fraction));
      ISOFLOP_RETURN_IF_ERROR(r.Uint("val_seed", &d->val_seed));
      if (d->paths.empty()) return r.Error("paths", "required: a list of text files");
      if (!(d->val_fraction > 0 && d->val_fraction < 1)) {
        return r.Error("val_fraction", "must be in (0, 1)");
      }
      break;
    case DataSource::kBin:
      ISOFLOP_RETURN_IF_ERROR(r.String("train", &d->train_bin, /*required=*/true));
      ISOFLOP_RETURN_IF_ERROR(r.String("val", &d->val_bin, /*required=*/true));
      ISOFLOP_RETURN_IF_ERROR(r.Uint("val_seed", &d->val_seed));
      break;
    case DataSource::kLlmc:
      ISOFLOP_RETURN_IF_ERROR(r.Strings("train", &d->train_shards));
      ISOFLOP_RETURN_IF_ERROR(r.Strings("val", &d->val_shards));
      ISOFLOP_RETURN_IF_ERROR(r.Uint("val_seed", &d->val_seed));
      if (d->train_shards.empty()) return r.Error("train", "required: a list of shard files");
      if (d->val_shards.empty()) return r.Error("val", "required: a list of shard files");
      break;
  }
  return r.NoUnknownKeys();
}

Status ParseTrain(const json& j, TrainConfig* t) {
  ObjectReader r(j, "train.");
  ISOFLOP_RETURN_IF_ERROR(r.Int("tokens", &t->tokens, /*required=*/true));
  ISOFLOP_RETURN_IF_ERROR(r.Int("batch_tokens", &t->batch_tokens));
  ISOFLOP_RETURN_IF_ERROR(r.Int("micro_batch", &t->micro_batch));
  ISOFLOP_RETURN_IF_ERROR(r.Double("lr", &t->lr));
  ISOFLOP_RETURN_IF_ERROR(r.Double("min_lr", &t->min_lr));
  ISOFLOP_RETURN_IF_ERROR(r.Enum("schedule", &t->schedule, ParseSchedule));
  ISOFLOP_RETURN_IF_ERROR(r.Double("warmup_frac", &t->warmup_frac));
  ISOFLOP_RETURN_IF_ERROR(r.Int("warmup_tokens", &t->warmup_tokens));
  ISOFLOP_RETURN_IF_ERROR(r.Double("decay_frac", &t->decay_frac));
  ISOFLOP_RETURN_IF_ERROR(r.Double("weight_decay", &t->weight_decay));
  ISOFLOP_RETURN_IF_ERROR(r.Double("beta1", &t->beta1));
  ISOFLOP_RETURN_IF_ERROR(r.Double("beta2", &t->beta2));
  ISOFLOP_RETURN_IF_ERROR(r.Double("eps", &t->eps));
  ISOFLOP_RETURN_IF_ERROR(r.Double("grad_clip", &t->grad_clip));
  ISOFLOP_RETURN_IF_ERROR(r.Int("eval_interval_steps", &t->eval_interval_steps));
  ISOFLOP_RETURN_IF_ERROR(r.Int("eval_tokens", &t->eval_tokens));
  ISOFLOP_RETURN_IF_ERROR(r.Int("log_interval_steps", &t->log_interval_steps));
  ISOFLOP_RETURN_IF_ERROR(r.Int("ckpt_interval_steps", &t->ckpt_interval_steps));
  ISOFLOP_RETURN_IF_ERROR(r.Int("threads", &t->threads));
  ISOFLOP_RETURN_IF_ERROR(r.String("device", &t->device));
  ISOFLOP_RETURN_IF_ERROR(r.Bool("activation_checkpointing", &t->activation_checkpointing));
  return r.NoUnknownKeys();
}

constexpr double kMaxFloatSetting = 3.4e38;  // just below FLT_MAX
constexpr const char* kFloatOverflow =
    "must be at most 3.4e38 (LibTorch uses it as a 32-bit float)";

Status CheckField(bool ok, const std::string& field, const std::string& why) {
  return ok ? Status::Ok() : Status::InvalidArgument("field '" + field + "': " + why);
}

}  // namespace

Status RunConfig::Validate() const {
  ISOFLOP_RETURN_IF_ERROR(CheckField(schema == 1, "schema", "only schema 1 is supported"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(family == "dense" || family == "moe", "model.family",
                                     "expected one of dense, moe; got '" + family + "'"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(
      (family == "moe") == model.moe.has_value(), "model.moe",
      family == "moe" ? "required with model.family 'moe'" : "only with model.family 'moe'"));
  ISOFLOP_RETURN_IF_ERROR(model.Validate());
  const TrainConfig& t = train;
  const std::string seq = std::to_string(model.seq_len);
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.batch_tokens > 0 && t.batch_tokens % model.seq_len == 0,
                                     "train.batch_tokens",
                                     "must be a positive multiple of model.seq_len (" + seq +
                                         "), got " + std::to_string(t.batch_tokens)));
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.tokens >= t.batch_tokens, "train.tokens",
                                     "budget " + std::to_string(t.tokens) +
                                         " is smaller than one batch (train.batch_tokens = " +
                                         std::to_string(t.batch_tokens) + ")"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.micro_batch >= 1, "train.micro_batch", "must be >= 1"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.lr > 0, "train.lr", "must be > 0"));
  // The optimizer and the clipping compute in 32-bit floats: larger values overflow in LibTorch.
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.lr <= kMaxFloatSetting, "train.lr", kFloatOverflow));
  ISOFLOP_RETURN_IF_ERROR(
      CheckField(t.grad_clip <= kMaxFloatSetting, "train.grad_clip", kFloatOverflow));
  ISOFLOP_RETURN_IF_ERROR(
      CheckField(t.min_lr >= 0 && t.min_lr <= t.lr, "train.min_lr", "must be in [0, train.lr]"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.warmup_frac >= 0 && t.warmup_frac < 1, "train.warmup_frac",
                                     "must be in [0, 1)"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.warmup_tokens >= 0 && t.warmup_tokens < t.tokens,
                                     "train.warmup_tokens", "must be in [0, train.tokens)"));
  ISOFLOP_RETURN_IF_ERROR(
      CheckField(t.decay_frac > 0 && t.decay_frac <= 1, "train.decay_frac", "must be in (0, 1]"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.weight_decay >= 0, "train.weight_decay", "must be >= 0"));
  ISOFLOP_RETURN_IF_ERROR(
      CheckField(t.beta1 >= 0 && t.beta1 < 1, "train.beta1", "must be in [0, 1)"));
  ISOFLOP_RETURN_IF_ERROR(
      CheckField(t.beta2 >= 0 && t.beta2 < 1, "train.beta2", "must be in [0, 1)"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.eps > 0, "train.eps", "must be > 0"));
  ISOFLOP_RETURN_IF_ERROR(
      CheckField(t.eval_interval_steps >= 1, "train.eval_interval_steps", "must be >= 1"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.eval_tokens >= model.seq_len, "train.eval_tokens",
                                     "must be >= model.seq_len (" + seq + ")"));
  ISOFLOP_RETURN_IF_ERROR(
      CheckField(t.log_interval_steps >= 1, "train.log_interval_steps", "must be >= 1"));
  ISOFLOP_RETURN_IF_ERROR(
      CheckField(t.ckpt_interval_steps >= 1, "train.ckpt_interval_steps", "must be >= 1"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.threads >= 0 && t.threads <= kMaxThreads, "train.threads",
                                     "must be 0 (all cores) to " + std::to_string(kMaxThreads)));
  // The recomputing backward (model.cc BlockCheckpoint) would lose the router losses of the
  // forward it replays and count the expert loads twice.
  ISOFLOP_RETURN_IF_ERROR(CheckField(!(model.moe && t.activation_checkpointing),
                                     "train.activation_checkpointing",
                                     "not supported with model.family 'moe' yet"));
  ISOFLOP_RETURN_IF_ERROR(CheckField(t.device == "auto" || t.device == "cpu" || t.device == "cuda",
                                     "train.device",
                                     "expected one of auto, cpu, cuda; got '" + t.device + "'"));
  switch (data.source) {
    case DataSource::kSynthetic:
      ISOFLOP_RETURN_IF_ERROR(CheckField(data.vocab == model.vocab_size, "data.vocab",
                                         "must equal model.vocab_size (" +
                                             std::to_string(model.vocab_size) + "), got " +
                                             std::to_string(data.vocab)));
      break;
    case DataSource::kText:
      ISOFLOP_RETURN_IF_ERROR(CheckField(model.vocab_size >= 256, "model.vocab_size",
                                         "text data has 256 byte values: need >= 256"));
      break;
    case DataSource::kBin:
    case DataSource::kLlmc:
      break;  // token ids are checked against vocab_size when the files are opened
  }
  return Status::Ok();
}

Result<RunConfig> ParseRunConfig(const std::string& json_text) {
  json j;
  // nlohmann keeps the last of two equal keys: a hand-edited run.json that gives train.lr twice
  // would train at whichever came last. The first repeated key is named as a field.
  std::string duplicate;
  std::vector<std::set<std::string>> keys;  // of each open object
  std::vector<std::string> where;           // the key each open object is the value of
  std::string pending;                      // the last key read
  const json::parser_callback_t watch = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        where.push_back(keys.empty() ? std::string() : pending);
        keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back(), where.pop_back();
        break;
      case json::parse_event_t::key:
        pending = parsed.is_string() ? parsed.get<std::string>() : std::string();
        if (!keys.empty() && !keys.back().insert(pending).second && duplicate.empty()) {
          for (const std::string& w : where)
            if (!w.empty()) duplicate += w + ".";
          duplicate += pending;
        }
        break;
      default:
        break;
    }
    return true;
  };
  try {
    j = json::parse(json_text, watch, /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for numbers such as 1e400 that no double holds.
    return Status::InvalidArgument(std::string("not valid JSON: ") + e.what());
  }
  if (!duplicate.empty())
    return Status::InvalidArgument("field '" + duplicate + "': given twice; keep one of them");
  if (!j.is_object()) return Status::InvalidArgument("expected a JSON object at the top level");
  RunConfig c;
  ObjectReader r(j, "");
  ISOFLOP_RETURN_IF_ERROR(r.Int("schema", &c.schema));
  ISOFLOP_RETURN_IF_ERROR(r.String("name", &c.name));
  ISOFLOP_RETURN_IF_ERROR(r.Uint("seed", &c.seed));
  const json* model = nullptr;
  const json* data = nullptr;
  const json* train = nullptr;
  ISOFLOP_RETURN_IF_ERROR(r.Object("model", &model, false));
  ISOFLOP_RETURN_IF_ERROR(r.Object("data", &data, true));
  ISOFLOP_RETURN_IF_ERROR(r.Object("train", &train, true));
  ISOFLOP_RETURN_IF_ERROR(r.NoUnknownKeys());
  if (model) {
    ObjectReader mr(*model, "model.");
    ISOFLOP_RETURN_IF_ERROR(mr.String("family", &c.family));
    ISOFLOP_RETURN_IF_ERROR(ParseModel(*model, c.family, &c.model));
  }
  ISOFLOP_RETURN_IF_ERROR(ParseData(*data, &c.data));
  ISOFLOP_RETURN_IF_ERROR(ParseTrain(*train, &c.train));
  ISOFLOP_RETURN_IF_ERROR(c.Validate());
  return c;
}

FieldError SplitFieldError(const std::string& message) {
  const std::string marker = "field '";
  const size_t at = message.find(marker);
  const size_t end = at == std::string::npos ? at : message.find("': ", at + marker.size());
  if (end == std::string::npos) return {"", message};
  return {message.substr(at + marker.size(), end - at - marker.size()), message.substr(end + 3)};
}

Result<RunConfig> LoadRunConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path + ": cannot open (does the file exist?)");
  std::stringstream ss;
  ss << in.rdbuf();
  auto r = ParseRunConfig(ss.str());
  if (!r.ok()) return r.status().WithPrefix(path);
  return r;
}

json ModelToJson(const std::string& family, const accounting::Shape& s) {
  using accounting::ToString;
  // A dense model's object has no "moe" key: sweep cell keys hash this object
  // (tests/sweep/cell_key_test.cc pins them).
  json j{{"family", family},
         {"n_layer", s.n_layer},
         {"d_model", s.d_model},
         {"n_head", s.n_head},
         {"d_ff", s.d_ff},
         {"vocab_size", s.vocab_size},
         {"seq_len", s.seq_len},
         {"norm", ToString(s.norm)},
         {"pos", ToString(s.pos)},
         {"mlp", ToString(s.mlp)},
         {"tie_embeddings", s.tie_embeddings},
         {"bias", s.bias}};
  if (s.moe) {
    const accounting::MoeShape& m = *s.moe;
    j["moe"] = json{{"n_experts", m.n_experts},
                    {"top_k", m.top_k},
                    {"granularity", m.granularity},
                    {"expert_d_ff", m.expert_d_ff},
                    {"n_shared_experts", m.n_shared_experts},
                    {"router", ToString(m.router)},
                    {"aux_loss_weight", m.aux_loss_weight},
                    {"z_loss_weight", m.z_loss_weight},
                    {"bias_update_rate", m.bias_update_rate},
                    {"capacity_factor", m.capacity_factor},
                    {"moe_every", m.moe_every},
                    {"n_dense_layers", m.n_dense_layers}};
  }
  return j;
}

json TrainToJson(const TrainConfig& t) {
  return json{{"tokens", t.tokens},
              {"batch_tokens", t.batch_tokens},
              {"micro_batch", t.micro_batch},
              {"lr", t.lr},
              {"min_lr", t.min_lr},
              {"schedule", ToString(t.schedule)},
              {"warmup_frac", t.warmup_frac},
              {"warmup_tokens", t.warmup_tokens},
              {"decay_frac", t.decay_frac},
              {"weight_decay", t.weight_decay},
              {"beta1", t.beta1},
              {"beta2", t.beta2},
              {"eps", t.eps},
              {"grad_clip", t.grad_clip},
              {"eval_interval_steps", t.eval_interval_steps},
              {"eval_tokens", t.eval_tokens},
              {"log_interval_steps", t.log_interval_steps},
              {"ckpt_interval_steps", t.ckpt_interval_steps},
              {"threads", t.threads},
              {"device", t.device},
              {"activation_checkpointing", t.activation_checkpointing}};
}

std::string RunConfigToJson(const RunConfig& c) {
  const json model = ModelToJson(c.family, c.model);
  const DataConfig& d = c.data;
  json data = {{"source", ToString(d.source)}};
  switch (d.source) {
    case DataSource::kSynthetic:
      if (d.language == SyntheticKind::kSkills) {
        data.update({{"vocab", d.vocab},
                     {"build_seed", d.build_seed},
                     {"val_seed", d.val_seed},
                     {"language", "skills"},
                     {"skill_zipf", d.skill_zipf}});
        if (d.train_seed) data["train_seed"] = *d.train_seed;
        break;
      }
      // markov: the fields (and so the text) of run.json files written before `language` existed
      data.update({{"vocab", d.vocab},
                   {"build_seed", d.build_seed},
                   {"val_seed", d.val_seed},
                   {"k1", d.k1},
                   {"k2", d.k2},
                   {"lambda", d.lambda},
                   {"zipf", d.zipf}});
      if (d.train_seed) data["train_seed"] = *d.train_seed;
      break;
    case DataSource::kText:
      data.update({{"paths", d.paths}, {"val_fraction", d.val_fraction}, {"val_seed", d.val_seed}});
      break;
    case DataSource::kBin:
      data.update({{"train", d.train_bin}, {"val", d.val_bin}, {"val_seed", d.val_seed}});
      break;
    case DataSource::kLlmc:
      data.update({{"train", d.train_shards}, {"val", d.val_shards}, {"val_seed", d.val_seed}});
      break;
  }
  const json train = TrainToJson(c.train);
  json j = {{"schema", c.schema}, {"name", c.name}, {"seed", c.seed},
            {"model", model},     {"data", data},   {"train", train}};
  return j.dump(2) + "\n";
}

std::string ToString(DataSource s) {
  switch (s) {
    case DataSource::kSynthetic:
      return "synthetic";
    case DataSource::kText:
      return "text";
    case DataSource::kBin:
      return "bin";
    case DataSource::kLlmc:
      return "llmc";
  }
  return "?";
}

std::string ToString(Schedule s) {
  switch (s) {
    case Schedule::kCosine:
      return "cosine";
    case Schedule::kWsd:
      return "wsd";
    case Schedule::kConstant:
      return "constant";
  }
  return "?";
}

}  // namespace isoflop::trainer
