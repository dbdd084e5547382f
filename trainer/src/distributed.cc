// Process groups for data-parallel training (distributed.h): one process, Gloo over TCP, and
// NCCL where this LibTorch was built with it; rendezvous from torchrun's or srun's variables.
#include "isoflop/trainer/distributed.h"

#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>

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

class Done : public PendingCollective {
 public:
  void Wait() override {}
};

class Single : public ProcessGroup {
 public:
  std::unique_ptr<PendingCollective> StartAllReduceSum(torch::Tensor) override {
    return std::make_unique<Done>();
  }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void AllReduceSum(std::vector<torch::Tensor>&) override {}
  void Broadcast(std::vector<torch::Tensor>&, int) override {}
  void Barrier() override {}
};

#if defined(ISOFLOP_HAVE_GLOO) || defined(ISOFLOP_NCCL_BACKEND)
class C10dPending : public PendingCollective {
 public:
  C10dPending(c10::intrusive_ptr<c10d::Work> work, std::chrono::milliseconds timeout)
      : work_(std::move(work)), timeout_(timeout) {}
  void Wait() override { work_->wait(timeout_); }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  std::chrono::milliseconds timeout_;
};

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
  std::unique_ptr<PendingCollective> StartAllReduceSum(torch::Tensor tensor) override {
    std::vector<at::Tensor> one = {std::move(tensor)};
    return std::make_unique<C10dPending>(pg_->allreduce(one, c10d::AllreduceOptions()), timeout_);
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

c10::intrusive_ptr<c10d::TCPStore> NewTcpStore(const std::string& host, c10d::TCPStoreOptions o) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 2)
  // LibTorch >= 2.4 asks for the libuv server by default; one built without libuv (Debian's
  // 2.x) refuses that, so fall back to the classic server.
  try {
    return c10::make_intrusive<c10d::TCPStore>(host, o);
  } catch (const c10::Error& e) {
    if (!o.useLibUV || std::string(e.what()).find("libuv") == std::string::npos) throw;
    o.useLibUV = false;
  }
#endif
  return c10::make_intrusive<c10d::TCPStore>(host, o);
}

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
    auto tcp = NewTcpStore(info.master_addr, o);
    return c10::make_intrusive<c10d::PrefixStore>(
        "isoflop/attempt_" + std::to_string(info.restart_count), tcp);
  }
  o.isServer = info.rank == 0;
  o.numWorkers = static_cast<size_t>(info.world_size);
  o.waitWorkers = true;
  return NewTcpStore(info.master_addr, o);
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

std::vector<double> ValueOfEachRank(ProcessGroup& group, double value,
                                    const torch::Device& device) {
  std::vector<double> out;
  for (const std::vector<double>& of_rank : ValuesOfEachRank(group, {value}, device))
    out.push_back(of_rank[0]);
  return out;
}

std::vector<std::vector<double>> ValuesOfEachRank(ProcessGroup& group,
                                                  const std::vector<double>& values,
                                                  const torch::Device& device) {
  const int n = group.size();
  const int64_t k = static_cast<int64_t>(values.size());
  if (n == 1) return {values};
  torch::Tensor slots = torch::zeros({n, k}, torch::kDouble);
  for (int64_t i = 0; i < k; ++i) slots[group.rank()][i] = values[i];
  std::vector<torch::Tensor> t = {slots.to(device)};
  group.AllReduceSum(t);
  const torch::Tensor sums = t[0].cpu().contiguous();
  const double* p = sums.data_ptr<double>();
  std::vector<std::vector<double>> out(n);
  for (int r = 0; r < n; ++r) out[r].assign(p + r * k, p + (r + 1) * k);
  return out;
}

GradientReducer::GradientReducer(ProcessGroup& group, std::vector<torch::Tensor> params,
                                 int64_t bucket_bytes, int64_t first_bucket_bytes)
    : group_(group), params_(std::move(params)) {
  slot_of_.resize(params_.size());
  filled_.assign(params_.size(), 0);
  had_grad_.assign(params_.size(), 0);
  // Reverse parameter order: the output end of the model, whose gradients come first.
  std::vector<int64_t> elements;  // per bucket, gradient elements so far
  for (size_t k = params_.size(); k-- > 0;) {
    const torch::Tensor& p = params_[k];
    const int64_t cap = buckets_.size() == 1 ? first_bucket_bytes : bucket_bytes;
    Bucket* b = buckets_.empty() ? nullptr : &buckets_.back();
    if (b == nullptr || b->flat.scalar_type() != p.scalar_type() ||
        b->flat.device() != p.device() ||
        (elements.back() + p.numel()) * p.element_size() > cap) {
      buckets_.emplace_back();
      elements.push_back(0);
      b = &buckets_.back();
      b->flat = torch::empty({0}, p.options());  // its dtype and device until sized below
    }
    b->offset.push_back(elements.back());
    b->params.push_back(k);
    elements.back() += p.numel();
    slot_of_[k] = {buckets_.size() - 1, b->params.size() - 1};
  }
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    // Gradients, then one presence count per parameter (how many ranks had a gradient).
    Bucket& b = buckets_[bi];
    b.flat = torch::empty({elements[bi] + static_cast<int64_t>(b.params.size())},
                          b.flat.options().requires_grad(false));
    b.missing = static_cast<int>(b.params.size());
  }
  // AccumulateGrad's post hook fires once per backward, after the gradient is accumulated into
  // .grad() (a tied weight's uses are summed before it runs), as DDP's reducer relies on.
  for (size_t k = 0; k < params_.size(); ++k) {
    if (!params_[k].requires_grad()) continue;
    auto acc = torch::autograd::impl::grad_accumulator(params_[k]);
    const uintptr_t key =
        acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
            [this, k](const torch::autograd::variable_list& outputs,
                      const torch::autograd::variable_list&) {
              OnGradientReady(k);
              return outputs;
            }));
    hooks_.push_back({k, std::move(acc), key});
  }
}

