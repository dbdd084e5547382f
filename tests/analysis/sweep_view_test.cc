// The dashboard's views of a real store file: thinning keeps a curve's first and last rows
// within the point budget (table-driven), cells carry progress, tokens/s and ETA from the
// latest metric row, unknown sweeps and runs are NotFound, and `optimal` answers from the
// newest parametric fit exactly as the fit library does.
#include "isoflop/analysis/sweep_view.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "isoflop/analysis/dataset.h"
#include "isoflop/fit/run_fit.h"

namespace isoflop::analysis {
namespace {

namespace fs = std::filesystem;

std::vector<store::MetricRow> Rows(int n, int val_every) {
  std::vector<store::MetricRow> rows;
  for (int s = 1; s <= n; ++s) {
    store::MetricRow m;
    m.step = s;
    m.tokens = 256LL * s;
    m.flops = 6e4 * m.tokens;
    m.train_loss = 3.0 / std::sqrt(double(s));
    if (val_every > 0 && s % val_every == 0) m.val_loss = 3.1 / std::sqrt(double(s));
    m.tokens_per_s = 500.0;
    rows.push_back(m);
  }
  return rows;
}

TEST(SweepViewTest, DownsampleKeepsFirstAndLastWithinTheBudget) {
  struct Case {
    int rows, val_every, max_points;
    size_t want_points, want_val;
  };
  const Case cases[] = {
      {0, 0, 10, 0, 0},          // no rows: empty series
      {1, 1, 2, 1, 1},           // one row
      {5, 0, 10, 5, 0},          // under the budget: every row
      {10, 0, 10, 10, 0},        // exactly the budget
      {11, 0, 10, 6, 0},         // k = 2: steps 1,3,..,11, the last among them
      {1000, 10, 100, 92, 100},  // k = 11: 91 strided + the last; the 100 validation rows fit
      {1001, 50, 400, 335, 20}   // k = 3: 334 strided + the last; all 20 validation rows
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " max " + std::to_string(c.max_points));
    const auto rows = Rows(c.rows, c.val_every);
    Result<RunSeries> s = DownsampleMetrics(9, rows, c.max_points);
    ASSERT_TRUE(s.ok()) << s.status().message();
    EXPECT_EQ(s->rows, c.rows);
    EXPECT_LE(s->step.size(), size_t(c.max_points));
    EXPECT_EQ(s->step.size(), c.want_points);
    EXPECT_EQ(s->val_loss.size(), c.want_val);
    if (c.rows > 0) {
      EXPECT_EQ(s->step.front(), 1);
      EXPECT_EQ(s->step.back(), c.rows);
      EXPECT_EQ(s->tokens.back(), 256LL * c.rows);
      EXPECT_DOUBLE_EQ(*s->train_loss.back(), 3.0 / std::sqrt(double(c.rows)));
      EXPECT_TRUE(std::is_sorted(s->step.begin(), s->step.end()));
    }
  }
  EXPECT_EQ(DownsampleMetrics(1, Rows(3, 0), 1).status().code(), Status::Code::kInvalidArgument);
}

class SweepViewStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("isoflop_sweep_view_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    db_ = std::move(store::Store::Open((dir_ / "s.db").string()).value());
  }
  void TearDown() override { fs::remove_all(dir_); }

  store::RunRecord Run(int64_t sweep_id, const std::string& key, const std::string& status,
                       double budget, int64_t n, int64_t target, int64_t done) {
    store::RunRecord r;
    r.sweep_id = sweep_id;
    r.cell_key = key;
    r.status = status;
    r.n_layer = 1;
    r.d_model = 16;
    r.n_head = 2;
    r.n_total = n;
    r.budget_flops = budget;
    r.target_tokens = target;
    r.tokens_done = done;
    r.reason = status == "failed" ? "out of memory" : "";
    return r;
  }

  fs::path dir_;
  std::unique_ptr<store::Store> db_;
};

