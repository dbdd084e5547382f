// File plumbing of a run directory (docs/run-protocol.md): atomic JSON writes, the metrics log,
// and checkpoint directories committed with a DONE marker. Torch-free: what goes inside a
// checkpoint is the training loop's business. Functions are not safe to call concurrently on
// the same run directory (one trainer process owns it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "isoflop/common/files.h"
#include "isoflop/common/status.h"

namespace isoflop::trainer {

// The atomic write every run-directory file goes through (common/files.h).
using ::isoflop::FsyncPath;
using ::isoflop::WriteFileAtomic;

// The lock file a worker holds (flock, with its pid) from before it resumes until it exits:
// exactly one live worker owns a run directory. Others refuse (kExitBusy) without touching it.
inline std::string RunDirLockPath(const std::string& run_dir) { return run_dir + "/.lock"; }

// Appends lines to DIR/metrics.jsonl. Each Append writes one whole line with a single write()
// so a crash leaves at most one torn last line. Not thread-safe.
class MetricsLog {
 public:
  MetricsLog() = default;
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  Status Open(const std::string& path);
  // `line` without the trailing newline.
  Status Append(const std::string& line);
  // The lines appended so far on disk (fdatasync); Ok when the log is not open.
  Status Sync();

 private:
  int fd_ = -1;
  std::string path_;
};

// What TruncateMetrics kept of a metrics log, and the complete lines it left out before the cut.
struct MetricsKept {
  int64_t last_step = 0;  // the step of the last line kept; 0 when none
  // "line L (byte B): why" for each complete line before the cut that is not a metrics object
  // (a disk fault, another writer) or does not follow the step before it: dropped, and the good
  // lines after it kept, as a reader of the file skips them.
  std::vector<std::string> dropped;
};

// Keeps the lines of a metrics log whose "step" <= max_step, in order, up to the first that is
// past max_step or torn (the resume rule of the protocol); the file is rewritten (a new inode)
// only when something goes. A missing file is fine (nothing kept).
Result<MetricsKept> TruncateMetrics(const std::string& path, int64_t max_step);

// A complete checkpoint: ckpt/step-<8 digits>/ with a DONE file.
struct CheckpointDir {
  int64_t step;
  std::string path;
};

// Complete checkpoints under ckpt_dir, oldest first. A missing directory gives an empty list.
std::vector<CheckpointDir> ListCheckpoints(const std::string& ckpt_dir);

// Creates ckpt_dir/tmp-<step>-<pid>/ (removing leftovers of earlier attempts) and returns it.
Result<std::string> BeginCheckpoint(const std::string& ckpt_dir, int64_t step);

// fsyncs every file in tmp_dir, renames it to ckpt_dir/step-<8 digits>, fsyncs ckpt_dir, writes
// and fsyncs DONE, then deletes all but the newest `keep` complete checkpoints and any stale
// tmp-* directories. Returns the committed path.
Result<std::string> CommitCheckpoint(const std::string& tmp_dir, const std::string& ckpt_dir,
                                     int64_t step, int keep = 2);

}  // namespace isoflop::trainer
