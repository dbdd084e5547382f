// Data sources: each file format round-trips through the mmap readers, each bad file gets an
// error naming the file and the problem, and the synthetic language's exact entropy rate
// agrees with a Monte-Carlo estimate.
#include "isoflop/trainer/data.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>

#include "isoflop/trainer/synthetic.h"

namespace isoflop::trainer {
namespace {

namespace fs = std::filesystem;

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("isoflop_data_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Every window of a source must be a contiguous run of the written sequence 0,1,2,...
  // (mod `mod`): checks offsets, widths and endianness at once.
  static void ExpectContiguous(TokenSource& src, bool val, int len, int64_t mod) {
    Rng rng(3);
    std::vector<int64_t> w(len);
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(
          (val ? src.SampleVal(rng, len, w.data()) : src.SampleTrain(rng, len, w.data())).ok());
      for (int t = 1; t < len; ++t) ASSERT_EQ(w[t], (w[t - 1] + 1) % mod);
    }
  }

  fs::path dir_;
};

TEST_F(DataTest, BinRoundTrip) {
  std::vector<uint16_t> train(5000), val(700);
  for (size_t i = 0; i < train.size(); ++i) train[i] = static_cast<uint16_t>(i % 50000);
  for (size_t i = 0; i < val.size(); ++i) val[i] = static_cast<uint16_t>((i + 300) % 50000);
  ASSERT_TRUE(WriteBinTokens(Path("train.bin"), train).ok());
  ASSERT_TRUE(WriteBinTokens(Path("val.bin"), val).ok());
  DataConfig c;
  c.source = DataSource::kBin;
  c.train_bin = Path("train.bin");
  c.val_bin = Path("val.bin");
  auto src = OpenTokenSource(c, 65, 50000);
  ASSERT_TRUE(src.ok()) << src.status().message();
  ExpectContiguous(**src, false, 65, 50000);
  ExpectContiguous(**src, true, 65, 50000);
}

TEST_F(DataTest, LlmcRoundTripBothVersions) {
  for (int version : {1, 7}) {
    const uint32_t big = version == 1 ? 60000 : 100000;  // v7 needs uint32
    std::vector<uint32_t> tokens(3000);
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = static_cast<uint32_t>((big - 1500 + i) % big);
    ASSERT_TRUE(WriteLlmcShard(Path("t.bin"), tokens, version).ok());
    ASSERT_TRUE(WriteLlmcShard(Path("v.bin"), tokens, version).ok());
    DataConfig c;
    c.source = DataSource::kLlmc;
    c.train_shards = {Path("t.bin")};
    c.val_shards = {Path("v.bin")};
    auto src = OpenTokenSource(c, 33, big);
    ASSERT_TRUE(src.ok()) << src.status().message();
    ExpectContiguous(**src, false, 33, big);
    ExpectContiguous(**src, true, 33, big);
  }
}

TEST_F(DataTest, TextSplitsTailForValidation) {
  std::string text(1000, 'a');
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>(i % 256);
  std::ofstream(Path("a.txt"), std::ios::binary) << text;
  DataConfig c;
  c.source = DataSource::kText;
  c.paths = {Path("a.txt")};
  c.val_fraction = 0.2;
  auto src = OpenTokenSource(c, 17, 256);
  ASSERT_TRUE(src.ok()) << src.status().message();
  ExpectContiguous(**src, false, 17, 256);
  Rng rng(1);
  std::vector<int64_t> w(17);
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE((*src)->SampleTrain(rng, 17, w.data()).ok());
    EXPECT_LT((w[0] + 16) % 256 + 0, 256);
    ASSERT_TRUE((*src)->SampleVal(rng, 17, w.data()).ok());
    // Validation windows come from the last 200 bytes: positions 800..999 -> values 32..231.
    EXPECT_GE(w[0], (800 % 256));
  }
}

struct BadFile {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* expect;
};

std::vector<uint8_t> Header(int32_t magic, int32_t version, int32_t count) {
  std::vector<uint8_t> b(1024, 0);
  auto put = [&](int i, int32_t v) {
    for (int k = 0; k < 4; ++k) b[4 * i + k] = static_cast<uint8_t>(uint32_t(v) >> (8 * k));
  };
  put(0, magic);
  put(1, version);
  put(2, count);
  return b;
}

