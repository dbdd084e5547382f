// The throughput probe's pure parts: the CPU layout decision from injected measurements, tokens/s
// from metrics.jsonl text, and interpolation in log N. The probe through the real isoflop-train
// is in sweep_e2e_test (throughput_probe_e2e_test.cc).
#include "isoflop/sweep/throughput_probe.h"

#include <gtest/gtest.h>

#include <cmath>

namespace isoflop::sweep {
namespace {

TEST(ChooseCpuLayoutTest, PicksTheFasterLayoutFromMeasurements) {
  struct Case {
    const char* label;
    std::vector<LayoutFigure> figures;
    int cells;
    int want_threads, want_slots;
  };
  const std::vector<Case> cases = {
      // Tiny models on 2 cores: thread synchronisation costs more than it gains.
      {"two one-thread runs faster", {{2, 1, 180e3}, {1, 2, 400e3}}, 15, 1, 2},
      // Larger models: one run on both cores wins (memory bandwidth shared by two runs).
      {"all cores faster", {{2, 1, 300e3}, {1, 2, 250e3}}, 15, 2, 1},
      // Within 5%: keep one run (less memory, each cell finishes sooner).
      {"a tie keeps one run", {{2, 1, 300e3}, {1, 2, 310e3}}, 15, 2, 1},
      // One cell cannot use two slots: half the aggregate counts.
      {"one cell", {{2, 1, 180e3}, {1, 2, 300e3}}, 1, 2, 1},
      {"one cell, still faster", {{2, 1, 100e3}, {1, 2, 300e3}}, 1, 1, 2},
      // More layouts: the best effective one wins.
      {"eight cores", {{8, 1, 100e3}, {2, 4, 250e3}, {1, 8, 220e3}}, 40, 2, 4},
      {"baseline only", {{2, 1, 100e3}}, 10, 2, 1},
      {"failed baseline measurement", {{2, 1, 0}, {1, 2, 100e3}}, 10, 1, 2},
  };
  for (const Case& c : cases) {
    CpuLayout l = ChooseCpuLayout(c.figures, c.cells);
    EXPECT_EQ(l.threads_per_run, c.want_threads) << c.label;
    EXPECT_EQ(l.slots, c.want_slots) << c.label;
    EXPECT_FALSE(l.explanation.empty()) << c.label;
  }
}

TEST(ChooseCpuLayoutTest, ExplanationGivesTheFiguresAndTheDecision) {
  CpuLayout l = ChooseCpuLayout({{2, 1, 180.9e3}, {1, 2, 400.4e3}}, 15);
  EXPECT_NEAR(l.speedup, 400.4 / 180.9, 1e-9);
  EXPECT_EQ(l.explanation,
            "1 run x 2 threads: 180.9k tok/s; 2 runs x 1 thread: 400.4k tok/s in all -> 2 runs x "
            "1 thread (2.21x the throughput of 1 run x 2 threads)");
  CpuLayout keep = ChooseCpuLayout({{2, 1, 300e3}, {1, 2, 250e3}}, 15);
  EXPECT_DOUBLE_EQ(keep.speedup, 1.0);
  EXPECT_NE(keep.explanation.find("-> 1 run x 2 threads (the others are not faster by more "
                                  "than 5%)"),
            std::string::npos)
      << keep.explanation;
}

TEST(TokensPerSecondFromMetricsTest, SkipsWarmupAndEvaluationLines) {
  // Steps 5 and 10 are warm-up; 15 and 20 count (1024 tokens/step); 25 has an evaluation.
  const std::string text =
      R"({"step":5,"tokens":5120,"flops":1,"tokens_per_s":100.0,"val_loss":null})"
      "\n"
      R"({"step":10,"tokens":10240,"flops":1,"tokens_per_s":200.0,"val_loss":null})"
      "\n"
      R"({"step":15,"tokens":15360,"flops":1,"tokens_per_s":1000.0,"val_loss":null})"
      "\n"
      R"({"step":20,"tokens":20480,"flops":1,"tokens_per_s":4000.0,"val_loss":null})"
      "\n"
      R"({"step":25,"tokens":25600,"flops":1,"tokens_per_s":10.0,"val_loss":2.5})"
      "\n"
      R"({"step":30,"tokens":3)";  // torn last line
  int64_t measured = 0;
  Result<double> r = TokensPerSecondFromMetrics(text, 10, &measured);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(measured, 10240);
  // 10240 tokens in 5120/1000 + 5120/4000 seconds.
  EXPECT_NEAR(*r, 10240.0 / (5.12 + 1.28), 1e-9);

  Result<double> none = TokensPerSecondFromMetrics(text, 25, &measured);
  EXPECT_EQ(none.status().code(), Status::Code::kNotFound);
  EXPECT_EQ(TokensPerSecondFromMetrics("", 0).status().code(), Status::Code::kNotFound);
}

TEST(InterpolateTokensPerSecondTest, LinearInLogNAndLogRate) {
  const std::vector<std::pair<double, double>> pts = {{1e4, 400e3}, {1e5, 100e3}, {1e6, 20e3}};
  EXPECT_NEAR(InterpolateTokensPerSecond(pts, 1e4), 400e3, 1e-6);
  EXPECT_NEAR(InterpolateTokensPerSecond(pts, 1e5), 100e3, 1e-6);
  // Halfway in log N between 1e4 and 1e5: the geometric mean of the rates.
  EXPECT_NEAR(InterpolateTokensPerSecond(pts, std::sqrt(1e4 * 1e5)), 200e3, 1e-6);
  EXPECT_NEAR(InterpolateTokensPerSecond(pts, std::sqrt(1e5 * 1e6)), std::sqrt(100e3 * 20e3), 1e-6);
  // Outside: along the end segment (a factor 4 per decade, as between 1e4 and 1e5).
  EXPECT_NEAR(InterpolateTokensPerSecond(pts, 1e3), 1600e3, 1e-3);
  // Order does not matter; one point keeps FLOP/s (tokens/s x N) constant.
  EXPECT_NEAR(InterpolateTokensPerSecond({{1e5, 100e3}, {1e4, 400e3}}, 3e4),
              InterpolateTokensPerSecond(pts, 3e4), 1e-6);
  EXPECT_NEAR(InterpolateTokensPerSecond({{1e4, 400e3}}, 4e4), 100e3, 1e-6);
}

TEST(ProbeOptionsTest, ValidateNamesTheField) {
  ProbeOptions o;
  EXPECT_EQ(o.Validate().code(), Status::Code::kInvalidArgument);  // no binary
  o.train_binary = "/bin/true";
  EXPECT_TRUE(o.Validate().ok());
  o.max_steps = 1;
  EXPECT_EQ(o.Validate().message(), "probe option max_steps: must be >= min_steps");
}

}  // namespace
}  // namespace isoflop::sweep
