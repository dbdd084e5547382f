// JSON of the worker's status.json, info.json and metrics lines (see run_protocol.h).
#include "isoflop/trainer/run_protocol.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace isoflop::trainer {
namespace {

using nlohmann::json;

json NumberOrNull(const std::optional<double>& v) {
  return v && std::isfinite(*v) ? json(*v) : json(nullptr);
}

std::optional<double> OptNumber(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

std::optional<int64_t> OptInt(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

std::string OptString(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// Cross-entropy is >= 0 and counts are >= 0: anything else in these files is damage, not a
// result, and must not reach a fit. Ok, or Corrupt naming the key and the value.
Status CheckNotNegative(const std::optional<double>& v, const char* key) {
  if (!v || *v >= 0) return Status::Ok();
  char text[40];
  std::snprintf(text, sizeof text, "%.6g", *v);
  return Status::Corrupt(std::string("\"") + key + "\": expected a value >= 0, got " + text);
}

json ParseObject(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : json();
}

}  // namespace

ExitClass ClassOfExit(int exit_code) {
  switch (exit_code) {
    case kExitFinished:
      return ExitClass::kFinished;
    case kExitFailed:
      return ExitClass::kFailed;
    case kExitBadConfig:
      return ExitClass::kBadConfig;
    case kExitDiverged:
      return ExitClass::kDiverged;
    case kExitBusy:
      return ExitClass::kBusy;
    case kExitOutOfMemory:
      return ExitClass::kOutOfMemory;
    default:
      return exit_code > 128 && exit_code < 128 + 65 ? ExitClass::kStopped : ExitClass::kCrashed;
  }
}

const char* ExitClassName(ExitClass c) {
  switch (c) {
    case ExitClass::kFinished:
      return "finished";
    case ExitClass::kFailed:
      return "failed";
    case ExitClass::kBadConfig:
      return "bad config";
    case ExitClass::kDiverged:
      return "diverged";
    case ExitClass::kBusy:
      return "busy";
    case ExitClass::kOutOfMemory:
      return "out of memory";
    case ExitClass::kStopped:
      return "preempted";
    case ExitClass::kCrashed:
      return "crashed";
  }
  return "crashed";
}

std::string StatusFile::ToJson() const {
  json j = {{"state", state},
            {"reason", reason},
            {"step", step ? json(*step) : json(nullptr)},
            {"tokens", tokens ? json(*tokens) : json(nullptr)},
            {"final_val_loss", NumberOrNull(final_val_loss)},
            {"exit_code", exit_code ? json(*exit_code) : json(nullptr)},
            {"wall_s", NumberOrNull(wall_s)}};
  if (peak_memory_bytes) {
    j["peak_memory_bytes"] = *peak_memory_bytes;
    j["peak_memory_of"] = peak_memory_of;
  }
  if (!peak_memory_by_rank.empty()) j["peak_memory_by_rank"] = peak_memory_by_rank;
  if (peak_tensor_bytes) j["peak_tensor_bytes"] = *peak_tensor_bytes;
  if (peak_host_memory_bytes) j["peak_host_memory_bytes"] = *peak_host_memory_bytes;
  return j.dump() + "\n";
}

Result<StatusFile> StatusFile::Parse(const std::string& text) {
  const json j = ParseObject(text);
  const std::string state = j.is_object() ? OptString(j, "state") : "";
  if (state != "finished" && state != "diverged" && state != "failed" && state != "preempted") {
    return Status::Corrupt(
        "expected a JSON object with a \"state\" of finished, diverged, failed or preempted");
  }
  StatusFile s;
  s.state = state;
  s.reason = OptString(j, "reason");
  s.step = OptInt(j, "step");
  s.tokens = OptInt(j, "tokens");
  s.final_val_loss = OptNumber(j, "final_val_loss");
  if (auto code = OptInt(j, "exit_code")) s.exit_code = static_cast<int>(*code);
  s.wall_s = OptNumber(j, "wall_s");
  s.peak_memory_bytes = OptInt(j, "peak_memory_bytes");
  s.peak_memory_of = OptString(j, "peak_memory_of");
  s.peak_tensor_bytes = OptInt(j, "peak_tensor_bytes");
  s.peak_host_memory_bytes = OptInt(j, "peak_host_memory_bytes");
  if (auto it = j.find("peak_memory_by_rank"); it != j.end() && it->is_array()) {
    for (const json& v : *it) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        return Status::Corrupt("peak_memory_by_rank: expected non-negative integers, got " +
                               it->dump());
      s.peak_memory_by_rank.push_back(v.get<int64_t>());
    }
  }
  ISOFLOP_RETURN_IF_ERROR(CheckNotNegative(s.final_val_loss, "final_val_loss"));
  if (s.step) ISOFLOP_RETURN_IF_ERROR(CheckNotNegative(double(*s.step), "step"));
  if (s.tokens) ISOFLOP_RETURN_IF_ERROR(CheckNotNegative(double(*s.tokens), "tokens"));
  return s;
}

std::string InfoFile::ToJson() const {
  json j = {{"n_total", n_total},
            {"n_non_embedding", n_non_embedding},
            {"flops_per_token_6n", flops_per_token_6n},
            {"flops_per_token_6n_attn", flops_per_token_6n_attn},
            {"flops_per_token_chinchilla", flops_per_token_chinchilla},
            {"device", device},
            {"precision", precision},
            {"threads", threads},
            {"host", host},
            {"data_entropy_nats", NumberOrNull(data_entropy_nats)},
            {"torch_version", torch_version}};
  if (n_active) j["n_active"] = *n_active;
  if (n_active_non_embedding) j["n_active_non_embedding"] = *n_active_non_embedding;
  if (memory_estimate_bytes) j["memory_estimate_bytes"] = *memory_estimate_bytes;
  if (memory_estimate_tensor_bytes)
    j["memory_estimate_tensor_bytes"] = *memory_estimate_tensor_bytes;
  return j.dump() + "\n";
}

Result<InfoFile> InfoFile::Parse(const std::string& text) {
  const json j = ParseObject(text);
  if (!j.is_object()) return Status::Corrupt("not a JSON object");
  InfoFile info;
  info.n_total = OptInt(j, "n_total").value_or(0);
  info.n_non_embedding = OptInt(j, "n_non_embedding").value_or(0);
  info.n_active = OptInt(j, "n_active");
  info.n_active_non_embedding = OptInt(j, "n_active_non_embedding");
  info.flops_per_token_6n = OptNumber(j, "flops_per_token_6n").value_or(0);
  info.flops_per_token_6n_attn = OptNumber(j, "flops_per_token_6n_attn").value_or(0);
  info.flops_per_token_chinchilla = OptNumber(j, "flops_per_token_chinchilla").value_or(0);
  info.device = OptString(j, "device");
  info.precision = OptString(j, "precision");
  info.host = OptString(j, "host");
  info.torch_version = OptString(j, "torch_version");
  info.threads = static_cast<int>(OptInt(j, "threads").value_or(0));
  info.data_entropy_nats = OptNumber(j, "data_entropy_nats");
  info.memory_estimate_bytes = OptInt(j, "memory_estimate_bytes");
  info.memory_estimate_tensor_bytes = OptInt(j, "memory_estimate_tensor_bytes");
  return info;
}

std::string MetricsLine::ToJson() const {
  json extras = json::object();
  for (const auto& [k, v] : extra) extras[k] = NumberOrNull(v);
  const json j = {{"step", step},
                  {"tokens", tokens},
                  {"flops", flops},
                  {"train_loss", NumberOrNull(train_loss)},
                  {"val_loss", NumberOrNull(val_loss)},
                  {"lr", NumberOrNull(lr)},
                  {"grad_norm", NumberOrNull(grad_norm)},
                  {"tokens_per_s", NumberOrNull(tokens_per_s)},
                  {"wall_s", NumberOrNull(wall_s)},
                  {"extra", extras}};
  return j.dump();
}

Result<MetricsLine> MetricsLine::Parse(const std::string& line) {
  const json j = ParseObject(line);
  const std::optional<int64_t> step = j.is_object() ? OptInt(j, "step") : std::nullopt;
  if (!step) return Status::Corrupt("expected a JSON object with an integer \"step\"");
  MetricsLine m;
  m.step = *step;
  m.tokens = OptInt(j, "tokens").value_or(0);
  m.flops = OptNumber(j, "flops").value_or(0);
  m.train_loss = OptNumber(j, "train_loss");
  m.val_loss = OptNumber(j, "val_loss");
  m.lr = OptNumber(j, "lr");
  m.grad_norm = OptNumber(j, "grad_norm");
  m.tokens_per_s = OptNumber(j, "tokens_per_s");
  m.wall_s = OptNumber(j, "wall_s");
  if (auto e = j.find("extra"); e != j.end() && e->is_object()) {
    for (const auto& [k, v] : e->items())
      if (v.is_number()) m.extra.emplace_back(k, v.get<double>());
  }
  ISOFLOP_RETURN_IF_ERROR(CheckNotNegative(double(m.step), "step"));
  ISOFLOP_RETURN_IF_ERROR(CheckNotNegative(double(m.tokens), "tokens"));
  ISOFLOP_RETURN_IF_ERROR(CheckNotNegative(m.train_loss, "train_loss"));
  ISOFLOP_RETURN_IF_ERROR(CheckNotNegative(m.val_loss, "val_loss"));
  return m;
}

int64_t ForEachMetricsLine(const std::string& text,
                           const std::function<bool(MetricsLineAt&)>& visit) {
  size_t pos = 0;
  int64_t passed = 0, line_no = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;  // torn last line
    MetricsLineAt at;
    at.line_no = ++line_no;
    at.offset = static_cast<int64_t>(pos);
    at.end = static_cast<int64_t>(nl + 1);
    at.text = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (at.text.find_first_not_of(" \t\r") != std::string::npos) {
      at.parsed = MetricsLine::Parse(at.text);
      if (!visit(at)) break;
    }
    passed = at.end;
  }
  return passed;
}

}  // namespace isoflop::trainer
