// The worker's files as one definition: what the trainer writes is what ingestion reads (round
// trips), non-finite numbers become null, and exit codes map to their failure classes.
#include "isoflop/trainer/run_protocol.h"

#include <gtest/gtest.h>

#include <cmath>

namespace isoflop::trainer {
namespace {

TEST(RunProtocolTest, StatusFileRoundTripsAndRejectsUnknownStates) {
  StatusFile s;
  s.state = "preempted";
  s.reason = "signal 15 (Terminated); resumable from step 40";
  s.step = 40;
  s.tokens = 10240;
  s.final_val_loss = NAN;  // no evaluation yet: written as null
  s.exit_code = 143;
  s.wall_s = 2.5;
  s.peak_memory_bytes = 300 << 20;
  s.peak_memory_of = "host_rss";
  s.peak_memory_by_rank = {280 << 20, 300 << 20};
  s.peak_host_memory_bytes = int64_t{5} << 32;  // past 32 bits
  const std::string text = s.ToJson();
  EXPECT_NE(text.find("\"final_val_loss\":null"), std::string::npos) << text;
  Result<StatusFile> back = StatusFile::Parse(text);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->state, "preempted");
  EXPECT_EQ(back->reason, s.reason);
  EXPECT_EQ(back->step, 40);
  EXPECT_EQ(back->tokens, 10240);
  EXPECT_FALSE(back->final_val_loss.has_value());
  EXPECT_EQ(back->exit_code, 143);
  EXPECT_DOUBLE_EQ(*back->wall_s, 2.5);
  EXPECT_EQ(back->peak_memory_bytes, 300 << 20);
  EXPECT_EQ(back->peak_memory_of, "host_rss");
  EXPECT_EQ(back->peak_memory_by_rank, (std::vector<int64_t>{280 << 20, 300 << 20}));
  EXPECT_EQ(back->peak_host_memory_bytes, int64_t{5} << 32);
  for (const char* bad : {R"({"state": "finished", "peak_memory_by_rank": [1, -2]})",
                          R"({"state": "finished", "peak_memory_by_rank": [1.5]})"}) {
    Result<StatusFile> b = StatusFile::Parse(bad);
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_NE(b.status().message().find("peak_memory_by_rank"), std::string::npos);
  }
  for (const char* bad : {"", "[]", R"({"state": "running"})", R"({"reason": "x"})", "{"}) {
    EXPECT_FALSE(StatusFile::Parse(bad).ok()) << bad;
  }
  // A run that failed before its first step knows no progress.
  StatusFile early;
  early.state = "failed";
  early.exit_code = kExitOutOfMemory;
  Result<StatusFile> e = StatusFile::Parse(early.ToJson());
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE(e->step.has_value());
  EXPECT_FALSE(e->tokens.has_value());
  EXPECT_FALSE(e->peak_memory_bytes.has_value());
  EXPECT_FALSE(e->peak_host_memory_bytes.has_value());
  EXPECT_TRUE(e->peak_memory_by_rank.empty());
  EXPECT_EQ(early.ToJson().find("peak_memory"), std::string::npos);
}

TEST(RunProtocolTest, MetricsLineRoundTrips) {
  MetricsLine m;
  m.step = 7;
  m.tokens = 1792;
  m.flops = 1.5e9;
  m.train_loss = 3.25;
  m.lr = 1e-3;
  m.grad_norm = INFINITY;
  m.tokens_per_s = 8000;
  m.wall_s = 0.25;
  m.extra = {{"router_z_loss", 0.125}};
  const std::string line = m.ToJson();
  EXPECT_EQ(line.find('\n'), std::string::npos);
  Result<MetricsLine> back = MetricsLine::Parse(line);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->step, 7);
  EXPECT_EQ(back->tokens, 1792);
  EXPECT_DOUBLE_EQ(back->flops, 1.5e9);
  EXPECT_DOUBLE_EQ(*back->train_loss, 3.25);
  EXPECT_FALSE(back->val_loss.has_value());
  EXPECT_FALSE(back->grad_norm.has_value());
  ASSERT_EQ(back->extra.size(), 1u);
  EXPECT_EQ(back->extra[0].first, "router_z_loss");
  EXPECT_FALSE(MetricsLine::Parse(R"({"step": 1.5})").ok());
  EXPECT_FALSE(MetricsLine::Parse("not json").ok());
}

// A loss below zero or a negative count is damage to the file: refused, named, never ingested.
TEST(RunProtocolTest, NegativeLossesAndCountsAreCorrupt) {
  const std::vector<std::pair<std::string, std::string>> metrics = {
      {R"({"step": 3, "tokens": 96, "train_loss": -0.5})",
       "\"train_loss\": expected a value >= 0, got -0.5"},
      {R"({"step": 3, "tokens": 96, "val_loss": -2})",
       "\"val_loss\": expected a value >= 0, got -2"},
      {R"({"step": -3, "tokens": 96})", "\"step\": expected a value >= 0, got -3"},
      {R"({"step": 3, "tokens": -96})", "\"tokens\": expected a value >= 0, got -96"}};
  for (const auto& [line, said] : metrics) {
    Result<MetricsLine> m = MetricsLine::Parse(line);
    ASSERT_FALSE(m.ok()) << line;
    EXPECT_EQ(m.status().code(), Status::Code::kCorrupt);
    EXPECT_EQ(m.status().message(), said);
  }
  EXPECT_TRUE(MetricsLine::Parse(R"({"step": 0, "tokens": 0, "train_loss": 0})").ok());
  Result<StatusFile> s = StatusFile::Parse(R"({"state": "finished", "final_val_loss": -1.25})");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "\"final_val_loss\": expected a value >= 0, got -1.25");
  EXPECT_FALSE(StatusFile::Parse(R"({"state": "preempted", "step": -1})").ok());
  EXPECT_TRUE(StatusFile::Parse(R"({"state": "diverged", "final_val_loss": null})").ok());
}

