// The check of a plan's token files before launch (data_check.h): each distinct (data, vocab,
// seq_len) the cells use is parsed once with the trainer's run-config parser, each distinct file
// summarised once (from the store when unchanged), then every split is held against the cells.
#include "isoflop/sweep/data_check.h"

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "isoflop/common/format.h"
#include "isoflop/trainer/data.h"
#include "isoflop/trainer/run_config.h"

namespace isoflop::sweep {
namespace {

using nlohmann::json;
using trainer::DataSource;

// One token file as a split holds it: how many tokens, and its largest id (none for text,
// whose byte values are below the 256 that model.vocab_size must reach).
struct FileFacts {
  int64_t tokens = 0;
  std::optional<std::pair<uint32_t, int64_t>> max;  // (id, first index)
};

class Checker {
 public:
  Checker(const SweepConfig& c, const DataCheckOptions& o) : c_(c), o_(o) {}

  // nullopt: this machine does not see the file.
  Result<std::optional<FileFacts>> Facts(const std::string& path, DataSource source,
                                         const std::string& field, double val_fraction, bool val) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return std::optional<FileFacts>();
    if (source == DataSource::kText) {
      const int64_t n_val = trainer::TextValTokens(st.st_size, val_fraction);
      return std::optional<FileFacts>(FileFacts{val ? n_val : st.st_size - n_val, std::nullopt});
    }
    const std::string format = source == DataSource::kBin ? "bin" : "llmc";
    const auto memo = seen_.find({path, format});
    if (memo != seen_.end()) return std::optional<FileFacts>(memo->second);
    const std::string identity =
        std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
        std::to_string(st.st_size) + ":" +
        std::to_string(int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec) + ":" +
        std::to_string(int64_t(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec);
    std::optional<store::TokenFileRecord> known;
    if (o_.cache) {
      ISOFLOP_ASSIGN_OR_RETURN(known, o_.cache->GetTokenFile(path, format));
      if (known && known->identity != identity) known.reset();
    }
    if (!known) {
      ISOFLOP_ASSIGN_OR_RETURN(store::TokenFileRecord scanned,
                               Scan(path, source, format, st.st_size, field));
      scanned.identity = identity;
      if (o_.cache && !o_.cache->read_only()) {
        ISOFLOP_RETURN_IF_ERROR(o_.cache->PutTokenFile(scanned));
      }
      known = scanned;
    }
    FileFacts f{known->tokens, std::nullopt};
    if (known->max_at >= 0) f.max = {static_cast<uint32_t>(known->max_id), known->max_at};
    ++report_.files;
    seen_[{path, format}] = f;
    return std::optional<FileFacts>(f);
  }

  // Checks one distinct data block for the cells that share it (`tag` names the first).
  Status CheckData(const trainer::DataConfig& d, int vocab, int seq_len, const std::string& tag) {
    struct Split {
      const char* field;
      bool val;
      std::vector<std::string> files;
    };
    std::vector<Split> splits;
    switch (d.source) {
      case DataSource::kSynthetic:
        return Status::Ok();
      case DataSource::kText:
        splits = {{"data.paths", false, d.paths}, {"data.paths", true, d.paths}};
        break;
      case DataSource::kBin:
        splits = {{"data.train", false, {d.train_bin}}, {"data.val", true, {d.val_bin}}};
        break;
      case DataSource::kLlmc:
        splits = {{"data.train", false, d.train_shards}, {"data.val", true, d.val_shards}};
        break;
    }
    const std::string refuse = " (the trainer would refuse " + tag + ")";
    for (const Split& s : splits) {
      std::vector<int64_t> tokens;
      bool all_seen = true;
      for (const std::string& path : s.files) {
        ISOFLOP_ASSIGN_OR_RETURN(std::optional<FileFacts> f,
                                 Facts(path, d.source, s.field, d.val_fraction, s.val));
        if (!f) {
          all_seen = false;
          continue;
        }
        tokens.push_back(f->tokens);
        if (f->max && int64_t{f->max->first} >= vocab) {
          return Status::InvalidArgument(
              FieldWhere(c_, s.field) + ": " +
              trainer::TokenIdTooLarge(path, f->max->first, f->max->second, vocab).message() +
              refuse);
        }
      }
      if (all_seen && trainer::WindowStarts(tokens, seq_len + 1) == 0) {
        return Status::InvalidArgument(
            FieldWhere(c_, s.field) + ": " +
            trainer::NoWindow(s.val ? "validation data" : "training data", s.files, seq_len + 1)
                .message() +
            refuse);
      }
    }
    return Status::Ok();
  }

