// The process-group seam of data-parallel training: one run spread over several processes
// (ranks), each holding a full replica of the model and a slice of every step's windows. A
// single-process group keeps the one-process path exactly as it was; Gloo (CPU, TCP) and, in
// CUDA builds of LibTorch 2, NCCL implement the collectives for real.
//
// Rendezvous follows the launchers people use: torchrun's RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR and MASTER_PORT, or srun's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID with the
// first host of SLURM_JOB_NODELIST (and MASTER_PORT, default 29500); `isoflop-train --nproc N`
// sets torchrun's variables for the N ranks it starts.
#pragma once

#include <torch/csrc/autograd/function.h>
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop::trainer {

// A collective that has been started and not yet waited for.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  // Blocks until the collective is done; throws like the blocking collectives.
  virtual void Wait() = 0;
};

// Not thread-safe: one thread at a time issues collectives (the autograd thread that runs
// GradientReducer's hooks and the training loop never overlap).
class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "single", "gloo", "nccl"
  // Element-wise sum over every rank, in place, for tensors of one device and dtype. Throws
  // (std::runtime_error from LibTorch) when a rank is gone and the timeout passes.
  virtual void AllReduceSum(std::vector<torch::Tensor>& tensors) = 0;
  // Starts summing `tensor` over every rank, in place, and returns at once; the sum is there
  // after Wait(). Every rank must start its collectives in the same order.
  virtual std::unique_ptr<PendingCollective> StartAllReduceSum(torch::Tensor tensor) = 0;
  // Rank `root`'s values to every rank, in place.
  virtual void Broadcast(std::vector<torch::Tensor>& tensors, int root) = 0;
  virtual void Barrier() = 0;
};

// Where this process sits in a data-parallel run, from the environment. Plain value.
struct RankInfo {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source;  // "torchrun", "slurm" or "" (one process)
  // torchrun: its agent serves the store (TORCHELASTIC_USE_AGENT_STORE=True), every rank joins
  // as a client under a prefix per restart (TORCHELASTIC_RESTART_COUNT).
  bool agent_store = false;
  int restart_count = 0;
};

// The rendezvous variables of torchrun (RANK, WORLD_SIZE, ...) or of srun (SLURM_PROCID,
// SLURM_NTASKS, ...; only when SLURM_NTASKS > 1). InvalidArgument naming the variable when one
// is malformed or out of range. SLURM_JOB_NODELIST's first host: "node[01-04,07]" -> "node01".
Result<RankInfo> RankFromEnvironment();
std::string FirstHostOfNodeList(const std::string& nodelist);

// A group of one: every collective is a no-op.
std::unique_ptr<ProcessGroup> SingleProcessGroup();

// Joins the group described by `info` over `device` ("cpu": Gloo over TCP; "cuda": NCCL when
// this LibTorch has it). Rank 0 hosts the TCPStore at master_addr:master_port. Collectives
// that wait longer than `timeout` throw. FailedPrecondition when this LibTorch lacks the
// backend; IoError when the rendezvous fails.
Result<std::unique_ptr<ProcessGroup>> JoinProcessGroup(const RankInfo& info,
                                                       const std::string& device,
                                                       std::chrono::milliseconds timeout);

// Every rank's `value`, indexed by rank, on every rank: each rank puts its own at its slot of a
// zeroed vector on `device` and the group sums it (one collective; exact for integers up to
// 2^53). Every rank must call it at the same point. Throws like AllReduceSum.
std::vector<double> ValueOfEachRank(ProcessGroup& group, double value, const torch::Device& device);

// The same for several values at once, in one collective: result[r][i] is rank r's values[i].
// Every rank passes as many values.
std::vector<std::vector<double>> ValuesOfEachRank(ProcessGroup& group,
                                                  const std::vector<double>& values,
                                                  const torch::Device& device);

// Sums a replica's gradients over the group in flat buckets, each started as soon as its last
// gradient of the step is final, so communication overlaps the rest of the backward pass (as
// PyTorch's DistributedDataParallel does). Buckets follow the reverse of parameter order, the
// order backward produces gradients in; the first is about 1 MB so communication starts early,
// the rest about `bucket_bytes`. Buckets are started in one fixed order on every rank whatever
// order gradients arrive in, so ranks whose graphs differ (an MoE expert that none of a rank's
// tokens reached never gets a gradient there) cannot deadlock: such a bucket starts when
// Finish() fills the missing gradient with zeros. A parameter that has a gradient on no rank
// keeps none (the optimizer skips it, as in the one-process run).
//
// Use: Arm(loss) before the last backward() of the step (earlier micro-batches only
// accumulate), then Finish(). Arm walks loss's graph, as DDP's find_unused_parameters does:
// parameters it cannot reach will get no gradient this step, so their slots are filled at once
// and the buckets after them need not wait for Finish(). Arm() without a loss skips the walk,
// for graphs that reach parameters only through a nested backward (reentrant activation
// checkpointing). Without Arm() every bucket starts in Finish(): all-reduce after backward.
// Not thread-safe beyond that protocol. Hooks are removed when the reducer is destroyed; the
// group and the parameters must outlive it. Build it after loading a checkpoint: torch::load
// into the parameters detaches hooks placed before (Arm(loss) then throws std::logic_error
// rather than let gradients go unsummed).
class GradientReducer {
 public:
  GradientReducer(ProcessGroup& group, std::vector<torch::Tensor> params,
                  int64_t bucket_bytes = 25 << 20, int64_t first_bucket_bytes = 1 << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  void Arm(const torch::Tensor& loss = {});
  // Starts the buckets not started yet, waits for all, and writes the sums into each
  // parameter's .grad(). Throws (std::runtime_error) when a collective times out.
  void Finish();

  int buckets() const { return static_cast<int>(buckets_.size()); }
  // How many buckets the last step started before Finish() (at Arm or during backward).
  int started_early() const { return started_early_; }

 private:
  struct Bucket {
    std::vector<size_t> params;   // indices into params_, in slot order
    std::vector<int64_t> offset;  // each one's first element in flat
    torch::Tensor flat;           // gradients, then one presence count per parameter
    int missing = 0;              // slots not yet filled this step
    int absent_here = 0;          // slots this rank had no gradient for this step
    std::unique_ptr<PendingCollective> pending;
  };
  void OnGradientReady(size_t param);
  void Fill(size_t param);  // copies its gradient (or zeros) into its bucket
  void StartReadyBuckets();

  ProcessGroup& group_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> slot_of_;  // param -> (bucket, slot)
  std::vector<char> filled_;
  std::vector<char> had_grad_;  // this rank had a gradient for the parameter this step
  struct Hook {
    size_t param;
    // held, so every graph reuses it (a std::shared_ptr in LibTorch 1.13 and 2.6, a
    // c10::intrusive_ptr in 2.14)
    decltype(torch::autograd::impl::grad_accumulator(std::declval<torch::Tensor>())) accumulator;
    uintptr_t key;
  };
  std::vector<Hook> hooks_;
  size_t next_ = 0;  // the first bucket not started yet
  bool armed_ = false;
  int started_early_ = 0;
};

}  // namespace isoflop::trainer
