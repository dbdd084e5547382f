// Idempotent, crash-safe ingestion of run directories into the store.
#include "isoflop/sweep/ingest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace isoflop::sweep {
namespace {

Result<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A descriptor closed when this goes out of scope.
struct ClosedOnExit {
  int fd = -1;
  ~ClosedOnExit() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Result<std::vector<store::MetricRow>> ParseMetricsLines(const std::string& text, int64_t* consumed,
                                                        std::vector<SkippedLine>* skipped) {
  std::vector<store::MetricRow> rows;
  Status error;
  *consumed = trainer::ForEachMetricsLine(text, [&](trainer::MetricsLineAt& line) {
    if (!line.parsed.ok() && skipped != nullptr) {
      skipped->push_back({line.offset, line.parsed.status().message()});
      return true;
    }
    if (!line.parsed.ok()) {
      error = Status::Corrupt("metrics.jsonl line " + std::to_string(line.line_no) + ": " +
                              line.parsed.status().message());
      return false;
    }
    trainer::MetricsLine& m = *line.parsed;
    store::MetricRow r;
    r.step = m.step;
    r.tokens = m.tokens;
    r.flops = m.flops;
    r.train_loss = m.train_loss;
    r.val_loss = m.val_loss;
    r.lr = m.lr;
    r.grad_norm = m.grad_norm;
    r.tokens_per_s = m.tokens_per_s;
    r.wall_s = m.wall_s;
    r.extra = std::move(m.extra);
    rows.push_back(std::move(r));
    return true;
  });
  if (!error.ok()) return error;
  return rows;
}

Result<IngestProgress> IngestMetrics(store::Store& db, store::RunRecord* run) {
  IngestProgress progress;
  const std::string path = run->run_dir + "/metrics.jsonl";
  // One descriptor for the identity and the bytes: a rewrite between a stat and an open could
  // pair the new file's identity with the old file's offset.
  const ClosedOnExit file_fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  const int fd = file_fd.fd;
  if (fd < 0) return progress;
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return Status::IoError(path + ": fstat: " + std::strerror(errno));
  }
  const int64_t size = st.st_size;
  const std::string file = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  int64_t offset = run->ingest_offset;
  // Read from the start when the file is not the one the offset counts bytes of (the trainer
  // truncates on resume by writing a new file), when it shrank, or when the offset no longer
  // starts a line (the byte before it a newline).
  if (!run->ingest_file.empty() && run->ingest_file != file) offset = 0;
  if (offset > size) offset = 0;
  if (offset > 0) {
    char prev = 0;
    if (::pread(fd, &prev, 1, offset - 1) != 1 || prev != '\n') offset = 0;
  }
  const bool reread = offset == 0 && run->ingest_offset > 0;
  // A finished run's rows are all in the store; a file rewritten since (by a worker that should
  // not have touched it) must not replace them.
  if (reread && run->status == "finished") return progress;
  if (offset == size && !reread) return progress;
  std::string text(static_cast<size_t>(size - offset), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::pread(fd, text.data() + got, text.size() - got, offset + got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError(path + ": read: " + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  int64_t consumed = 0;
  std::vector<SkippedLine> skipped;
  Result<std::vector<store::MetricRow>> rows = ParseMetricsLines(text, &consumed, &skipped);
  if (!rows.ok()) return rows.status().WithPrefix(path);
  if (consumed == 0 && !reread) return progress;
  for (const SkippedLine& s : skipped) {
    progress.skipped.push_back(path + ": byte " + std::to_string(offset + s.offset) + ": " + s.why +
                               "; line skipped");
  }
  store::RunRecord updated = *run;
  updated.ingest_offset = offset + consumed;
  updated.ingest_file = file;
  // A re-read from the start (the trainer truncated the file when it resumed) may lower the
  // progress of a running run, never that of a finished one: its file can only be older.
  if (reread) {
    updated.tokens_done = 0;
    updated.final_train_loss.reset();
  }
  int64_t last_step = 0;
  for (const auto& r : *rows) {
    updated.tokens_done = std::max(updated.tokens_done, r.tokens);
    last_step = std::max(last_step, r.step);
    if (r.train_loss) updated.final_train_loss = r.train_loss;
    progress.step = r.step;
    progress.tokens = r.tokens;
    if (r.train_loss) progress.train_loss = r.train_loss;
    if (r.val_loss) progress.val_loss = r.val_loss;
    if (r.tokens_per_s) progress.tokens_per_s = r.tokens_per_s;
  }
  {
    ISOFLOP_ASSIGN_OR_RETURN(store::Transaction txn, db.Begin());
    // The store mirrors the file: the rows past the truncation belong to the attempt before
    // the resume, and the trainer logs those steps again (or never, if it ends first).
    if (reread) ISOFLOP_RETURN_IF_ERROR(db.DeleteMetricsAfter(run->id, last_step));
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
  Result<RunInfo> info = trainer::InfoFile::Parse(text);
  if (!info.ok()) return info.status().WithPrefix(path);
  return info;
}

Result<std::optional<RunStatusFile>> ReadRunStatus(const std::string& run_dir) {
  const std::string path = run_dir + "/status.json";
  Result<std::string> text = ReadWhole(path);
  if (!text.ok()) return std::optional<RunStatusFile>();
  Result<RunStatusFile> st = trainer::StatusFile::Parse(*text);
  if (!st.ok()) return st.status().WithPrefix(path);
  return std::optional<RunStatusFile>(std::move(*st));
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