GradientReducer::~GradientReducer() {
  for (auto& h : hooks_) h.accumulator->del_post_hook(h.key);
}

void GradientReducer::Arm(const torch::Tensor& loss) {
  armed_ = true;
  started_early_ = 0;
  if (!loss.defined() || !loss.grad_fn()) return;
  std::unordered_set<const torch::autograd::Node*> reached;
  std::vector<torch::autograd::Node*> stack = {loss.grad_fn().get()};
  reached.insert(stack.back());
  while (!stack.empty()) {
    torch::autograd::Node* node = stack.back();
    stack.pop_back();
    for (const auto& edge : node->next_edges()) {
      if (edge.function && reached.insert(edge.function.get()).second)
        stack.push_back(edge.function.get());
    }
  }
  // A parameter reached through an AccumulateGrad node other than the one holding its hook has
  // been reloaded or replaced since the reducer was built: its gradient would go unsummed.
  std::unordered_map<const c10::TensorImpl*, const torch::autograd::Node*> hooked;
  for (const auto& h : hooks_) hooked[params_[h.param].unsafeGetTensorImpl()] = h.accumulator.get();
  for (const torch::autograd::Node* node : reached) {
    const auto* acc = dynamic_cast<const torch::autograd::AccumulateGrad*>(node);
    if (acc == nullptr) continue;
    auto it = hooked.find(acc->variable.unsafeGetTensorImpl());
    if (it != hooked.end() && it->second != node) {
      throw std::logic_error(
          "data parallel: a parameter's gradient hook is no longer in the graph (its tensor "
          "was reloaded after the GradientReducer was built); build the reducer after loading "
          "weights");
    }
  }
  const size_t before = next_;
  for (const auto& h : hooks_)
    if (!filled_[h.param] && reached.count(h.accumulator.get()) == 0) Fill(h.param);
  StartReadyBuckets();
  started_early_ += static_cast<int>(next_ - before);
}

void GradientReducer::Fill(size_t k) {
  const auto [bi, slot] = slot_of_[k];
  Bucket& b = buckets_[bi];
  const torch::Tensor& p = params_[k];
  const int64_t n = p.numel();
  const int64_t presence = b.flat.numel() - static_cast<int64_t>(b.params.size()) + slot;
  torch::NoGradGuard no_grad;
  if (p.grad().defined()) {
    b.flat.narrow(0, b.offset[slot], n).copy_(p.grad().reshape({-1}), /*non_blocking=*/true);
    b.flat.narrow(0, presence, 1).fill_(1);
    had_grad_[k] = 1;
  } else {
    // No gradient here (an expert none of this rank's tokens reached): this rank adds zeros.
    b.flat.narrow(0, b.offset[slot], n).zero_();
    b.flat.narrow(0, presence, 1).zero_();
    had_grad_[k] = 0;
    ++b.absent_here;
  }
  filled_[k] = 1;
  --b.missing;
}

void GradientReducer::OnGradientReady(size_t k) {
  if (!armed_) return;
  if (filled_[k]) {
    throw std::logic_error("data parallel: parameter " + std::to_string(k) +
                           " got a second gradient in one armed backward, or one after Arm "
                           "found it unreachable (a nested backward needs Arm() without a loss)");
  }
  Fill(k);
  const size_t before = next_;
  StartReadyBuckets();
  started_early_ += static_cast<int>(next_ - before);
}

void GradientReducer::StartReadyBuckets() {
  // In bucket order only: a later bucket that is complete waits for the earlier ones, so every
  // rank issues the same sequence of collectives.
  while (next_ < buckets_.size() && buckets_[next_].missing == 0) {
    buckets_[next_].pending = group_.StartAllReduceSum(buckets_[next_].flat);
    ++next_;
  }
}

void GradientReducer::Finish() {
  const bool armed_before_finish = armed_;
  armed_ = false;
  for (size_t bi = next_; bi < buckets_.size(); ++bi)
    for (size_t k : buckets_[bi].params)
      if (!filled_[k]) Fill(k);
  StartReadyBuckets();
  torch::NoGradGuard no_grad;
  for (auto& b : buckets_) {
    b.pending->Wait();
    b.pending.reset();
    // A parameter this rank had a gradient for has one on every rank after the sum. Only a
    // bucket with a parameter absent here reads its presence counts back: a host sync, which
    // a dense model (every parameter used on every rank) never pays.
    torch::Tensor counts;
    if (b.absent_here > 0) {
      const int64_t presence0 = b.flat.numel() - static_cast<int64_t>(b.params.size());
      counts = b.flat.narrow(0, presence0, b.params.size()).to(torch::kCPU);
    }
    for (size_t slot = 0; slot < b.params.size(); ++slot) {
      const size_t k = b.params[slot];
      torch::Tensor p = params_[k];
      if (!had_grad_[k] && counts[slot].item<double>() == 0) continue;  // no rank had one
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      p.mutable_grad().copy_(b.flat.narrow(0, b.offset[slot], p.numel()).view_as(p));
    }
    b.absent_here = 0;
    b.missing = static_cast<int>(b.params.size());
  }
  std::fill(filled_.begin(), filled_.end(), 0);
  next_ = 0;
  if (!armed_before_finish) started_early_ = 0;
}

}  // namespace isoflop::trainer