TEST_F(DataTest, BadLlmcShardsNameFileAndProblem) {
  auto truncated = Header(kLlmcMagicV1, 1, 1000);
  truncated.resize(1024 + 900);
  auto wrong_width = Header(kLlmcMagicV7, 7, 100);
  wrong_width.resize(1024 + 200);  // uint16 payload under a uint32 header
  const std::vector<BadFile> cases = {
      {"short.bin", std::vector<uint8_t>(100, 0), "shorter than the 1024-byte"},
      {"magic.bin", Header(12345, 1, 0), "bad magic 12345"},
      {"version.bin", Header(kLlmcMagicV1, 7, 0), "expects version 1"},
      {"truncated.bin", truncated, "header says 1000 tokens"},
      {"width.bin", wrong_width, "header says 100 tokens"},
  };
  std::vector<uint32_t> good(500, 1);
  ASSERT_TRUE(WriteLlmcShard(Path("good.bin"), good, 1).ok());
  for (const BadFile& bad : cases) {
    std::ofstream(Path(bad.name), std::ios::binary)
        .write(reinterpret_cast<const char*>(bad.bytes.data()), bad.bytes.size());
    DataConfig c;
    c.source = DataSource::kLlmc;
    c.train_shards = {Path("good.bin"), Path(bad.name)};
    c.val_shards = {Path("good.bin")};
    auto src = OpenTokenSource(c, 33, 1000);
    ASSERT_FALSE(src.ok()) << bad.name;
    EXPECT_NE(src.status().message().find(bad.name), std::string::npos) << src.status().message();
    EXPECT_NE(src.status().message().find(bad.expect), std::string::npos) << src.status().message();
  }
}

TEST_F(DataTest, BadBinFiles) {
  std::ofstream(Path("odd.bin"), std::ios::binary) << "abc";
  ASSERT_TRUE(WriteBinTokens(Path("tiny.bin"), {1, 2, 3}).ok());
  ASSERT_TRUE(WriteBinTokens(Path("big.bin"), std::vector<uint16_t>(100, 40000)).ok());
  ASSERT_TRUE(WriteBinTokens(Path("ok.bin"), std::vector<uint16_t>(100, 1)).ok());
  DataConfig c;
  c.source = DataSource::kBin;
  c.val_bin = Path("ok.bin");

  c.train_bin = Path("missing.bin");
  auto r = OpenTokenSource(c, 33, 50304);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("missing.bin: cannot open"), std::string::npos);

  c.train_bin = Path("odd.bin");
  r = OpenTokenSource(c, 33, 50304);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("odd.bin: size 3 is odd"), std::string::npos);

  c.train_bin = Path("tiny.bin");
  r = OpenTokenSource(c, 33, 50304);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no window of 33 tokens"), std::string::npos);

  c.train_bin = Path("big.bin");
  r = OpenTokenSource(c, 33, 32000);  // token 40000 >= vocab
  ASSERT_TRUE(r.ok());
  Rng rng(0);
  std::vector<int64_t> w(33);
  const Status st = (*r)->SampleTrain(rng, 33, w.data());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("big.bin: token id 40000"), std::string::npos) << st.message();
}

// The manager's pre-launch scan: the largest id and the first index holding it, across the
// 64 MiB chunks it reads (a larger maximum in a later chunk wins, an equal one does not), with
// progress after each chunk; headers and bad sizes as OpenTokenSource reports them.
TEST_F(DataTest, SummarizeFindsTheLargestIdFirstWhereItIs) {
  const int64_t n = (int64_t{40} << 20);  // 80 MiB of uint16: two chunks
  std::vector<uint16_t> t(n, 5);
  t[1000] = 60000;                     // chunk 1's maximum
  t[(int64_t{33} << 20) + 7] = 65535;  // chunk 2: larger, so the file's
  t[(int64_t{39} << 20)] = 65535;      // the same id again: not the first
  ASSERT_TRUE(WriteBinTokens(Path("big.bin"), t).ok());
  std::vector<std::pair<int64_t, int64_t>> calls;
  auto s = SummarizeTokenFile(Path("big.bin"), DataSource::kBin, [&](int64_t done, int64_t total) {
    calls.push_back({done, total});
  });
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->tokens, n);
  EXPECT_EQ(s->max_id, 65535u);
  EXPECT_EQ(s->max_at, (int64_t{33} << 20) + 7);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0], std::make_pair(int64_t{64} << 20, 2 * n));
  EXPECT_EQ(calls[1], std::make_pair(2 * n, 2 * n));

  std::vector<uint32_t> wide(3000, 1);
  wide[2500] = 100000;
  ASSERT_TRUE(WriteLlmcShard(Path("v7.bin"), wide, 7).ok());
  s = SummarizeTokenFile(Path("v7.bin"), DataSource::kLlmc);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->tokens, 3000);
  EXPECT_EQ(s->max_id, 100000u);
  EXPECT_EQ(s->max_at, 2500);  // counted from the first token, not the header
  ASSERT_TRUE(WriteLlmcShard(Path("empty.bin"), {}, 1).ok());
  s = SummarizeTokenFile(Path("empty.bin"), DataSource::kLlmc);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->tokens, 0);
  EXPECT_EQ(s->max_at, -1);

  std::ofstream(Path("odd.bin"), std::ios::binary) << "abc";
  s = SummarizeTokenFile(Path("odd.bin"), DataSource::kBin);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("odd.bin: size 3 is odd"), std::string::npos);
  s = SummarizeTokenFile(Path("odd.bin"), DataSource::kLlmc);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("shorter than the 1024-byte llm.c header"),
            std::string::npos);
}