  const DataCheckReport& report() const { return report_; }

 private:
  Result<store::TokenFileRecord> Scan(const std::string& path, DataSource source,
                                      const std::string& format, int64_t bytes,
                                      const std::string& field) {
    const bool show = o_.out && bytes >= o_.progress_bytes;
    const std::string what = "checking the token ids of " + path + " (" + Bytes(bytes) + ")";
    if (show) *o_.out << what << (o_.live ? "" : "\n") << std::flush;
    int last_percent = -1;
    auto progress = [&](int64_t done, int64_t total) {
      const int percent = total > 0 ? int(100 * done / total) : 100;
      if (!show || !o_.live || percent == last_percent) return;
      last_percent = percent;
      *o_.out << "\r" << what << ": " << percent << "%" << std::flush;
    };
    const auto t0 = std::chrono::steady_clock::now();
    Result<trainer::TokenFileSummary> s = trainer::SummarizeTokenFile(path, source, progress);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (show && o_.live) *o_.out << "\r\033[K";
    if (!s.ok()) return s.status().WithPrefix(FieldWhere(c_, field));
    ++report_.scanned;
    report_.bytes_scanned += bytes;
    report_.scan_seconds += seconds;
    if (show) {
      *o_.out << "  " << path << ": " << s->tokens << " tokens, largest id " << s->max_id
              << ", read in " << Fmt("%.1f", seconds) << " s ("
              << Fmt("%.2f", seconds > 0 ? double(bytes) / seconds / 1e9 : 0) << " GB/s)\n";
    }
    store::TokenFileRecord r;
    r.path = path;
    r.format = format;
    r.tokens = s->tokens;
    r.max_id = s->max_id;
    r.max_at = s->max_at;
    r.scan_seconds = seconds;
    return r;
  }

  const SweepConfig& c_;
  const DataCheckOptions& o_;
  std::map<std::pair<std::string, std::string>, FileFacts> seen_;
  DataCheckReport report_;
};

}  // namespace

Result<DataCheckReport> CheckPlanData(const SweepConfig& config, const Plan& plan,
                                      const std::set<std::string>& skip,
                                      const DataCheckOptions& options) {
  Checker checker(config, options);
  std::set<std::string> checked;  // data block, vocab and seq_len already held against files
  for (const Cell& cell : plan.cells) {
    if (skip.count(cell.key)) continue;
    const json& data = cell.config["data"];
    const std::string what = data.dump() + "|" + std::to_string(cell.shape.vocab_size) + "|" +
                             std::to_string(cell.shape.seq_len);
    if (!checked.insert(what).second) continue;
    json run = cell.config;
    run["name"] = cell.key;
    ISOFLOP_ASSIGN_OR_RETURN(trainer::RunConfig parsed, trainer::ParseRunConfig(run.dump()));
    const std::string tag = "cell " + cell.key + " (budget " + Fmt("%.3g", cell.budget_flops) +
                            ", " + cell.ShapeString() + ")";
    ISOFLOP_RETURN_IF_ERROR(
        checker.CheckData(parsed.data, cell.shape.vocab_size, cell.shape.seq_len, tag));
  }
  return checker.report();
}

}  // namespace isoflop::sweep