// The one walk over metrics.jsonl text: complete non-blank lines in order, each parsed, with
// its line number (blank lines counted) and byte span; a torn last line is never handed over;
// the return is the byte after the last line passed, so a reader that stops resumes there.
TEST(RunProtocolTest, ForEachMetricsLineHandsOverCompleteLinesWithWhereTheyAre) {
  const std::string a = R"({"step": 1, "tokens": 32})";
  const std::string bad = "{\"step\": 2, \"tok";
  const std::string c = R"({"step": 3, "tokens": 96})";
  const std::string text = a + "\n\n" + bad + "\n" + c + "\n" + R"({"step": 4, "to)";
  struct Seen {
    int64_t line_no, offset, end;
    std::string text;
    bool ok;
    int64_t step;
  };
  std::vector<Seen> seen;
  const int64_t passed = ForEachMetricsLine(text, [&](MetricsLineAt& line) {
    seen.push_back({line.line_no, line.offset, line.end, line.text, line.parsed.ok(),
                    line.parsed.ok() ? line.parsed->step : -1});
    return true;
  });
  ASSERT_EQ(seen.size(), 3u);
  const int64_t a_end = static_cast<int64_t>(a.size()) + 1;
  const int64_t bad_at = a_end + 1, c_at = bad_at + static_cast<int64_t>(bad.size()) + 1;
  EXPECT_EQ(seen[0].line_no, 1);
  EXPECT_EQ(seen[0].offset, 0);
  EXPECT_EQ(seen[0].end, a_end);
  EXPECT_EQ(seen[0].text, a);
  EXPECT_TRUE(seen[0].ok);
  EXPECT_EQ(seen[0].step, 1);
  EXPECT_EQ(seen[1].line_no, 3);
  EXPECT_EQ(seen[1].offset, bad_at);
  EXPECT_FALSE(seen[1].ok);
  EXPECT_EQ(seen[2].line_no, 4);
  EXPECT_EQ(seen[2].offset, c_at);
  EXPECT_EQ(seen[2].step, 3);
  const int64_t c_end = c_at + static_cast<int64_t>(c.size()) + 1;
  EXPECT_EQ(seen[2].end, c_end);
  EXPECT_EQ(passed, c_end) << "the torn last line is not passed";
  EXPECT_EQ(text.substr(passed), R"({"step": 4, "to)");
  // Stopping at a line leaves it unpassed: the return is where it starts.
  int visits = 0;
  EXPECT_EQ(ForEachMetricsLine(text,
                               [&](MetricsLineAt& line) {
                                 ++visits;
                                 return line.parsed.ok();
                               }),
            bad_at);
  EXPECT_EQ(visits, 2);
  EXPECT_EQ(ForEachMetricsLine("", [](MetricsLineAt&) { return true; }), 0);
}

TEST(RunProtocolTest, InfoFileRoundTrips) {
  InfoFile i;
  i.n_total = 12345;
  i.n_non_embedding = 10000;
  i.flops_per_token_6n = 6 * 12345.0;
  i.device = "cpu";
  i.precision = "fp32";
  i.threads = 2;
  i.data_entropy_nats = 1.6962;
  Result<InfoFile> back = InfoFile::Parse(i.ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->n_total, 12345);
  EXPECT_EQ(back->threads, 2);
  EXPECT_DOUBLE_EQ(*back->data_entropy_nats, 1.6962);
  EXPECT_FALSE(back->n_active.has_value());  // an older trainer's file: absent, not 0
  i.n_active = 5000;
  i.n_active_non_embedding = 4000;
  back = InfoFile::Parse(i.ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->n_active, 5000);
  EXPECT_EQ(back->n_active_non_embedding, 4000);
  EXPECT_FALSE(InfoFile::Parse("[1]").ok());
}

TEST(RunProtocolTest, ExitCodesMapToClasses) {
  const struct {
    int code;
    const char* name;
  } cases[] = {
      {0, "finished"},  {1, "failed"},        {2, "bad config"},       {3, "diverged"},
      {4, "busy"},      {5, "out of memory"}, {128 + 15, "preempted"}, {128 + 12, "preempted"},
      {127, "crashed"}, {6, "crashed"},       {255, "crashed"}};
  for (const auto& c : cases) EXPECT_STREQ(ExitClassName(ClassOfExit(c.code)), c.name) << c.code;
}

}  // namespace
}  // namespace isoflop::trainer
