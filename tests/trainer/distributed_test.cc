// GradientReducer (distributed.h) over a real two-rank Gloo group, the ranks as two threads of
// this process: the summed gradients equal the sum of each rank's own, buckets start while
// backward is still running, ranks whose graphs differ (a parameter only one rank uses, one no
// rank uses) neither deadlock nor change the optimizer's view, micro-batches accumulate, and
// a second step starts clean; ValueOfEachRank hands every rank each rank's value. Part of the
// WHOLE binary trainer_model_test.
#include "isoflop/trainer/distributed.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <functional>
#include <sstream>
#include <thread>

#include "isoflop/common/process.h"
#include "require_gloo.h"

namespace isoflop::trainer {
namespace {

// A little network with a tied weight (used twice, like the embedding and the output head),
// and two extra parameters: `only_rank0` (an expert only rank 0's tokens reach) and `unused`
// (one no token reaches).
struct Net {
  torch::Tensor w1, w2, tied, only_rank0, unused;
  std::vector<torch::Tensor> params() const { return {tied, w1, w2, only_rank0, unused}; }
};

// Each thread draws from its own generator (the global one is shared by both ranks here).
torch::Tensor Randn(at::IntArrayRef size, at::Generator& gen) {
  return at::randn(size, gen, torch::kFloat);
}

Net MakeNet() {
  at::Generator gen = at::detail::createCPUGenerator(7);
  Net n;
  n.tied = Randn({6, 8}, gen).requires_grad_();
  n.w1 = Randn({8, 16}, gen).requires_grad_();
  n.w2 = Randn({16, 8}, gen).requires_grad_();
  n.only_rank0 = Randn({8, 8}, gen).requires_grad_();
  n.unused = Randn({8}, gen).requires_grad_();
  return n;
}

// One micro-batch's loss on rank `rank`: its inputs differ per rank and per micro-batch.
torch::Tensor Loss(const Net& n, int rank, int micro) {
  at::Generator gen = at::detail::createCPUGenerator(100 + 10 * rank + micro);
  const auto x = Randn({4, 6}, gen);                  // (B, V)
  auto h = torch::tanh(torch::matmul(x, n.tied));      // (B, C)
  h = torch::relu(torch::matmul(h, n.w1));             // (B, 4C)
  h = torch::matmul(h, n.w2);                          // (B, C)
  if (rank == 0) h = h + torch::matmul(h, n.only_rank0);
  return torch::matmul(h, n.tied.t()).pow(2).mean();  // (B, V) -> ()
}

struct RankResult {
  std::vector<torch::Tensor> own;      // this rank's gradients alone (undefined: none)
  std::vector<torch::Tensor> reduced;  // after Finish()
  int buckets = 0, started_early = 0;
  std::string error;
};

// Runs `body(group, rank)` as two ranks of one Gloo group, one thread each.
void RunTwoRanks(const std::function<void(ProcessGroup&, int, RankResult&)>& body,
                 RankResult out[2]) {
  const int port = FreeLoopbackPort();
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      RankInfo info;
      info.rank = r, info.world_size = 2, info.master_port = port;
      auto group = JoinProcessGroup(info, "cpu", std::chrono::seconds(20));
      if (!group.ok()) {
        out[r].error = group.status().message();
        return;
      }
      try {
        body(**group, r, out[r]);
      } catch (const std::exception& e) {
        out[r].error = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(out[0].error, "");
  ASSERT_EQ(out[1].error, "");
}

std::vector<torch::Tensor> Grads(const Net& n) {
  std::vector<torch::Tensor> g;
  for (const auto& p : n.params()) g.push_back(p.grad().defined() ? p.grad().clone() : p.grad());
  return g;
}

void ClearGrads(const Net& n) {
  for (auto p : n.params()) p.mutable_grad() = torch::Tensor();
}

// The rank's own gradients over `micro` micro-batches, then the reduced ones through a reducer
// with buckets of `bucket_bytes`, armed before the last backward when `arm`.
void OwnThenReduced(ProcessGroup& group, int rank, RankResult& out, int micro, bool arm,
                    int64_t bucket_bytes) {
  const Net n = MakeNet();
  for (int m = 0; m < micro; ++m) Loss(n, rank, m).backward();
  out.own = Grads(n);
  ClearGrads(n);
  GradientReducer reducer(group, n.params(), bucket_bytes, bucket_bytes);
  for (int m = 0; m < micro; ++m) {
    const torch::Tensor loss = Loss(n, rank, m);
    if (arm && m + 1 == micro) reducer.Arm(loss);
    loss.backward();
  }
  reducer.Finish();
  out.reduced = Grads(n);
  out.buckets = reducer.buckets();
  out.started_early = reducer.started_early();
}

// Every rank ends with the sum of both ranks' own gradients; a parameter no rank has a
// gradient for keeps none, and one only rank 0 has gets rank 0's on both.
void ExpectSummed(const RankResult r[2]) {
  const size_t n = r[0].own.size();
  for (size_t i = 0; i < n; ++i) {
    const auto& a = r[0].own[i];
    const auto& b = r[1].own[i];
    if (!a.defined() && !b.defined()) {
      EXPECT_FALSE(r[0].reduced[i].defined()) << "param " << i;
      EXPECT_FALSE(r[1].reduced[i].defined()) << "param " << i;
      continue;
    }
    const torch::Tensor want = a.defined() && b.defined() ? a + b : (a.defined() ? a : b);
    for (int k = 0; k < 2; ++k) {
      ASSERT_TRUE(r[k].reduced[i].defined()) << "rank " << k << " param " << i;
      EXPECT_TRUE(torch::allclose(r[k].reduced[i], want, 1e-6, 1e-7))
          << "rank " << k << " param " << i;
    }
  }
}

TEST(ProcessGroupTest, EveryRankGetsEachRanksValue) {
  ISOFLOP_REQUIRE_GLOO();
  std::vector<double> seen[2];
  std::vector<std::vector<double>> several[2];
  RankResult out[2];
  RunTwoRanks(
      [&](ProcessGroup& group, int rank, RankResult&) {
        // Integers past float precision, as peak memory in bytes is.
        seen[rank] = ValueOfEachRank(group, rank == 0 ? 123456789012.0 : 7.0, torch::kCPU);
        several[rank] = ValuesOfEachRank(group, {rank + 1.0, -(rank + 10.0), 0.5}, torch::kCPU);
      },
      out);
  for (const auto& s : seen) EXPECT_EQ(s, (std::vector<double>{123456789012.0, 7.0}));
  const std::vector<std::vector<double>> each = {{1.0, -10.0, 0.5}, {2.0, -11.0, 0.5}};
  for (const auto& s : several) EXPECT_EQ(s, each);
  EXPECT_EQ(ValueOfEachRank(*SingleProcessGroup(), 5.0, torch::kCPU), std::vector<double>{5.0});
}

TEST(GradientReducerTest, OverlappedBucketsSumEveryRanksGradients) {
  ISOFLOP_REQUIRE_GLOO();
  RankResult r[2];
  // 200 bytes: every parameter in a bucket of its own, so most start during backward.
  RunTwoRanks([](ProcessGroup& g, int rank,
                 RankResult& out) { OwnThenReduced(g, rank, out, 1, true, 200); },
              r);
  ExpectSummed(r);
  // The ranks' graphs differ (only_rank0), yet every rank gets the same results.
  EXPECT_FALSE(r[1].own[3].defined());
  EXPECT_TRUE(r[1].reduced[3].defined());
  EXPECT_FALSE(r[0].reduced[4].defined());
  EXPECT_EQ(r[0].buckets, 5);
  // Arm finds `unused` (and, on rank 1, only_rank0) unreachable, so no bucket waits for
  // Finish(): all five start before it, on both ranks.
  EXPECT_EQ(r[0].started_early, 5);
  EXPECT_EQ(r[1].started_early, 5);
}

TEST(GradientReducerTest, WithoutTheGraphWalkBucketsAfterAnUnusedOneWaitForFinish) {
  ISOFLOP_REQUIRE_GLOO();
  RankResult r[2];
  RunTwoRanks(
      [](ProcessGroup& g, int rank, RankResult& out) {
        const Net n = MakeNet();
        Loss(n, rank, 0).backward();
        out.own = Grads(n);
        ClearGrads(n);
        GradientReducer reducer(g, n.params(), 200, 200);
        reducer.Arm();  // no loss: no walk, as under activation checkpointing
        Loss(n, rank, 0).backward();
        reducer.Finish();
        out.reduced = Grads(n);
        out.started_early = reducer.started_early();
      },
      r);
  ExpectSummed(r);
  // Buckets run in reverse parameter order and `unused` is the first: it never becomes ready
  // during backward, so every bucket starts in Finish(), and still nothing deadlocks.
  EXPECT_EQ(r[0].started_early, 0);
  EXPECT_EQ(r[1].started_early, 0);
}

TEST(GradientReducerTest, OnlyTheLastMicroBatchIsArmed) {
  ISOFLOP_REQUIRE_GLOO();
  RankResult r[2];
  RunTwoRanks([](ProcessGroup& g, int rank,
                 RankResult& out) { OwnThenReduced(g, rank, out, 3, true, 200); },
              r);
  ExpectSummed(r);  // all three micro-batches, not only the last one's gradients
}

TEST(GradientReducerTest, UnarmedReducesAfterBackwardWithTheSameResult) {
  ISOFLOP_REQUIRE_GLOO();
  RankResult r[2];
  RunTwoRanks([](ProcessGroup& g, int rank,
                 RankResult& out) { OwnThenReduced(g, rank, out, 2, false, 25 << 20); },
              r);
  ExpectSummed(r);
  EXPECT_EQ(r[0].buckets, 1);
  EXPECT_EQ(r[0].started_early, 0);
}

TEST(GradientReducerTest, ASecondStepStartsClean) {
  ISOFLOP_REQUIRE_GLOO();
  RankResult r[2];
  RunTwoRanks(
      [](ProcessGroup& g, int rank, RankResult& out) {
        const Net n = MakeNet();
        GradientReducer reducer(g, n.params(), 200, 200);
        for (int step = 0; step < 2; ++step) {
          ClearGrads(n);
          const torch::Tensor loss = Loss(n, rank, step);
          reducer.Arm(loss);
          loss.backward();
          reducer.Finish();
        }
        out.reduced = Grads(n);
        out.started_early = reducer.started_early();
        ClearGrads(n);
        Loss(n, rank, 1).backward();  // the second step's own gradients: unarmed, not reduced
        out.own = Grads(n);
      },
      r);
  ExpectSummed(r);
  EXPECT_EQ(r[0].started_early, 5);
}

// Loading a checkpoint into the parameters (torch::load) detaches hooks placed before it, so
// the trainer builds its reducer after Resume; a reducer whose hooks are gone says so rather
// than sum nothing.
TEST(GradientReducerTest, HooksPlacedBeforeLoadingACheckpointAreDetectedAsGone) {
  torch::nn::Linear saved(4, 3), model(4, 3);
  std::stringstream bytes;
  torch::save(saved, bytes);
  auto group = SingleProcessGroup();
  {
    GradientReducer before(*group, model->parameters(), 8, 8);
    torch::load(model, bytes);
    const torch::Tensor loss = model->forward(torch::ones({2, 4})).sum();
    EXPECT_THROW(before.Arm(loss), std::logic_error);
  }
  GradientReducer after(*group, model->parameters(), 8, 8);
  model->zero_grad(/*set_to_none=*/true);
  const torch::Tensor loss = model->forward(torch::ones({2, 4})).sum();
  after.Arm(loss);
  loss.backward();
  EXPECT_EQ(after.started_early(), after.buckets());
  after.Finish();
  EXPECT_TRUE(torch::allclose(model->bias.grad(), torch::full({3}, 2.0f)));
}

}  // namespace
}  // namespace isoflop::trainer
