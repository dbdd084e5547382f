// Run-directory file plumbing: atomic writes, metrics.jsonl, checkpoint commit protocol.
#include "isoflop/trainer/run_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "isoflop/trainer/run_protocol.h"

namespace isoflop::trainer {

namespace fs = std::filesystem;

namespace {

Status Errno(const std::string& what, const std::string& path) {
  return Status::IoError(path + ": " + what + " failed (" + std::strerror(errno) + ")");
}

std::string StepName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}

}  // namespace

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

Status MetricsLog::Open(const std::string& path) {
  path_ = path;
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) return Errno("open", path);
  return Status::Ok();
}

Status MetricsLog::Append(const std::string& line) { return WriteAll(fd_, line + "\n", path_); }

Status MetricsLog::Sync() {
  if (fd_ >= 0 && ::fdatasync(fd_) != 0) return Errno("fdatasync", path_);
  return Status::Ok();
}

Result<MetricsKept> TruncateMetrics(const std::string& path, int64_t max_step) {
  MetricsKept kept;
  std::ifstream in(path, std::ios::binary);
  if (!in) return kept;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::string out;
  ForEachMetricsLine(text, [&](MetricsLineAt& line) {
    const std::string where =
        "line " + std::to_string(line.line_no) + " (byte " + std::to_string(line.offset) + ")";
    if (!line.parsed.ok()) {
      kept.dropped.push_back(where + ": " + line.parsed.status().message());
      return true;
    }
    const int64_t step = line.parsed->step;
    if (step > max_step) return false;
    if (step <= kept.last_step) {
      kept.dropped.push_back(where + ": step " + std::to_string(step) +
                             " does not follow the step before it, " +
                             std::to_string(kept.last_step));
      return true;
    }
    kept.last_step = step;
    out += line.text;
    out += '\n';
    return true;
  });
  if (out.size() != text.size()) ISOFLOP_RETURN_IF_ERROR(WriteFileAtomic(path, out));
  return kept;
}

std::vector<CheckpointDir> ListCheckpoints(const std::string& ckpt_dir) {
  std::vector<CheckpointDir> out;
  std::error_code ec;
  if (!fs::is_directory(ckpt_dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(ckpt_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() != 13 || name.rfind("step-", 0) != 0) continue;
    if (!fs::exists(e.path() / "DONE", ec)) continue;
    try {
      out.push_back({std::stoll(name.substr(5)), e.path().string()});
    } catch (...) {
    }
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointDir& a, const CheckpointDir& b) { return a.step < b.step; });
  return out;
}

Result<std::string> BeginCheckpoint(const std::string& ckpt_dir, int64_t step) {
  std::error_code ec;
  fs::create_directories(ckpt_dir, ec);
  if (ec) return Status::IoError(ckpt_dir + ": cannot create (" + ec.message() + ")");
  const std::string tmp =
      (fs::path(ckpt_dir) / ("tmp-" + std::to_string(step) + "-" + std::to_string(::getpid())))
          .string();
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  if (ec) return Status::IoError(tmp + ": cannot create (" + ec.message() + ")");
  return tmp;
}

Result<std::string> CommitCheckpoint(const std::string& tmp_dir, const std::string& ckpt_dir,
                                     int64_t step, int keep) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(tmp_dir, ec)) {
    ISOFLOP_RETURN_IF_ERROR(FsyncPath(e.path().string()));
  }
  ISOFLOP_RETURN_IF_ERROR(FsyncPath(tmp_dir));
  const std::string final_dir = (fs::path(ckpt_dir) / StepName(step)).string();
  fs::remove_all(final_dir, ec);  // an incomplete one (no DONE) from a crashed attempt
  if (::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) return Errno("rename", tmp_dir);
  ISOFLOP_RETURN_IF_ERROR(FsyncPath(ckpt_dir));
  const std::string done = final_dir + "/DONE";
  const int fd = ::open(done.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create", done);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("fsync", done);
  ISOFLOP_RETURN_IF_ERROR(FsyncPath(final_dir));

  const auto complete = ListCheckpoints(ckpt_dir);
  for (size_t i = 0; i + keep < complete.size(); ++i) fs::remove_all(complete[i].path, ec);
  for (const auto& e : fs::directory_iterator(ckpt_dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool stale_tmp = name.rfind("tmp-", 0) == 0;
    const bool incomplete = name.rfind("step-", 0) == 0 && !fs::exists(e.path() / "DONE");
    if (stale_tmp || incomplete) fs::remove_all(e.path(), ec);
  }
  return final_dir;
}

}  // namespace isoflop::trainer
