// The data check made before a sweep launches anything: every token file its cells read that
// this machine sees is opened as the trainer will open it, and the sweep is refused, naming the
// sweep file's line and field, where a run would fail on it: a bad llm.c header or .bin size, a
// token id >= a cell's model.vocab_size, a split without one window of seq_len + 1 tokens.
// A .bin file or llm.c shard is scanned whole once; the store remembers what the scan found
// under the file's identity (device, inode, size, mtime, ctime), so later plans, runs, retries
// and syncs only stat it. A file this machine does not see is left to the runs (a SLURM
// sweep's data may live on the compute nodes only; the plan warns about it).
#pragma once

#include <cstdint>
#include <ostream>
#include <set>
#include <string>

#include "isoflop/common/status.h"
#include "isoflop/store/store.h"
#include "isoflop/sweep/config.h"
#include "isoflop/sweep/planner.h"

namespace isoflop::sweep {

struct DataCheckOptions {
  // Where scans are remembered: read, and written unless it is read-only; null: scan each time.
  store::Store* cache = nullptr;
  std::ostream* out = nullptr;  // a line per scan of a file of progress_bytes or more
  bool live = false;            // redraw the scan's percentage in place (out is a terminal)
  int64_t progress_bytes = int64_t{256} << 20;
};

// What a check did. Plain value.
struct DataCheckReport {
  int files = 0;    // distinct .bin files and shards the checked cells read and this host sees
  int scanned = 0;  // of them, read whole this time (the others came from the store)
  int64_t bytes_scanned = 0;
  double scan_seconds = 0;
};

// Checks the data of every cell of `plan` whose key is not in `skip` (cells already finished).
// InvalidArgument "SWEEPFILE:LINE:COL: data.train: FILE: token id 50256 at token 17 is >=
// model.vocab_size 50000; raise ... (the trainer would refuse budget ... cell ...)"; Corrupt for a
// damaged file, prefixed the same way; store errors as they come.
Result<DataCheckReport> CheckPlanData(const SweepConfig& config, const Plan& plan,
                                      const std::set<std::string>& skip,
                                      const DataCheckOptions& options);

}  // namespace isoflop::sweep