TEST_F(SweepViewStoreTest, CellsCarryProgressRateAndEtaSortedByBudgetThenN) {
  const int64_t sweep = *db_->UpsertSweep({0, "s", "s.yaml", "", "", "running", "", ""});
  const int64_t running = *db_->UpsertRun(Run(sweep, "b", "running", 2e9, 300, 10000, 2500));
  ASSERT_TRUE(db_->UpsertRun(Run(sweep, "a", "finished", 2e9, 100, 8000, 8000)).ok());
  ASSERT_TRUE(db_->UpsertRun(Run(sweep, "c", "failed", 1e9, 500, 4000, 0)).ok());
  store::MetricRow m;
  m.step = 10;
  m.tokens = 2500;
  m.flops = 1;
  m.train_loss = 2.5;
  m.tokens_per_s = 250;
  ASSERT_TRUE(db_->UpsertMetrics(running, {m}).ok());
  // The finished run's last row holds its final evaluation (a slow interval): the cell shows
  // its mean rate, tokens over its training time, instead.
  store::MetricRow last;
  last.step = 20;
  last.tokens = 8000;
  last.flops = 1;
  last.tokens_per_s = 40;
  last.wall_s = 16;
  int64_t finished = 0;
  const Result<std::vector<store::RunRecord>> all = db_->ListRuns();
  ASSERT_TRUE(all.ok());
  for (const auto& run : *all)
    if (run.cell_key == "a") finished = run.id;
  ASSERT_TRUE(db_->UpsertMetrics(finished, {last}).ok());

  Result<std::vector<CellView>> cells = SweepCells(*db_, "s");
  ASSERT_TRUE(cells.ok()) << cells.status().message();
  ASSERT_EQ(cells->size(), 3u);
  EXPECT_EQ((*cells)[0].run.cell_key, "c");  // budget 1e9 first
  EXPECT_EQ((*cells)[1].run.cell_key, "a");  // then N 100 before N 300
  EXPECT_EQ((*cells)[2].run.cell_key, "b");
  const CellView& r = (*cells)[2];
  EXPECT_DOUBLE_EQ(r.progress, 0.25);
  EXPECT_EQ(r.tokens_per_s, 250.0);
  ASSERT_TRUE(r.eta_s.has_value());
  EXPECT_DOUBLE_EQ(*r.eta_s, 7500.0 / 250.0);
  EXPECT_EQ(r.shape, "1x16h2");
  EXPECT_FALSE((*cells)[1].eta_s.has_value());  // finished: no ETA
  EXPECT_EQ((*cells)[1].tokens_per_s, 8000.0 / 16);
  EXPECT_EQ((*cells)[0].ToJson()["reason"], "out of memory");

  Result<std::vector<SweepSummary>> sums = ListSweepSummaries(*db_);
  ASSERT_TRUE(sums.ok());
  ASSERT_EQ(sums->size(), 1u);
  EXPECT_EQ((*sums)[0].cells, 3);
  EXPECT_EQ((*sums)[0].by_status.at("running"), 1);
  EXPECT_EQ((*sums)[0].tokens_done, 10500);
  EXPECT_EQ((*sums)[0].tokens_total, 22000);

  EXPECT_EQ(SweepCells(*db_, "nope").status().code(), Status::Code::kNotFound);
  EXPECT_EQ(LoadRunSeries(*db_, 12345, 100).status().code(), Status::Code::kNotFound);
  Result<RunSeries> series = LoadRunSeries(*db_, running, 100);
  ASSERT_TRUE(series.ok());
  EXPECT_EQ(series->step, std::vector<int64_t>{10});
}

