// Process groups for data-parallel training (distributed.h): one process, Gloo over TCP, and
// NCCL where this LibTorch was built with it; rendezvous from torchrun's or srun's variables.
#include "isoflop/trainer/distributed.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

#if !defined(ISOFLOP_NO_GLOO) && __has_include(<gloo/algorithm.h>) && \
    __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#define ISOFLOP_HAVE_GLOO 1
#endif

#if defined(ISOFLOP_HAVE_NCCL) && __has_include(<nccl.h>) && \
    __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#define ISOFLOP_NCCL_BACKEND 1
#endif

namespace isoflop::trainer {
namespace {

class Single : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void AllReduceSum(std::vector<torch::Tensor>&) override {}
  void Broadcast(std::vector<torch::Tensor>&, int) override {}
  void Barrier() override {}
};

#if defined(ISOFLOP_HAVE_GLOO) || defined(ISOFLOP_NCCL_BACKEND)
// Any c10d process group (Gloo, NCCL) behind the seam.
template <typename PG>
class C10dGroup : public ProcessGroup {
 public:
  C10dGroup(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<PG> pg, int rank, int size,
            std::string name, std::chrono::milliseconds timeout)
      : store_(std::move(store)),
        pg_(std::move(pg)),
        rank_(rank),
        size_(size),
        name_(std::move(name)),
        timeout_(timeout) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return name_; }
  void AllReduceSum(std::vector<torch::Tensor>& tensors) override {
    for (auto& t : tensors) {
      std::vector<at::Tensor> one = {t};
      pg_->allreduce(one, c10d::AllreduceOptions())->wait(timeout_);
    }
  }
  void Broadcast(std::vector<torch::Tensor>& tensors, int root) override {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    for (auto& t : tensors) {
      std::vector<at::Tensor> one = {t};
      pg_->broadcast(one, o)->wait(timeout_);
    }
  }
  void Barrier() override { pg_->barrier(c10d::BarrierOptions())->wait(timeout_); }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<PG> pg_;
  int rank_, size_;
  std::string name_;
  std::chrono::milliseconds timeout_;
};

c10::intrusive_ptr<c10d::Store> MakeStore(const RankInfo& info, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(info.master_port);
  o.timeout = timeout;
  if (info.agent_store) {
    // torchrun's agent already serves a store at MASTER_ADDR:MASTER_PORT (its own keys in it):
    // every rank is a client, and this attempt's keys get a prefix of their own, so a restarted
    // attempt never reads the previous one's.
    o.isServer = false;
    o.waitWorkers = false;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(info.master_addr, o);
    return c10::make_intrusive<c10d::PrefixStore>(
        "isoflop/attempt_" + std::to_string(info.restart_count), tcp);
  }
  o.isServer = info.rank == 0;
  o.numWorkers = static_cast<size_t>(info.world_size);
  o.waitWorkers = true;
  return c10::make_intrusive<c10d::TCPStore>(info.master_addr, o);
}
#endif

