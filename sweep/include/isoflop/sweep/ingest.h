// Ingestion of a run directory (docs/run-protocol.md) into the store: metrics.jsonl from the
// byte offset already ingested, info.json (parameter counts, data entropy) and status.json
// (final state). The sweep manager is the store's only writer; these functions are how it writes
// what runs produced.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/store/store.h"
#include "isoflop/trainer/run_protocol.h"

namespace isoflop::sweep {

// The parts of metrics.jsonl lines the progress display needs. Plain value.
struct IngestProgress {
  int64_t new_rows = 0;  // lines ingested by this call
  int64_t step = 0, tokens = 0;
  std::optional<double> train_loss, val_loss, tokens_per_s;
  // Complete lines that are not metrics objects (a disk or NFS fault, another writer): left
  // out, "PATH: byte B: why; line skipped" each, so that one bad line neither blocks the
  // sweep nor drops the lines after it.
  std::vector<std::string> skipped;
};

// A complete metrics line that is not a metrics object: where it starts in the text, and why.
struct SkippedLine {
  int64_t offset = 0;
  std::string why;
};

// Parses complete lines of metrics.jsonl text (a torn last line is left unparsed). Returns the
// rows and sets *consumed to the bytes of the complete lines. A complete line that is not a
// valid metrics object is Corrupt, naming its 1-based line (counted from the start of `text`);
// with `skipped`, it is left out instead and listed there.
Result<std::vector<store::MetricRow>> ParseMetricsLines(
    const std::string& text, int64_t* consumed, std::vector<SkippedLine>* skipped = nullptr);

// Reads run->run_dir/metrics.jsonl from run->ingest_offset and, in ONE transaction, upserts the
// new rows and stores the advanced offset, the file's identity (device:inode), tokens_done and
// last train loss in the run record (so a crash never duplicates or drops rows). *run is updated
// to what was stored. When the file is another one than the offset counts bytes of (the trainer
// truncates on resume by writing a new file), shrank, or the offset no longer starts a line, it
// re-reads from the beginning and the store follows the file: rows are upserted by step, so
// nothing is duplicated, and rows past the file's last step (from the attempt before the
// resume) are deleted. A finished run is never re-read: its rows stay as they are. A missing
// file is not an error (nothing to ingest). `run` must already exist in the store (id > 0).
Result<IngestProgress> IngestMetrics(store::Store& db, store::RunRecord* run);

// info.json and status.json are the trainer's structs (trainer/run_protocol.h): one definition
// for the writer and the reader.
using RunInfo = trainer::InfoFile;
using RunStatusFile = trainer::StatusFile;

// info.json, as written by the trainer at start. NotFound when absent; Corrupt (naming the
// file) when unreadable.
Result<RunInfo> ReadRunInfo(const std::string& run_dir);

// status.json, as written by the trainer at exit. nullopt when absent (still running, killed
// by SIGKILL, or stopped before it started); Corrupt (naming the file) when present but
// unreadable.
Result<std::optional<RunStatusFile>> ReadRunStatus(const std::string& run_dir);

// Last few lines of DIR/train.log (the child's stdout and stderr), for failure reasons.
std::string TailOfLog(const std::string& run_dir, size_t max_bytes = 400);

}  // namespace isoflop::sweep
