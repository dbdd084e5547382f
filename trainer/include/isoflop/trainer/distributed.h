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

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop::trainer {

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "single", "gloo", "nccl"
  // Element-wise sum over every rank, in place, for tensors of one device and dtype. Throws
  // (std::runtime_error from LibTorch) when a rank is gone and the timeout passes.
  virtual void AllReduceSum(std::vector<torch::Tensor>& tensors) = 0;
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

// Sums the gradients of `params` over the group in flat buckets of about `bucket_bytes`
// (fewer, larger messages than one per tensor), in place. A parameter that has no gradient on
// some ranks (an MoE expert no token of theirs reached) gets zeros there when any rank has one,
// and stays without a gradient when no rank has.
void AllReduceGradients(ProcessGroup& group, const std::vector<torch::Tensor>& params,
                        int64_t bucket_bytes = 25 << 20);

}  // namespace isoflop::trainer