TEST(Synthetic, DeterministicFromBuildSeed) {
  DataConfig c;
  auto a = SyntheticLanguage::Build(c), b = SyntheticLanguage::Build(c);
  c.build_seed = 1;
  auto other = SyntheticLanguage::Build(c);
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  EXPECT_EQ(a->EntropyRate(), b->EntropyRate());
  EXPECT_NE(a->EntropyRate(), other->EntropyRate());
  Rng r1(9), r2(9);
  std::vector<int64_t> s1(100), s2(100);
  a->Sample(r1, 100, s1.data());
  b->Sample(r2, 100, s2.data());
  EXPECT_EQ(s1, s2);
  // Each P(· | a, b) sums to one.
  for (int x = 0; x < 32; x += 7) {
    for (int y = 0; y < 32; y += 5) {
      double sum = 0;
      for (int z = 0; z < 32; ++z) sum += a->Prob(x, y, z);
      EXPECT_NEAR(sum, 1.0, 1e-12);
    }
  }
}

// Mean -log P(next | two previous) over `windows` sampled windows of 65 tokens (targets with at
// least two tokens of context, as validation scores them), and its standard error.
double MonteCarloEntropy(const SyntheticLanguage& lang, int windows, double* stderr_mean) {
  Rng rng(12345);
  const int len = 65;
  std::vector<int64_t> w(len);
  double sum = 0, sum_sq = 0;
  int64_t n = 0;
  for (int i = 0; i < windows; ++i) {
    lang.Sample(rng, len, w.data());
    for (int t = 2; t < len; ++t) {
      const double nll = -std::log(lang.Prob(int(w[t - 2]), int(w[t - 1]), int(w[t])));
      sum += nll;
      sum_sq += nll * nll;
      ++n;
    }
  }
  const double mean = sum / n;
  *stderr_mean = std::sqrt((sum_sq / n - mean * mean) / n);
  return mean;
}

TEST(Synthetic, EntropyAgreesWithMonteCarlo) {
  DataConfig c;  // V 32, k1 8, k2 3, λ 0.7: the MoE quickstart's language
  auto lang = SyntheticLanguage::Build(c);
  ASSERT_TRUE(lang.ok());
  const double h = lang->EntropyRate();
  EXPECT_GT(h, 1.0);
  EXPECT_LT(h, std::log(32.0));
  // -log P over 2M targets with >= 2 tokens of context, in windows as training draws them.
  double stderr_mean = 0;
  const double mean = MonteCarloEntropy(*lang, 32000, &stderr_mean);
  // Windows are short, so samples are nearly independent; 5 standard errors (~3e-3 nats).
  EXPECT_NEAR(mean, h, 5 * stderr_mean + 1e-4) << "H " << h << " MC " << mean;
}

DataConfig SkillsConfig(int vocab, double s) {
  DataConfig c;
  c.vocab = vocab;
  c.language = SyntheticKind::kSkills;
  c.skill_zipf = s;
  return c;
}

// The entropy rate of any order-2 chain given only by P(c | a, b): the stationary distribution
// over pair states by lazy power iteration, then Σ π H(P(·|a, b)). It knows nothing of chunks,
// skills or the closed form it checks.
double StationaryEntropy(const SyntheticLanguage& lang) {
  const int V = lang.vocab();
  const size_t P = size_t(V) * V;
  std::vector<double> pi(P, 1.0 / P), next(P);
  for (int iter = 0; iter < 20000; ++iter) {
    std::fill(next.begin(), next.end(), 0.0);
    for (size_t ab = 0; ab < P; ++ab) {
      if (pi[ab] == 0) continue;
      for (int c = 0; c < V; ++c) {
        const double p = lang.Prob(static_cast<int>(ab / V), static_cast<int>(ab % V), c);
        if (p > 0) next[(ab % V) * V + c] += pi[ab] * p;
      }
    }
    double diff = 0;
    for (size_t s = 0; s < P; ++s) {
      const double v = 0.5 * (pi[s] + next[s]);
      diff += std::abs(v - pi[s]);
      pi[s] = v;
    }
    if (diff < 1e-14) break;
  }
  // Mass that started on contexts the chain never produces leaves it: renormalise.
  const double total = std::accumulate(pi.begin(), pi.end(), 0.0);
  double h = 0;
  for (size_t ab = 0; ab < P; ++ab) {
    pi[ab] /= total;
    for (int c = 0; c < V; ++c) {
      const double p = lang.Prob(static_cast<int>(ab / V), static_cast<int>(ab % V), c);
      if (p > 0) h -= pi[ab] * p * std::log(p);
    }
  }
  return h;
}