Result<int> EnvInt(const char* name, int lo, int hi) {
  const char* v = std::getenv(name);
  char* end = nullptr;
  const long x = v ? std::strtol(v, &end, 10) : 0;
  if (v == nullptr || *v == '\0' || *end != '\0' || x < lo || x > hi) {
    return Status::InvalidArgument(std::string("environment variable ") + name + "=" +
                                   (v ? v : "(unset)") + ": expected an integer in [" +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return static_cast<int>(x);
}

}  // namespace

std::string FirstHostOfNodeList(const std::string& list) {
  // "a,b" -> a; "node[01-04,07],other" -> node01; "n[3]" -> n3.
  const size_t bracket = list.find('[');
  const size_t comma = list.find(',');
  if (bracket == std::string::npos || (comma != std::string::npos && comma < bracket)) {
    return list.substr(0, comma);
  }
  const std::string prefix = list.substr(0, bracket);
  std::string first = list.substr(bracket + 1);
  first = first.substr(0, first.find_first_of(",-]"));
  return prefix + first;
}

Result<RankInfo> RankFromEnvironment() {
  RankInfo info;
  if (std::getenv("WORLD_SIZE") != nullptr) {
    ISOFLOP_ASSIGN_OR_RETURN(info.world_size, EnvInt("WORLD_SIZE", 1, 1 << 20));
    ISOFLOP_ASSIGN_OR_RETURN(info.rank, EnvInt("RANK", 0, info.world_size - 1));
    info.local_rank = info.rank;
    if (std::getenv("LOCAL_RANK") != nullptr) {
      ISOFLOP_ASSIGN_OR_RETURN(info.local_rank, EnvInt("LOCAL_RANK", 0, 1 << 20));
    }
    if (const char* a = std::getenv("MASTER_ADDR"); a && *a) info.master_addr = a;
    if (std::getenv("MASTER_PORT") != nullptr) {
      ISOFLOP_ASSIGN_OR_RETURN(info.master_port, EnvInt("MASTER_PORT", 1, 65535));
    }
    info.source = info.world_size > 1 ? "torchrun" : "";
    // torchrun (torchelastic) serves the rendezvous store from its agent.
    if (const char* a = std::getenv("TORCHELASTIC_USE_AGENT_STORE"); a && std::string(a) == "True")
      info.agent_store = true;
    if (std::getenv("TORCHELASTIC_RESTART_COUNT") != nullptr) {
      ISOFLOP_ASSIGN_OR_RETURN(info.restart_count,
                               EnvInt("TORCHELASTIC_RESTART_COUNT", 0, 1 << 20));
    }
    return info;
  }
  if (const char* n = std::getenv("SLURM_NTASKS"); n && std::atoi(n) > 1) {
    ISOFLOP_ASSIGN_OR_RETURN(info.world_size, EnvInt("SLURM_NTASKS", 1, 1 << 20));
    ISOFLOP_ASSIGN_OR_RETURN(info.rank, EnvInt("SLURM_PROCID", 0, info.world_size - 1));
    if (std::getenv("SLURM_LOCALID") != nullptr) {
      ISOFLOP_ASSIGN_OR_RETURN(info.local_rank, EnvInt("SLURM_LOCALID", 0, 1 << 20));
    }
    if (const char* nodes = std::getenv("SLURM_JOB_NODELIST"); nodes && *nodes) {
      info.master_addr = FirstHostOfNodeList(nodes);
    }
    if (std::getenv("MASTER_PORT") != nullptr) {
      ISOFLOP_ASSIGN_OR_RETURN(info.master_port, EnvInt("MASTER_PORT", 1, 65535));
    }
    info.source = "slurm";
  }
  return info;
}

std::unique_ptr<ProcessGroup> SingleProcessGroup() { return std::make_unique<Single>(); }

Result<std::unique_ptr<ProcessGroup>> JoinProcessGroup(const RankInfo& info,
                                                       const std::string& device,
                                                       std::chrono::milliseconds timeout) {
  if (info.world_size <= 1) return SingleProcessGroup();
  try {
    if (device == "cuda") {
#ifdef ISOFLOP_NCCL_BACKEND
      auto store = MakeStore(info, timeout);
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, info.rank, info.world_size,
                                                           opts);
      return std::unique_ptr<ProcessGroup>(new C10dGroup<c10d::ProcessGroupNCCL>(
          store, pg, info.rank, info.world_size, "nccl", timeout));
#else
      return Status::FailedPrecondition(
          "a multi-rank CUDA run needs NCCL, and this LibTorch build has no ProcessGroupNCCL");
#endif
    }
#ifdef ISOFLOP_HAVE_GLOO
    auto store = MakeStore(info, timeout);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    const bool loopback = info.master_addr == "127.0.0.1" || info.master_addr == "localhost";
    opts->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                     : c10d::ProcessGroupGloo::createDefaultDevice());
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, info.rank, info.world_size, opts);
    return std::unique_ptr<ProcessGroup>(new C10dGroup<c10d::ProcessGroupGloo>(
        store, pg, info.rank, info.world_size, "gloo", timeout));
#else
    return Status::FailedPrecondition(
        "a multi-rank CPU run needs Gloo: this build found no gloo headers (Debian: libgloo-dev)");
#endif
  } catch (const std::exception& e) {
    return Status::IoError("rendezvous at " + info.master_addr + ":" +
                           std::to_string(info.master_port) + " (rank " +
                           std::to_string(info.rank) + " of " + std::to_string(info.world_size) +
                           ") failed: " + e.what());
  }
}

void AllReduceGradients(ProcessGroup& group, const std::vector<torch::Tensor>& params,
                        int64_t bucket_bytes) {
  if (group.size() <= 1 || params.empty()) return;
  // Which parameters have a gradient on any rank.
  auto has = torch::zeros({static_cast<int64_t>(params.size())}, torch::kFloat);
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].grad().defined()) has[i] = 1.0f;
  has = has.to(params[0].device());
  std::vector<torch::Tensor> h = {has};
  group.AllReduceSum(h);
  has = has.to(torch::kCPU);
  std::vector<torch::Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    if (has[i].item<float>() == 0) continue;
    torch::Tensor p = params[i];
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  // Flat buckets of one dtype each, in parameter order.
  size_t i = 0;
  while (i < grads.size()) {
    std::vector<torch::Tensor> bucket;
    int64_t bytes = 0;
    const auto dtype = grads[i].scalar_type();
    while (i < grads.size() && grads[i].scalar_type() == dtype &&
           (bucket.empty() || bytes + grads[i].numel() * grads[i].element_size() <= bucket_bytes)) {
      bytes += grads[i].numel() * grads[i].element_size();
      bucket.push_back(grads[i++]);
    }
    std::vector<torch::Tensor> flats;
    for (const auto& g : bucket) flats.push_back(g.reshape({-1}));
    std::vector<torch::Tensor> flat = {torch::cat(flats)};
    group.AllReduceSum(flat);
    int64_t at = 0;
    for (auto& g : bucket) {
      g.copy_(flat[0].narrow(0, at, g.numel()).view_as(g));
      at += g.numel();
    }
  }
}

}  // namespace isoflop::trainer
