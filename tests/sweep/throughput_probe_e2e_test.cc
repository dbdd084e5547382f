// The throughput probe through the real isoflop-train: a tiny shape measures a positive tokens/s
// and a peak memory near the estimate, and leaves no folder behind; `isoflop sweep plan` marks
// its estimates probed and shows the probed memory, decides
// `cpus_per_run: auto` from a measurement, and falls back to the model with a note when the
// binary is missing.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "isoflop/sweep/config.h"
#include "isoflop/sweep/planner.h"
#include "isoflop/sweep/throughput_probe.h"

namespace isoflop {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::Binary;
using testing::TempDir;

const std::string kTiny = std::string(ISOFLOP_SOURCE_DIR) + "/tests/sweep/testdata/tiny.yaml";

sweep::Plan TinyPlan() {
  Result<sweep::SweepConfig> c = sweep::LoadSweepConfig(kTiny);
  EXPECT_TRUE(c.ok()) << c.status().message();
  Result<sweep::Plan> p = sweep::PlanSweep(*c, sweep::PlanEnvironment{});
  EXPECT_TRUE(p.ok()) << p.status().message();
  return *p;
}

TEST(ThroughputProbeE2ETest, RealTrainerGivesPositiveTokensPerSecond) {
  const sweep::Plan plan = TinyPlan();
  sweep::ProbeOptions o;
  o.train_binary = Binary("isoflop-train");
  o.scratch_dir = TempDir("probe_scratch");
  Result<std::vector<sweep::ProbeFigure>> r = sweep::MeasureThroughput({plan.cells[0]}, 1, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_GT((*r)[0].tokens_per_s, 0);
  EXPECT_GT((*r)[0].measured_tokens, 0);
  EXPECT_GE((*r)[0].overhead_s, 0);
  // Its trainer's own peak resident set (status.json), beside the plan's estimate for it.
  const double peak = double((*r)[0].peak_memory_bytes);
  EXPECT_GT(peak, 0.75 * plan.cells[0].memory.total);
  EXPECT_LT(peak, 1.25 * plan.cells[0].memory.total);
  EXPECT_TRUE(fs::is_empty(o.scratch_dir));  // the temporary run folder is gone
}

TEST(ThroughputProbeE2ETest, MissingBinaryLeavesThePlanModelled) {
  sweep::Plan plan = TinyPlan();
  const sweep::Plan before = plan;
  sweep::Resources res;
  sweep::ProbeOptions o;
  o.train_binary = "/nonexistent/isoflop-train";
  Result<sweep::ProbeReport> r = sweep::ProbePlan(&plan, &res, /*choose_layout=*/true, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(r.status().message(), "/nonexistent/isoflop-train: not an executable file");
  for (size_t i = 0; i < plan.cells.size(); ++i) {
    EXPECT_EQ(plan.cells[i].est_source, sweep::Cell::EstimateSource::kModel);
    EXPECT_EQ(plan.cells[i].est_seconds, before.cells[i].est_seconds);
  }

  // Through the CLI: the plan still prints, estimates modelled, with the reason.
  const std::string dir = TempDir("probe_missing");
  auto out = testing::RunCommand({Binary("isoflop"), "sweep", "plan", kTiny},
                                 {"ISOFLOP_TRAIN=/nonexistent/isoflop-train"}, dir);
  ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
  EXPECT_NE(out.out.find("est_time from the throughput model, not measured: "
                         "ISOFLOP_TRAIN=/nonexistent/isoflop-train: not an executable file"),
            std::string::npos)
      << out.out;
  EXPECT_EQ(out.out.find("probed"), std::string::npos) << out.out;
}

TEST(ThroughputProbeE2ETest, PlanMarksEstimatesProbed) {
  const std::string dir = TempDir("probe_plan");
  auto out =
      testing::RunCommand({Binary("isoflop"), "sweep", "plan", kTiny, "--format", "json"}, {}, dir);
  ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
  const json rows = json::parse(out.out);
  ASSERT_EQ(rows.size(), 6u);
  for (const auto& row : rows) {
    // tiny.yaml has three shapes, all within max_shapes: every estimate is a measurement.
    EXPECT_EQ(row["est_by"], "probed") << row.dump();
    EXPECT_GT(row["est_time"].get<double>(), 0) << row.dump();
    // The probe's measured peak beside the estimate, in bytes.
    ASSERT_TRUE(row["probe_peak"].is_number_integer()) << row.dump();
    const double ratio = row["memory"].get<double>() / row["probe_peak"].get<double>();
    EXPECT_GT(ratio, 0.8) << row.dump();
    EXPECT_LT(ratio, 1.3) << row.dump();
  }
  EXPECT_NE(out.err.find("est_time probed in "), std::string::npos) << out.err;
  EXPECT_NE(out.err.find("memory probed on 3 shape(s): peak RSS "), std::string::npos) << out.err;
  EXPECT_NE(out.err.find("2 run(s) x 1 thread(s)"), std::string::npos) << out.err;

  // --no-probe: the model, said so.
  auto off =
      testing::RunCommand({Binary("isoflop"), "sweep", "plan", kTiny, "--no-probe"}, {}, dir);
  ASSERT_EQ(off.exit_code, 0) << off.out << off.err;
  EXPECT_NE(off.out.find("est_time from the throughput model, not measured: --no-probe"),
            std::string::npos)
      << off.out;
  EXPECT_EQ(off.out.find("memory probed"), std::string::npos) << off.out;
}

TEST(ThroughputProbeE2ETest, AutoCpusPerRunIsDecidedByMeasurement) {
  const std::string dir = TempDir("probe_auto");
  auto out = testing::RunCommand(
      {Binary("isoflop"), "sweep", "plan", kTiny, "--set", "executor.cpus_per_run=auto"}, {}, dir);
  ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
  // Both layouts measured, the figures and the decision printed.
  const size_t at = out.out.find("cpus_per_run auto: 1 run x ");
  ASSERT_NE(at, std::string::npos) << out.out;
  const std::string line = out.out.substr(at, out.out.find('\n', at) - at);
  EXPECT_NE(line.find(" tok/s; "), std::string::npos) << line;
  EXPECT_NE(line.find(" x 1 thread: "), std::string::npos) << line;
  EXPECT_NE(line.find(" -> "), std::string::npos) << line;
  EXPECT_NE(out.out.find("est_time probed in "), std::string::npos) << out.out;
}

// Beyond two cores the layouts in between are measured too: on 4 cores, 1 run x 4 threads,
// 2 x 2 and 4 x 1 (here on fewer real cores: the figures are what they are, the layouts and
// the choice among them are what is checked).
TEST(ThroughputProbeE2ETest, AutoLayoutMeasuresEveryEvenSplitOfTheCores) {
  sweep::Plan plan = TinyPlan();
  sweep::Resources res;
  sweep::ProbeOptions o;
  o.train_binary = Binary("isoflop-train");
  o.scratch_dir = TempDir("probe_layouts");
  o.cores = 4;
  o.max_shapes = 1;
  Result<sweep::ProbeReport> r = sweep::ProbePlan(&plan, &res, /*choose_layout=*/true, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->layout_figures.size(), 3u);
  const std::vector<std::pair<int, int>> want = {{1, 4}, {2, 2}, {4, 1}};  // (runs, threads)
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(r->layout_figures[i].runs, want[i].first);
    EXPECT_EQ(r->layout_figures[i].threads_per_run, want[i].second);
    EXPECT_GT(r->layout_figures[i].tokens_per_s, 0);
  }
  ASSERT_TRUE(r->layout.has_value());
  // The plan adopts the chosen layout.
  EXPECT_EQ(res.cpu_slots, r->layout->slots);
  EXPECT_EQ(res.threads_per_run, r->layout->threads_per_run);
  EXPECT_EQ(res.cpu_slots * res.threads_per_run, 4);
  EXPECT_TRUE(fs::is_empty(o.scratch_dir));
}

}  // namespace
}  // namespace isoflop