TEST(SkillsLanguage, DeterministicFromBuildSeedAndRowsSumToOne) {
  DataConfig c = SkillsConfig(48, 1.5);
  auto a = SyntheticLanguage::Build(c), b = SyntheticLanguage::Build(c);
  c.build_seed = 1;
  auto other = SyntheticLanguage::Build(c);
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  EXPECT_EQ(a->EntropyRate(), b->EntropyRate());
  Rng r1(9), r2(9), r3(9);
  std::vector<int64_t> s1(300), s2(300), s3(300);
  a->Sample(r1, 300, s1.data());
  b->Sample(r2, 300, s2.data());
  other->Sample(r3, 300, s3.data());
  EXPECT_EQ(s1, s2);
  EXPECT_NE(s1, s3);  // another seed ranks and answers the skills differently
  // Every context the language produces (a sampled pair) has a distribution summing to one.
  for (int t = 2; t < 300; ++t) {
    double sum = 0;
    for (int z = 0; z < 48; ++z) sum += a->Prob(int(s1[t - 2]), int(s1[t - 1]), z);
    ASSERT_NEAR(sum, 1.0, 1e-12) << "context " << s1[t - 2] << " " << s1[t - 1];
    EXPECT_GT(a->Prob(int(s1[t - 2]), int(s1[t - 1]), int(s1[t])), 0.0);
  }
}

// The closed form H = −Σ p log p / 3 against an exact stationary computation that sees only
// P(c | a, b), and against Monte Carlo over windows drawn as training draws them.
TEST(SkillsLanguage, EntropyAgreesWithStationaryChainAndMonteCarlo) {
  for (double s : {1.2, 1.6}) {
    auto lang = SyntheticLanguage::Build(SkillsConfig(48, s));
    ASSERT_TRUE(lang.ok());
    const double h = lang->EntropyRate();
    EXPECT_GT(h, 0.5);
    EXPECT_LT(h, 2 * std::log(16.0) / 3);  // at most log(m²) per three tokens
    EXPECT_NEAR(StationaryEntropy(*lang), h, 1e-9) << "skill_zipf " << s;

    double stderr_mean = 0;
    const double mean = MonteCarloEntropy(*lang, 20000, &stderr_mean);
    EXPECT_NEAR(mean, h, 5 * stderr_mean + 1e-4) << "H " << h << " MC " << mean;
  }
}

// Chunks start at a uniform phase (stationary), and skills come with Zipf frequencies: the most
// frequent skill's answer follows its key about p_1 / P(a) of the time after its a.
TEST(SkillsLanguage, PhasesAreUniformAndSkillsZipfDistributed) {
  const double s = 1.5;
  auto lang = SyntheticLanguage::Build(SkillsConfig(96, s));
  ASSERT_TRUE(lang.ok());
  const int m = 32;
  double zeta = 0;
  for (int r = 1; r <= m * m; ++r) zeta += std::pow(r, -s);
  Rng rng(7);
  std::vector<int64_t> w(64);
  int phase_count[3] = {0, 0, 0};
  std::map<std::pair<int, int>, int> skill_count;
  int chunks = 0;
  for (int i = 0; i < 30000; ++i) {
    lang->Sample(rng, 64, w.data());
    const int first = int(w[0]);
    ++phase_count[first < m ? 0 : first < 2 * m ? 1 : 2];
    for (int t = 0; t + 1 < 64; ++t) {
      if (w[t] < m && w[t + 1] >= m && w[t + 1] < 2 * m) {
        ++skill_count[{int(w[t]), int(w[t + 1])}];
        ++chunks;
      }
    }
  }
  for (int k : phase_count) EXPECT_NEAR(k / 30000.0, 1.0 / 3, 0.015);
  std::vector<int> counts;
  for (const auto& [k, n] : skill_count) counts.push_back(n);
  std::sort(counts.rbegin(), counts.rend());
  ASSERT_GT(counts.size(), 100u);
  // Ranks 1, 10 and 100 hold p_r = r^-s / ζ of the chunks (to sampling error).
  for (int r : {1, 10, 100}) {
    const double p = std::pow(r, -s) / zeta;
    EXPECT_NEAR(double(counts[r - 1]) / chunks, p, 4 * std::sqrt(p / chunks) + 0.1 * p) << r;
  }
}

TEST(Rng, StateRoundTrip) {
  Rng a(42);
  for (int i = 0; i < 10; ++i) a.Next();
  Rng b(0);
  ASSERT_TRUE(b.FromString(a.ToString()).ok());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.Next(), b.Next());
  EXPECT_FALSE(b.FromString("1 2 x").ok());
}

}  // namespace
}  // namespace isoflop::trainer
