// Idempotent, crash-safe ingestion of run directories into the store.
#include "isoflop/sweep/ingest.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace isoflop::sweep {
namespace {

using nlohmann::json;

std::optional<double> OptNumber(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

Result<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Result<std::vector<store::MetricRow>> ParseMetricsLines(const std::string& text,
                                                        int64_t* consumed) {
  std::vector<store::MetricRow> rows;
  size_t pos = 0;
  int line_no = 0;
  *consumed = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;  // torn last line: not ours yet
    ++line_no;
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      *consumed = static_cast<int64_t>(pos);
      continue;
    }
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
      return Status::Corrupt("metrics.jsonl line " + std::to_string(line_no) +
                             ": expected a JSON object with an integer \"step\"");
    }
    store::MetricRow r;
    r.step = j["step"].get<int64_t>();
    if (j.contains("tokens") && j["tokens"].is_number()) r.tokens = j["tokens"].get<int64_t>();
    if (j.contains("flops") && j["flops"].is_number()) r.flops = j["flops"].get<double>();
    r.train_loss = OptNumber(j, "train_loss");
    r.val_loss = OptNumber(j, "val_loss");
    r.lr = OptNumber(j, "lr");
    r.grad_norm = OptNumber(j, "grad_norm");
    r.tokens_per_s = OptNumber(j, "tokens_per_s");
    r.wall_s = OptNumber(j, "wall_s");
    if (auto e = j.find("extra"); e != j.end() && e->is_object()) {
      for (const auto& [k, v] : e->items())
        if (v.is_number()) r.extra.emplace_back(k, v.get<double>());
    }
    rows.push_back(std::move(r));
    *consumed = static_cast<int64_t>(pos);
  }
  return rows;
}

Result<IngestProgress> IngestMetrics(store::Store& db, store::RunRecord* run) {
  IngestProgress progress;
  const std::string path = run->run_dir + "/metrics.jsonl";
  std::ifstream in(path, std::ios::binary);
  if (!in) return progress;
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  int64_t offset = run->ingest_offset;
  if (offset > size) offset = 0;  // truncated after a resume: upserts make re-reading safe
  if (offset > 0) {
    // The offset must start a line (the byte before it a newline); else the file was rewritten.
    in.seekg(offset - 1);
    char prev = 0;
    in.get(prev);
    if (prev != '\n') offset = 0;
  }
  // A finished run's rows are all in the store; a file rewritten since (by a worker that should
  // not have touched it) must not replace them.
  if (offset == 0 && run->ingest_offset > 0 && run->status == "finished") return progress;
  if (offset == size) return progress;
  in.seekg(offset);
  std::string text(static_cast<size_t>(size - offset), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  int64_t consumed = 0;
  Result<std::vector<store::MetricRow>> rows = ParseMetricsLines(text, &consumed);
  if (!rows.ok()) return rows.status().WithPrefix(path);
  if (consumed == 0) return progress;
  store::RunRecord updated = *run;
  updated.ingest_offset = offset + consumed;
  // A re-read from the start (the trainer truncated the file when it resumed) may lower the
  // progress of a running run, never that of a finished one: its file can only be older.
  if (offset == 0 && run->status != "finished") updated.tokens_done = 0;
  for (const auto& r : *rows) {
    updated.tokens_done = std::max(updated.tokens_done, r.tokens);
    if (r.train_loss) updated.final_train_loss = r.train_loss;
    progress.step = r.step;
    progress.tokens = r.tokens;
    if (r.train_loss) progress.train_loss = r.train_loss;
    if (r.val_loss) progress.val_loss = r.val_loss;
    if (r.tokens_per_s) progress.tokens_per_s = r.tokens_per_s;
  }
  {
    ISOFLOP_ASSIGN_OR_RETURN(store::Transaction txn, db.Begin());
    ISOFLOP_RETURN_IF_ERROR(db.UpsertMetrics(run->id, *rows));
    ISOFLOP_RETURN_IF_ERROR(db.UpsertRun(updated).status());
    ISOFLOP_RETURN_IF_ERROR(txn.Commit());
  }
  *run = std::move(updated);
  progress.new_rows = static_cast<int64_t>(rows->size());
  return progress;
}

Result<RunInfo> ReadRunInfo(const std::string& run_dir) {
  const std::string path = run_dir + "/info.json";
  ISOFLOP_ASSIGN_OR_RETURN(std::string text, ReadWhole(path));
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return Status::Corrupt(path + ": not a JSON object");
  RunInfo info;
  if (j.contains("n_total") && j["n_total"].is_number()) info.n_total = j["n_total"].get<int64_t>();
  if (j.contains("n_non_embedding") && j["n_non_embedding"].is_number())
    info.n_non_embedding = j["n_non_embedding"].get<int64_t>();
  info.data_entropy_nats = OptNumber(j, "data_entropy_nats");
  if (j.contains("device") && j["device"].is_string()) info.device = j["device"];
  if (j.contains("host") && j["host"].is_string()) info.host = j["host"];
  if (j.contains("threads") && j["threads"].is_number()) info.threads = j["threads"].get<int>();
  return info;
}

Result<std::optional<RunStatusFile>> ReadRunStatus(const std::string& run_dir) {
  const std::string path = run_dir + "/status.json";
  Result<std::string> text = ReadWhole(path);
  if (!text.ok()) return std::optional<RunStatusFile>();
  json j = json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("state") || !j["state"].is_string()) {
    return Status::Corrupt(path + ": expected a JSON object with a \"state\"");
  }
  RunStatusFile s;
  s.state = j["state"];
  if (j.contains("reason") && j["reason"].is_string()) s.reason = j["reason"];
  if (j.contains("step") && j["step"].is_number()) s.step = j["step"].get<int64_t>();
  if (j.contains("tokens") && j["tokens"].is_number()) s.tokens = j["tokens"].get<int64_t>();
  s.final_val_loss = OptNumber(j, "final_val_loss");
  if (j.contains("exit_code") && j["exit_code"].is_number())
    s.exit_code = j["exit_code"].get<int>();
  if (auto w = OptNumber(j, "wall_s")) s.wall_s = *w;
  return std::optional<RunStatusFile>(s);
}

std::string TailOfLog(const std::string& run_dir, size_t max_bytes) {
  Result<std::string> text = ReadWhole(run_dir + "/train.log");
  if (!text.ok()) return "";
  std::string t = *text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  if (t.size() > max_bytes) t = t.substr(t.size() - max_bytes);
  // The last non-empty line says the most.
  const size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

}  // namespace isoflop::sweep
