// Dashboard benchmark: how long the page's polled answers take over a store the size of a live
// sweep's. A sweep of RUNS runs with ROWS logged steps each, dense (no named extras) and MoE (the
// trainer's per-step router metrics for 64 experts: 5 statistics and 64 loads, 69 extras a
// row); times /api/sweeps/NAME (polled every few seconds) and /api/sweeps/NAME/series (fetched
// whenever a run's tokens move, so every poll while a sweep trains). Prints best and median of
// REPEATS calls each. Usage: series_bench [RUNS] [ROWS] [REPEATS].
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "isoflop/serve/api.h"
#include "isoflop/store/store.h"

namespace fs = std::filesystem;
using isoflop::store::MetricRow;

namespace {

void Check(const isoflop::Status& st, const char* what) {
  if (!st.ok()) {
    std::fprintf(stderr, "series_bench: %s: %s\n", what, st.message().c_str());
    std::exit(1);
  }
}

// One sweep of `runs` runs with `rows` metric rows each and `extras` named extras per row.
void Fill(const std::string& db_path, const std::string& name, int runs, int rows, int extras) {
  auto db = isoflop::store::Store::Open(db_path);
  Check(db.status(), "open");
  isoflop::store::SweepRecord sw;
  sw.name = name;
  sw.file_path = name + ".yaml";
  sw.config_text = "name: " + name + "\n";
  sw.config_hash = "0";
  sw.status = "running";
  auto sweep_id = (*db)->UpsertSweep(sw);
  Check(sweep_id.status(), "sweep");
  for (int r = 0; r < runs; ++r) {
    isoflop::store::RunRecord run;
    run.sweep_id = *sweep_id;
    run.cell_key = "cell" + std::to_string(r);
    run.status = "running";
    run.n_layer = 4, run.d_model = 256, run.n_head = 4, run.d_ff = 1024;
    run.vocab_size = 50304, run.seq_len = 1024;
    run.n_total = 1000000 * (r + 1);
    run.budget_flops = 1e18 * (1 + r % 4);
    run.target_tokens = 1024LL * rows;
    run.tokens_done = 1024LL * rows;
    auto id = (*db)->UpsertRun(run);
    Check(id.status(), "run");
    std::vector<MetricRow> ms;
    for (int s = 1; s <= rows; ++s) {
      MetricRow m;
      m.step = s;
      m.tokens = 1024LL * s;
      m.flops = 6e6 * m.tokens;
      m.train_loss = 3.0 / std::sqrt(double(s));
      if (s % 50 == 0) m.val_loss = 3.1 / std::sqrt(double(s));
      m.lr = 1e-3, m.grad_norm = 0.5, m.tokens_per_s = 1e5, m.wall_s = 0.01 * s;
      for (int e = 0; e < extras; ++e)
        m.extra.emplace_back(e < 5 ? "stat_" + std::to_string(e) : "load_" + std::to_string(e - 5),
                             1.0 / (e + 1));
      ms.push_back(std::move(m));
    }
    Check((*db)->UpsertMetrics(*id, ms), "metrics");
  }
}

void Time(const std::string& db_path, const std::string& path, int repeats) {
  std::vector<double> ms;
  size_t bytes = 0;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const isoflop::serve::ApiResponse r = isoflop::serve::HandleApi(db_path, path, {});
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (r.status != 200) {
      std::fprintf(stderr, "series_bench: %s answered %d: %s\n", path.c_str(), r.status,
                   r.body.c_str());
      std::exit(1);
    }
    bytes = r.body.size();
  }
  std::sort(ms.begin(), ms.end());
  std::printf("  %-28s best %8.1f ms  median %8.1f ms  (%zu KB)\n", path.c_str(), ms.front(),
              ms[ms.size() / 2], bytes / 1024);
}

// Reading one MoE sweep's metrics as /series does (no extras) beside reading them with their
// extras, as it did before it skipped them: the same rows, side by side in one run.
void TimeReads(const std::string& db_path, int runs, int repeats) {
  auto db = isoflop::store::Store::Open(db_path);
  Check(db.status(), "open");
  for (auto extras :
       {isoflop::store::Store::Extras::kInclude, isoflop::store::Store::Extras::kOmit}) {
    std::vector<double> ms;
    for (int i = 0; i < repeats; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      size_t n = 0;
      for (int r = 1; r <= runs; ++r) {
        auto rows = (*db)->GetMetrics(runs + r, extras);  // the MoE sweep's runs come second
        Check(rows.status(), "metrics");
        n += rows->size();
      }
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      if (n == 0) std::exit(1);
    }
    std::sort(ms.begin(), ms.end());
    std::printf("  GetMetrics of %d runs, %-12s best %8.1f ms  median %8.1f ms\n", runs,
                extras == isoflop::store::Store::Extras::kInclude ? "with extras" : "without",
                ms.front(), ms[ms.size() / 2]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 40;
  const int rows = argc > 2 ? std::atoi(argv[2]) : 5000;
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 7;
  const fs::path dir =
      fs::temp_directory_path() / ("isoflop_series_bench_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string db_path = (dir / "bench.db").string();
  const auto t0 = std::chrono::steady_clock::now();
  Fill(db_path, "dense", runs, rows, 0);
  Fill(db_path, "moe", runs, rows, 69);
  std::printf(
      "series_bench: 2 sweeps of %d runs x %d logged steps (MoE: 69 extras a row), "
      "filled in %.1f s; %.0f MB\n",
      runs, rows, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
      fs::file_size(db_path) / 1e6);
  for (const char* sweep : {"dense", "moe"}) {
    std::printf("%s sweep, %d calls each:\n", sweep, repeats);
    Time(db_path, std::string("/api/sweeps/") + sweep, repeats);
    Time(db_path, std::string("/api/sweeps/") + sweep + "/series", repeats);
  }
  std::printf("moe sweep's metrics, %d reads each:\n", repeats);
  TimeReads(db_path, runs, repeats);
  fs::remove_all(dir);
  return 0;
}