// C is 6·N·D with N as the fit counts it, so the isoFLOP minima and the envelope are in the
// law's units: with non-embedding N, the trainer's 6·N_total·D is rescaled, curves included.
TEST_F(SweepViewStoreTest, DatasetCountsComputeInTheFitsOwnConvention) {
  const int64_t sweep = *db_->UpsertSweep({0, "s", "s.yaml", "", "", "finished", "", ""});
  for (int i = 0; i < 2; ++i) {
    store::RunRecord r =
        Run(sweep, "k" + std::to_string(i), "finished", 6e9, 1000 * (i + 1), 8000, 8000);
    r.n_non_embedding = 400 * (i + 1);
    r.n_active = r.n_total;
    r.flops_per_token_6n = 6.0 * double(r.n_total);
    r.final_val_loss = 2.0 - 0.1 * i;
    const int64_t id = *db_->UpsertRun(r);
    store::MetricRow m;
    m.step = 1;
    m.tokens = 4000;
    m.flops = 4000 * r.flops_per_token_6n;
    m.train_loss = 2.5;
    ASSERT_TRUE(db_->UpsertMetrics(id, {m}).ok());
  }
  for (const char* convention : {"total", "non_embedding"}) {
    LoadOptions lo;
    lo.convention = convention;
    Result<Dataset> d = LoadDataset(db_.get(), Source{Source::Kind::kSweep, "s", {}}, lo);
    ASSERT_TRUE(d.ok()) << d.status().message();
    ASSERT_EQ(d->obs.size(), 2u);
    ASSERT_EQ(d->curves.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      const double n = std::string(convention) == "total" ? 1000.0 * (i + 1) : 400.0 * (i + 1);
      EXPECT_DOUBLE_EQ(d->obs[i].n, n) << convention;
      EXPECT_DOUBLE_EQ(d->obs[i].c, 6 * n * 8000) << convention;
      EXPECT_DOUBLE_EQ(d->points[i].c, 6 * n * 8000) << convention;
      EXPECT_DOUBLE_EQ(d->curves[i].points.at(0).first, 6 * n * 4000) << convention;
    }
  }
}

TEST_F(SweepViewStoreTest, OptimalAtAnswersFromTheNewestParametricFit) {
  EXPECT_EQ(OptimalAt(*db_, "observations", "g", 1e21).status().code(), Status::Code::kNotFound);
  // 64 points of a known law with 1% noise (seed written down), imported as a set and fitted.
  std::vector<store::Observation> pts;
  std::vector<fit::Observation> obs;
  std::mt19937_64 rng(20261202);
  std::normal_distribution<double> z(0, 1);
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 8; ++j) {
      fit::Observation o;
      o.n = std::pow(10.0, 7 + 3.0 * i / 7);
      o.d = std::pow(10.0, 8 + 3.0 * j / 7);
      o.loss =
          (1.8 + 400 / std::pow(o.n, 0.34) + 2000 / std::pow(o.d, 0.37)) * std::exp(0.01 * z(rng));
      o.c = 6 * o.n * o.d;
      obs.push_back(o);
      pts.push_back({o.n, o.d, o.c, o.loss, 0, std::nullopt, std::nullopt});
    }
  }
  ASSERT_TRUE(db_->ImportObservations("g", "gen", pts, false).ok());
  fit::FitConfig cfg;
  cfg.bootstrap.resamples = 20;
  Result<fit::FitRecord> rec = fit::RunFit(obs, {}, cfg);
  ASSERT_TRUE(rec.ok()) << rec.status().message();
  Source src;
  src.kind = Source::Kind::kObservations;
  src.name = "g";
  Result<int64_t> id = StoreFit(*db_, src, *rec, nlohmann::json::object());
  ASSERT_TRUE(id.ok()) << id.status().message();

  Result<OptimalView> v = OptimalAt(*db_, "observations", "g", 1e21);
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(v->fit_id, *id);
  Result<fit::RecordLaw> law = fit::LawFromRecord(*rec);
  ASSERT_TRUE(law.ok());
  Result<fit::Answer> want =
      fit::AnswerQuery(law->law, {fit::Query::Kind::kCompute, 1e21, 0}, law->draws, law->ci_level);
  ASSERT_TRUE(want.ok());
  EXPECT_DOUBLE_EQ(v->answer.point.n, want->point.n);
  EXPECT_DOUBLE_EQ(v->answer.point.d, want->point.d);
  EXPECT_NEAR(6 * v->answer.point.n * v->answer.point.d / 1e21, 1.0, 1e-9);
  EXPECT_TRUE(v->ToJson()["ci"].contains("n"));
  for (double bad : {0.0, -1.0, double(NAN), double(INFINITY)}) {
    EXPECT_EQ(OptimalAt(*db_, "observations", "g", bad).status().code(),
              Status::Code::kInvalidArgument);
  }
}

}  // namespace
}  // namespace isoflop::analysis
