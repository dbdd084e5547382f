// The training loop of isoflop-train: next batch, forward, backward, clip, step, log; plus
// evaluation, checkpoints and the run-directory protocol. Resume is exact on CPU: the model,
// the optimizer, the step, the tokens and the data Rng are all restored, and nothing else is
// random. Shape legend: B batch (sequences), T time, V vocabulary.
#include "isoflop/trainer/train_loop.h"

#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "isoflop/common/process.h"
#include "isoflop/trainer/data.h"
#include "isoflop/trainer/distributed.h"
#include "isoflop/trainer/memory.h"
#include "isoflop/trainer/model.h"
#include "isoflop/trainer/run_dir.h"
#include "isoflop/trainer/schedule.h"
#include "isoflop/trainer/step_values.h"
#include "isoflop/trainer/tensor_bytes.h"

#ifdef ISOFLOP_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace isoflop::trainer {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void OnStopSignal(int sig) { g_stop_signal = sig; }

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// "[4, 16]".
std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A LibTorch error's message without the C++ backtrace c10::Error appends (frame #0 ...), on one
// line: what a status.json reason and a person need.
std::string TorchMessage(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string m = c10 ? c10->what_without_backtrace() : e.what();
  if (const size_t frames = m.find("\nException raised from"); frames != std::string::npos)
    m.resize(frames);
  std::replace(m.begin(), m.end(), '\n', ' ');
  while (!m.empty() && m.back() == ' ') m.pop_back();
  // c10's TORCH_ENFORCE prefix, "[enforce fail at alloc_cpu.cpp:75] err == 0. ", says where in
  // LibTorch, not what: the rest does.
  if (m.rfind("[enforce fail at ", 0) == 0) {
    if (const size_t end = m.find("] "); end != std::string::npos) {
      if (const size_t cond = m.find(". ", end); cond != std::string::npos) m.erase(0, cond + 2);
    }
  }
  return m;
}

// The most bytes held in tensors at once: CPU tensors as counted (tensor_bytes.h), or the
// caching allocator's peak allocated bytes on the run's GPU.
int64_t PeakTensorBytes(const torch::Device& device) {
#ifdef ISOFLOP_HAVE_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats.allocated_bytes[0].peak;
  }
#endif
  (void)device;
  return CpuTensorBytesPeak();
}

// This process's peak resident set in host memory (getrusage; Linux counts kilobytes).
int64_t PeakHostMemory() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

// This process's peak memory where a run on `device` keeps its tensors, and what was measured
// (StatusFile): the caching allocator's peak reserved bytes on a GPU, the peak resident set on
// CPU.
std::pair<int64_t, std::string> PeakMemory(const torch::Device& device) {
#ifdef ISOFLOP_HAVE_CUDA
  if (device.is_cuda()) {
    // [0]: StatType::AGGREGATE (its namespace moved between LibTorch 1.13 and 2.x).
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return {stats.reserved_bytes[0].peak, "cuda_reserved"};
  }
#endif
  (void)device;
  return {PeakHostMemory(), "host_rss"};
}

int ResolveThreads(int requested) {
  if (requested > 0) return requested;
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

// Everything a checkpoint holds besides tensors.
struct Progress {
  int64_t step = 0;
  int64_t tokens = 0;
  double wall_s = 0;  // training wall time of earlier process lifetimes
  std::string rng_state;
};

// One training run's state and its steps. Owns the model, optimizer and data source.
class Trainer {
 public:
  Trainer(std::string run_dir, const RunConfig& config, const TrainOptions& options)
      : dir_(std::move(run_dir)),
        config_(config),
        options_(options),
        train_(config.train),
        shape_(config.model) {}

  RunOutcome Run();
  // The verdict on an exception out of Run (LibTorch throws): failed, or out of memory when an
  // allocation failed, with the progress made and the peaks measured so far. Only the rank
  // that writes files writes status.json.
  RunOutcome Fail(const std::exception& e);

 private:
  bool lead() const { return group_->rank() == 0; }  // the one rank that writes files
  // Whether any rank has been told to stop, asked of every rank at once (a collective).
  bool AgreedStop();
  Status Setup();
  Status Resume();
  // Loads one checkpoint (weights, optimizer, data RNG, progress); Corrupt, naming the file,
  // when it does not load or its state.json does not belong to its folder and this run.
  Status LoadCheckpoint(const CheckpointDir& c);
  std::vector<std::pair<std::string, std::vector<int64_t>>> built_shapes_;  // parameter shapes
  // Data parallel: every rank resumed from the same step (each lists the checkpoints itself; a
  // stale listing of a shared folder on one node would train from different states).
  Status AgreeOnResumedStep();
  void StartGradientReducer();  // data parallel: the bucketed all-reduce of gradients
  void ReduceMoeStepStats();    // data parallel: every MoE layer's routing stats, summed
  Status WriteInfo() const;
  // Draws the windows of one step into micro-batches of token ids, each (B, T+1).
  Result<std::vector<torch::Tensor>> NextBatch(int64_t step_tokens);
  // Forward/backward of one step. Returns, on the device, {the mean cross-entropy over the
  // step's tokens, how many ranks have been told to stop} (an MoE model's router losses are
  // backpropagated too, but not part of the loss).
  torch::Tensor ForwardBackward(const std::vector<torch::Tensor>& micro_batches,
                                int64_t step_tokens);
  // A step whose values the host has not read yet, and the progress before it.
  struct PendingStep {
    int64_t step;
    int64_t tokens_before;
    int64_t tokens;     // this step's
    StepValues values;  // {loss, stop votes, gradient norm}
  };
  // Reads a step's values (waiting for them if need be) into *loss and *grad_norm, and adds
  // its loss to the interval's; with several ranks, a stop vote sets the agreed signal. A
  // non-finite loss or norm ends the run as diverged, with the progress before that step.
  std::optional<RunOutcome> ReadStep(PendingStep& p, double* loss, double* grad_norm);
  double Evaluate();
  // Data parallel: every rank's peak memory so far, onto rank_peaks_ (a collective, at the
  // steps where every rank evaluates, checkpoints or stops).
  void GatherPeakMemory();
  Status SaveCheckpoint();
  Status LogMetrics(double train_loss, double val_loss, double lr, double grad_norm,
                    double tokens_per_s, std::vector<std::pair<std::string, double>> extra);
  RunOutcome Finish(std::string state, std::string reason, int exit_code);
  double WallSeconds() const { return progress_.wall_s + SecondsSince(start_); }

  std::string dir_;
  RunConfig config_;
  TrainOptions options_;
  const TrainConfig& train_;
  const accounting::Shape& shape_;

  torch::Device device_{torch::kCPU};
  bool autocast_ = false;
  int threads_ = 1;
  Transformer model_{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::unique_ptr<TokenSource> data_;
  Rng data_rng_;
  torch::Tensor val_set_;  // (n_val, T+1), fixed for the whole run
  MetricsLog metrics_;
  Progress progress_;
  double last_val_loss_ = NAN;
  std::vector<int64_t> rank_peaks_;  // data parallel: each rank's peak memory, last gathered
  int64_t rank_tensor_peak_ = 0;     // and the largest rank's peak of bytes in tensors,
  int64_t rank_host_peak_ = 0;       // and of its resident set
  // A metrics line's train_loss is the token-weighted mean loss of the steps since the line
  // before, not its own step's: one step's loss is batch noise (on the quickstart its spread is
  // several times the gap between neighbouring model sizes, which the envelope ranks). A
  // checkpoint keeps the open interval, so a resumed run logs the same means.
  double interval_loss_sum_ = 0;  // sum of loss x tokens over the steps read since the last line
  int64_t interval_loss_tokens_ = 0;
  Clock::time_point start_ = Clock::now();
  std::unique_ptr<ProcessGroup> group_ = SingleProcessGroup();
  std::unique_ptr<GradientReducer> reducer_;  // data parallel only
  bool overlap_reduce_ = true;  // start buckets during the last backward (else after it)
  int agreed_signal_ = 0;  // the stop signal all ranks act on (0 while none)
};

bool Trainer::AgreedStop() {
  if (group_->size() == 1) {
    agreed_signal_ = g_stop_signal;
    return agreed_signal_ != 0;
  }
  auto flag = torch::full({1}, g_stop_signal != 0 ? 1.0 : 0.0, torch::kDouble).to(device_);
  std::vector<torch::Tensor> t = {flag};
  group_->AllReduceSum(t);
  if (t[0].item<double>() > 0) agreed_signal_ = g_stop_signal != 0 ? int(g_stop_signal) : SIGTERM;
  return agreed_signal_ != 0;
}

Status Trainer::AgreeOnResumedStep() {
  const int n = group_->size();
  if (n == 1) return Status::Ok();
  const std::vector<double> steps =
      ValueOfEachRank(*group_, static_cast<double>(progress_.step), device_);
  for (int r = 1; r < n; ++r) {
    if (steps[r] != steps[0]) {
      return Status::FailedPrecondition(
          "the ranks resumed from different checkpoints: rank 0 from step " +
          std::to_string(std::llround(steps[0])) + ", rank " + std::to_string(r) + " from step " +
          std::to_string(std::llround(steps[r])) +
          " (every rank must see the same run folder: a shared filesystem's stale listing?)");
    }
  }
  return Status::Ok();
}

Status Trainer::Setup() {
  // Device: CUDA when asked or available (the device CUDA_VISIBLE_DEVICES exposes first).
  const bool cuda = torch::cuda::is_available();
  if (train_.device == "cuda" && !cuda) {
    return Status::FailedPrecondition("train.device is 'cuda' but no CUDA device is available");
  }
  ISOFLOP_ASSIGN_OR_RETURN(const RankInfo rank, RankFromEnvironment());
  if (train_.device == "cuda" || (train_.device == "auto" && cuda)) {
    // One GPU per rank on a node: LOCAL_RANK's (launchers that set CUDA_VISIBLE_DEVICES per
    // rank leave one visible device, 0).
    const int visible = static_cast<int>(torch::cuda::device_count());
    device_ = torch::Device(torch::kCUDA, visible > 1 ? rank.local_rank % visible : 0);
    autocast_ = true;
  }
  // On CPU the bytes in tensors are counted from here on (the GPU's allocator counts its own).
  if (!device_.is_cuda()) CountCpuTensorBytes();
  if (rank.world_size > 1) {
    double timeout_s = 60;
    if (const char* t = std::getenv("ISOFLOP_DIST_TIMEOUT_S"); t && std::atof(t) > 0)
      timeout_s = std::atof(t);
    ISOFLOP_ASSIGN_OR_RETURN(
        group_, JoinProcessGroup(rank, device_.is_cuda() ? "cuda" : "cpu",
                                 std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000))));
  }
  threads_ = ResolveThreads(train_.threads);
  torch::set_num_threads(threads_);  // LibTorch's default in C++ is 1 thread

  torch::manual_seed(config_.seed);
  model_ = Transformer(shape_);
  model_->set_activation_checkpointing(train_.activation_checkpointing);
  model_->to(device_);
  if (group_->size() > 1) {
    // Every replica starts from rank 0's weights.
    std::vector<torch::Tensor> state;
    for (auto& p : model_->parameters()) state.push_back(p.data());
    for (auto& b : model_->buffers()) state.push_back(b);
    torch::NoGradGuard no_grad;
    group_->Broadcast(state, 0);
  }

  // AdamW (Loshchilov & Hutter 2019); weight decay on matrices only (dim >= 2), as nanoGPT.
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : model_->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  auto options = torch::optim::AdamWOptions(train_.lr)
                     .betas({train_.beta1, train_.beta2})
                     .eps(train_.eps)
                     .weight_decay(train_.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(options));
  auto no_decay_options = options;
  no_decay_options.weight_decay(0.0);
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(no_decay_options));
  optimizer_ = std::make_unique<torch::optim::AdamW>(groups, options);

  ISOFLOP_ASSIGN_OR_RETURN(data_,
                           OpenTokenSource(config_.data, shape_.seq_len + 1, shape_.vocab_size));
  data_rng_.Seed(config_.data.train_seed.value_or(config_.seed));

  // The fixed held-out set: ceil(eval_tokens / T) windows from the validation stream.
  const int64_t T = shape_.seq_len;
  const int64_t n_val = (train_.eval_tokens + T - 1) / T;
  std::vector<int64_t> buf(n_val * (T + 1));
  Rng val_rng(config_.data.val_seed);
  for (int64_t i = 0; i < n_val; ++i) {
    ISOFLOP_RETURN_IF_ERROR(data_->SampleVal(val_rng, T + 1, &buf[i * (T + 1)]));
  }
  val_set_ = torch::from_blob(buf.data(), {n_val, T + 1}, torch::kInt64).clone();
  return Status::Ok();
}

void Trainer::StartGradientReducer() {
  // Knobs for benchmarks and debugging, like DDP's bucket_cap_mb: the bucket size in MB and
  // ISOFLOP_GRAD_REDUCE=after-backward (all-reduce only once backward is done).
  int64_t bucket_bytes = 25 << 20;
  if (const char* mb = std::getenv("ISOFLOP_BUCKET_MB"); mb && std::atof(mb) > 0)
    bucket_bytes = static_cast<int64_t>(std::atof(mb) * (1 << 20));
  if (const char* m = std::getenv("ISOFLOP_GRAD_REDUCE"); m && std::string(m) == "after-backward")
    overlap_reduce_ = false;
  reducer_ = std::make_unique<GradientReducer>(*group_, model_->parameters(), bucket_bytes,
                                               std::min<int64_t>(bucket_bytes, 1 << 20));
  if (options_.progress && lead()) {
    std::fprintf(stderr, "isoflop-train: %d ranks over %s; gradients in %d buckets, %s\n",
                 group_->size(), group_->backend().c_str(), reducer_->buckets(),
                 overlap_reduce_ ? "all-reduced during backward" : "all-reduced after backward");
  }
}

void Trainer::ReduceMoeStepStats() {
  const auto layers = model_->moe_layers();
  if (layers.empty()) return;
  // One message: every layer's stats tensor, end to end, summed on the device.
  std::vector<torch::Tensor> parts;
  for (const MoeImpl* m : layers) parts.push_back(m->step_stats_tensor());
  std::vector<torch::Tensor> t = {torch::cat(parts)};
  group_->AllReduceSum(t);
  int64_t at = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const int64_t n = parts[i].numel();
    layers[i]->set_step_stats_tensor(t[0].narrow(0, at, n));
    at += n;
  }
}

Status Trainer::LoadCheckpoint(const CheckpointDir& c) {
  // torch::load takes a tensor of any shape: a checkpoint of another model would load and fail
  // at the first forward pass. The shapes are the model's as built, before any load reshaped it.
  if (built_shapes_.empty())
    for (const auto& p : model_->named_parameters())
      built_shapes_.emplace_back(p.key(), p.value().sizes().vec());
  try {
    torch::load(model_, c.path + "/model.pt", device_);
    torch::load(*optimizer_, c.path + "/optimizer.pt", device_);
  } catch (const std::exception& e) {
    return Status::Corrupt(c.path + ": cannot load the checkpoint: " + TorchMessage(e));
  }
  const auto loaded = model_->named_parameters();
  for (const auto& [name, shape] : built_shapes_) {
    const torch::Tensor* t = loaded.find(name);
    if (!t || t->sizes().vec() != shape) {
      return Status::Corrupt(c.path + "/model.pt: parameter " + name + " has shape " +
                             (t ? ShapeString(t->sizes().vec()) : std::string("(none)")) +
                             ", this run's model " + ShapeString(shape) +
                             ": a checkpoint of another model");
    }
  }
  std::ifstream in(c.path + "/state.json");
  const auto j = json::parse(in, nullptr, false);
  const auto field = [&](const char* key) -> const json* {
    auto it = j.is_object() ? j.find(key) : j.end();
    return it == j.end() ? nullptr : &*it;
  };
  const json *step = field("step"), *tokens = field("tokens"), *wall = field("wall_s"),
             *rng = field("rng");
  if (!step || !step->is_number_integer() || !tokens || !tokens->is_number_integer() || !wall ||
      !wall->is_number() || !rng || !rng->is_string()) {
    return Status::Corrupt(c.path +
                           "/state.json: expected integer \"step\" and \"tokens\", number "
                           "\"wall_s\" and string \"rng\"");
  }
  // The step is the folder's, and a run of B-token steps has trained min(step B, D) tokens.
  const int64_t at = step->get<int64_t>(), done = tokens->get<int64_t>();
  const int64_t expect =
      at < 0 || at > train_.tokens ? -1 : std::min(train_.tokens, at * train_.batch_tokens);
  if (at != c.step || done != expect) {
    return Status::Corrupt(c.path + "/state.json: step " + std::to_string(at) + " and tokens " +
                           std::to_string(done) + " do not belong to this folder (step " +
                           std::to_string(c.step) + " of " + std::to_string(train_.batch_tokens) +
                           "-token steps)");
  }
  // The open logging interval (absent from checkpoints written before it was kept: the first
  // line after such a resume averages only the steps since).
  const json *loss_sum = field("interval_loss_sum"), *loss_tokens = field("interval_loss_tokens");
  if ((loss_sum != nullptr) != (loss_tokens != nullptr) ||
      (loss_sum && (!loss_sum->is_number() || !loss_tokens->is_number_integer() ||
                    loss_tokens->get<int64_t>() < 0))) {
    return Status::Corrupt(c.path +
                           "/state.json: \"interval_loss_sum\" (a number) and "
                           "\"interval_loss_tokens\" (an integer >= 0) go together");
  }
  ISOFLOP_RETURN_IF_ERROR(
      data_rng_.FromString(rng->get<std::string>()).WithPrefix(c.path + "/state.json"));
  progress_.step = at;
  progress_.tokens = done;
  progress_.wall_s = wall->get<double>();
  interval_loss_sum_ = loss_sum ? loss_sum->get<double>() : 0;
  interval_loss_tokens_ = loss_sum ? loss_tokens->get<int64_t>() : 0;
  return Status::Ok();
}

Status Trainer::Resume() {
  // The newest checkpoint that loads. Each is complete when committed (DONE), so one that does
  // not load was damaged afterwards (a disk, a person): the one before it still resumes the run,
  // and the damaged one is overwritten when training reaches its step again.
  const auto checkpoints = ListCheckpoints(dir_ + "/ckpt");
  std::string damaged;
  for (auto c = checkpoints.rbegin(); c != checkpoints.rend(); ++c) {
    const Status st = LoadCheckpoint(*c);
    if (st.ok()) break;
    if (lead())
      std::fprintf(stderr, "isoflop-train: %s%s\n", st.message().c_str(),
                   std::next(c) == checkpoints.rend() ? "" : "; trying the one before it");
    damaged += (damaged.empty() ? "" : "; ") + st.message();
    if (std::next(c) == checkpoints.rend()) {
      // The model may hold part of a checkpoint now: no fresh start from it.
      return Status::Corrupt("no checkpoint of " + dir_ + " loads (" + damaged +
                             "); remove its ckpt folder to train it again from the start");
    }
  }
  if (!checkpoints.empty() && options_.progress) {
    std::fprintf(stderr, "isoflop-train: resuming %s from step %lld (%lld tokens)\n", dir_.c_str(),
                 static_cast<long long>(progress_.step), static_cast<long long>(progress_.tokens));
  }
  if (!lead()) return Status::Ok();  // only rank 0 writes the run directory
  // Lines past the checkpoint will be written again (same values on CPU).
  const std::string path = dir_ + "/metrics.jsonl";
  ISOFLOP_ASSIGN_OR_RETURN(MetricsKept kept, TruncateMetrics(path, progress_.step));
  for (const std::string& d : kept.dropped)
    std::fprintf(stderr, "isoflop-train: %s: %s; line dropped\n", path.c_str(), d.c_str());
  // The last line logged at or before the checkpoint's step (every log and eval interval logs;
  // metrics are synced before a checkpoint is written, so a crash cannot lose one).
  const int64_t s = progress_.step, li = train_.log_interval_steps, ei = train_.eval_interval_steps;
  const int64_t logged = std::max(s / li * li, s / ei * ei);
  if (kept.last_step < logged) {
    const std::string have =
        kept.last_step == 0 ? "has no line" : "ends at step " + std::to_string(kept.last_step);
    std::fprintf(stderr,
                 "isoflop-train: %s %s, but the run had logged up to step %lld when it wrote its "
                 "checkpoint at step %lld: the lines it lacks are lost (removed or damaged "
                 "since), and its curve has a gap; remove %s/ckpt to train it again from the "
                 "start\n",
                 path.c_str(), have.c_str(), static_cast<long long>(logged),
                 static_cast<long long>(s), dir_.c_str());
  }
  return metrics_.Open(path);
}

Status Trainer::WriteInfo() const {
  if (!lead()) return Status::Ok();
  InfoFile info;
  info.n_total = accounting::TotalParams(shape_);
  info.n_non_embedding = accounting::NonEmbeddingParams(shape_);
  info.n_active = accounting::ActiveParams(shape_);
  info.n_active_non_embedding = accounting::ActiveNonEmbeddingParams(shape_);
  info.flops_per_token_6n = accounting::FlopsPerToken6N(shape_);
  info.flops_per_token_6n_attn = accounting::FlopsPerToken6NAttention(shape_);
  info.flops_per_token_chinchilla = accounting::FlopsPerTokenChinchilla(shape_);
  info.device = device_.is_cuda() ? "cuda" : "cpu";
  info.precision = autocast_ ? "bf16-autocast" : "fp32";
  info.threads = threads_;
  info.host = HostName();
  info.data_entropy_nats = data_->EntropyNats();
  info.torch_version = TORCH_VERSION;
  accounting::MemoryOptions memory;
  memory.micro_batch = accounting::ForwardBatch(train_.micro_batch, train_.batch_tokens,
                                                shape_.seq_len, group_->size());
  memory.micro_batches = accounting::ForwardPasses(train_.micro_batch, train_.batch_tokens,
                                                   shape_.seq_len, group_->size());
  memory.ranks = group_->size();
  memory.mixed_precision = autocast_;
  memory.activation_checkpointing = train_.activation_checkpointing;
  memory.fused_attention = TORCH_VERSION_MAJOR >= 2;  // AttentionImpl::kAuto
  memory.gpu = device_.is_cuda();
  const accounting::MemoryEstimate estimate = accounting::EstimateMemory(shape_, memory);
  info.memory_estimate_bytes = estimate.total;
  info.memory_estimate_tensor_bytes = estimate.total - estimate.overhead - estimate.runtime;
  return WriteFileAtomic(dir_ + "/info.json", info.ToJson());
}

Result<std::vector<torch::Tensor>> Trainer::NextBatch(int64_t step_tokens) {
  const int64_t T = shape_.seq_len;
  // Full sequences first; a budget that is not a multiple of T ends with one shorter sequence.
  std::vector<int64_t> lengths(step_tokens / T, T);
  if (step_tokens % T != 0) lengths.push_back(step_tokens % T);
  // Data parallel: every rank draws the whole step's windows from the one shared stream (so
  // the step is the single-process step, whatever the world size) and keeps its own
  // contiguous slice of them.
  const size_t n = lengths.size(), W = group_->size(), r = group_->rank();
  const size_t lo = n * r / W, hi = n * (r + 1) / W;
  std::vector<int64_t> skipped(T + 1);
  for (size_t i = 0; i < lo; ++i)
    ISOFLOP_RETURN_IF_ERROR(data_->SampleTrain(data_rng_, int(lengths[i] + 1), skipped.data()));
  std::vector<torch::Tensor> micro_batches;
  for (size_t i = lo; i < hi;) {
    const int64_t len = lengths[i];
    size_t j = i;
    while (j < hi && lengths[j] == len && int64_t(j - i) < train_.micro_batch) ++j;
    const int64_t B = static_cast<int64_t>(j - i);
    std::vector<int64_t> buf(B * (len + 1));
    for (int64_t b = 0; b < B; ++b) {
      ISOFLOP_RETURN_IF_ERROR(
          data_->SampleTrain(data_rng_, static_cast<int>(len + 1), &buf[b * (len + 1)]));
    }
    const torch::Tensor host = torch::from_blob(buf.data(), {B, len + 1}, torch::kInt64);
    // To a GPU from pinned memory without blocking (the caching host allocator keeps the
    // pinned copy alive until the transfer is done); on CPU a copy, since buf goes away.
    micro_batches.push_back(device_.is_cuda() ? host.pin_memory().to(device_, /*non_blocking=*/true)
                                              : host.clone());
    i = j;
  }
  for (size_t i = hi; i < n; ++i)
    ISOFLOP_RETURN_IF_ERROR(data_->SampleTrain(data_rng_, int(lengths[i] + 1), skipped.data()));
  return micro_batches;
}

torch::Tensor Trainer::ForwardBackward(const std::vector<torch::Tensor>& micro_batches,
                                       int64_t step_tokens) {
  const int64_t V = shape_.vocab_size;
  torch::Tensor loss_sum =
      torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device_));
  for (size_t m = 0; m < micro_batches.size(); ++m) {
    const torch::Tensor& tokens = micro_batches[m];  // (B, T+1)
    const int64_t T = tokens.size(1) - 1;
    const auto x = tokens.narrow(1, 0, T), y = tokens.narrow(1, 1, T);  // (B, T)
    torch::Tensor logits;
    {
      CudaAutocast autocast(autocast_);
      logits = model_->forward(x);  // (B, T, V)
    }
    const auto loss = torch::nn::functional::cross_entropy(
        logits.reshape({-1, V}).to(torch::kFloat), y.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    // Each token weighs 1/step_tokens, so accumulation gives the mean over the whole step; the
    // router losses (a mean over this micro-batch's tokens) get their tokens' share of it.
    torch::Tensor objective = loss / static_cast<double>(step_tokens);
    if (const torch::Tensor aux = model_->MoeAuxLoss(); aux.defined()) {
      objective = objective + aux * (static_cast<double>(x.numel()) / step_tokens);
    }
    // Data parallel: the last micro-batch's gradients are final as backward makes them, so
    // each bucket's all-reduce starts while backward goes on through the earlier layers.
    // (Reentrant activation checkpointing reaches parameters only through a nested backward,
    // so the reducer cannot look for unused ones in the graph.)
    if (reducer_ && overlap_reduce_ && m + 1 == micro_batches.size())
      reducer_->Arm(train_.activation_checkpointing ? torch::Tensor() : objective);
    objective.backward();
    loss_sum += loss.detach().to(torch::kDouble);
  }
  // The stop vote rides with the loss: ranks learn of each other's signals without a
  // collective of their own, and every rank reads the sum at the same step.
  torch::Tensor values = torch::stack(
      {loss_sum, torch::full({}, g_stop_signal != 0 ? 1.0 : 0.0, loss_sum.options())});
  if (reducer_) {
    // The step's gradient is the sum of every rank's share (each token weighs 1/step_tokens).
    reducer_->Finish();
    std::vector<torch::Tensor> t = {values};
    group_->AllReduceSum(t);
    values = t[0];
  }
  // (No tensor made from host numbers here: its copy to the GPU would be a blocking one.)
  return torch::stack({values[0] / static_cast<double>(step_tokens), values[1]});
}

std::optional<RunOutcome> Trainer::ReadStep(PendingStep& p, double* loss, double* grad_norm) {
  const double* v = p.values.Get();
  *loss = v[0];
  *grad_norm = v[2];
  interval_loss_sum_ += v[0] * static_cast<double>(p.tokens);
  interval_loss_tokens_ += p.tokens;
  if (group_->size() > 1 && v[1] > 0 && agreed_signal_ == 0)
    agreed_signal_ = g_stop_signal != 0 ? int(g_stop_signal) : SIGTERM;
  std::string what;
  if (!std::isfinite(*loss)) {
    what = "loss is " + std::to_string(*loss);
  } else if (!std::isfinite(*grad_norm)) {
    what = "gradient norm is " + std::to_string(*grad_norm);
  } else {
    return std::nullopt;
  }
  // The status names the last sound step; the weights of later ones are not kept.
  progress_.step = p.step - 1;
  progress_.tokens = p.tokens_before;
  return Finish("diverged", what + " at step " + std::to_string(p.step), kExitDiverged);
}

double Trainer::Evaluate() {
  torch::NoGradGuard no_grad;
  const int64_t V = shape_.vocab_size;
  // Targets at position t have t+1 tokens of context; skip those with fewer than the source's
  // minimum (synthetic: 2, so the floor of this loss is exactly the entropy rate).
  const int64_t skip = data_->MinValContext() - 1;
  // Summed on the device in double (one read at the end), in the same order as on the host.
  torch::Tensor sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device_));
  int64_t count = 0;
  const int64_t n = val_set_.size(0), T = val_set_.size(1) - 1;
  const int64_t chunk = std::max<int64_t>(train_.micro_batch, 1);
  // Data parallel: rank r evaluates chunks r, r + W, ...; the sums are reduced below.
  for (int64_t i = chunk * group_->rank(); i < n; i += chunk * group_->size()) {
    const auto tokens = val_set_.narrow(0, i, std::min(chunk, n - i)).to(device_);  // (B, T+1)
    const auto x = tokens.narrow(1, 0, T), y = tokens.narrow(1, 1, T);
    torch::Tensor logits;
    {
      CudaAutocast autocast(autocast_);
      logits = model_->forward(x);  // (B, T, V)
    }
    auto losses = torch::nn::functional::cross_entropy(
                      logits.reshape({-1, V}).to(torch::kFloat), y.reshape({-1}),
                      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone))
                      .view({-1, T});  // (B, T)
    losses = losses.narrow(1, skip, T - skip);
    sum += losses.to(torch::kDouble).sum();
    count += losses.numel();
  }
  torch::Tensor values = torch::stack({sum, torch::full({}, double(count), sum.options())});
  if (group_->size() > 1) {
    std::vector<torch::Tensor> t = {values};
    group_->AllReduceSum(t);
    values = t[0];
  }
  const torch::Tensor cpu = values.to(torch::kCPU);
  return cpu[0].item<double>() / cpu[1].item<double>();
}

void Trainer::GatherPeakMemory() {
  const std::vector<std::vector<double>> peaks = ValuesOfEachRank(
      *group_,
      {static_cast<double>(PeakMemory(device_).first),
       static_cast<double>(PeakTensorBytes(device_)), static_cast<double>(PeakHostMemory())},
      device_);
  rank_peaks_.clear();
  rank_tensor_peak_ = 0;
  rank_host_peak_ = 0;
  for (const std::vector<double>& of_rank : peaks) {
    rank_peaks_.push_back(static_cast<int64_t>(of_rank[0]));
    rank_tensor_peak_ = std::max(rank_tensor_peak_, static_cast<int64_t>(of_rank[1]));
    rank_host_peak_ = std::max(rank_host_peak_, static_cast<int64_t>(of_rank[2]));
  }
}

// torch::save of `value` (a module or an optimizer) streamed to `path` as it serialises, so a
// checkpoint never sits whole in memory (held in a string stream it was 12 B/parameter more, and
// up to twice that while the stream grew, beside the training state). The writer never reports
// a short write to LibTorch, whose stream writer would throw it from a destructor and abort the
// process on a full disk: the error comes back from Commit, naming the file.
template <typename T>
Status SaveStreamed(const std::string& path, T& value) {
  ISOFLOP_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> writer,
                           AtomicFileWriter::Create(path));
  try {
    torch::save(value, [&writer](const void* data, size_t n) -> size_t {
      writer->Write(data, n);
      return n;
    });
  } catch (const std::exception& e) {
    return Status::Internal("cannot serialise " + path + ": " + TorchMessage(e));
  }
  return writer->Commit();
}

Status Trainer::SaveCheckpoint() {
  if (!lead()) return Status::Ok();  // every replica holds the same state: rank 0 saves it
  const std::string ckpt_dir = dir_ + "/ckpt";
  const json state = {{"step", progress_.step},
                      {"tokens", progress_.tokens},
                      {"wall_s", WallSeconds()},
                      {"rng", data_rng_.ToString()},
                      {"world_size", group_->size()},
                      {"interval_loss_sum", interval_loss_sum_},
                      {"interval_loss_tokens", interval_loss_tokens_}};
  // The metrics lines up to this step reach the disk before the checkpoint that resumes after
  // them does: a node that dies after the commit (page cache lost) must not leave a run that
  // resumes past lines nobody has read.
  ISOFLOP_RETURN_IF_ERROR(metrics_.Sync());
  ISOFLOP_ASSIGN_OR_RETURN(std::string tmp, BeginCheckpoint(ckpt_dir, progress_.step));
  Status st = SaveStreamed(tmp + "/model.pt", model_);
  if (st.ok()) st = SaveStreamed(tmp + "/optimizer.pt", *optimizer_);
  if (st.ok()) st = WriteFileAtomic(tmp + "/state.json", state.dump() + "\n");
  if (st.ok()) st = CommitCheckpoint(tmp, ckpt_dir, progress_.step).status();
  if (!st.ok()) {
    std::error_code ec;
    fs::remove_all(tmp, ec);  // never leave a half-written checkpoint behind
    return st.WithPrefix("saving the checkpoint of step " + std::to_string(progress_.step));
  }
  return Status::Ok();
}

Status Trainer::LogMetrics(double train_loss, double val_loss, double lr, double grad_norm,
                           double tokens_per_s, std::vector<std::pair<std::string, double>> extra) {
  if (!lead()) return Status::Ok();
  MetricsLine line;
  line.extra = std::move(extra);
  line.step = progress_.step;
  line.tokens = progress_.tokens;
  line.flops = static_cast<double>(progress_.tokens) * accounting::FlopsPerToken6N(shape_);
  line.train_loss = train_loss;
  line.val_loss = val_loss;
  line.lr = lr;
  line.grad_norm = grad_norm;
  line.tokens_per_s = tokens_per_s;
  line.wall_s = WallSeconds();
  return metrics_.Append(line.ToJson());
}

RunOutcome Trainer::Finish(std::string state, std::string reason, int exit_code) {
  RunOutcome out{std::move(state), std::move(reason), exit_code};
  if (!lead()) {
    if (exit_code != kExitFinished && exit_code != 128 + agreed_signal_) {
      std::fprintf(stderr, "isoflop-train: rank %d: %s: %s\n", group_->rank(), out.state.c_str(),
                   out.reason.c_str());
    }
    return out;
  }
  StatusFile status;
  status.state = out.state;
  status.reason = out.reason;
  status.step = progress_.step;
  status.tokens = progress_.tokens;
  status.final_val_loss = last_val_loss_;
  status.exit_code = exit_code;
  status.wall_s = WallSeconds();
  std::tie(status.peak_memory_bytes, status.peak_memory_of) = PeakMemory(device_);
  status.peak_tensor_bytes = std::max(PeakTensorBytes(device_), rank_tensor_peak_);
  status.peak_host_memory_bytes = std::max(PeakHostMemory(), rank_host_peak_);
  if (!rank_peaks_.empty()) {
    // Rank 0's as of now, the others' as of the last gathering.
    status.peak_memory_by_rank = rank_peaks_;
    status.peak_memory_by_rank[0] = *status.peak_memory_bytes;
    status.peak_memory_bytes =
        *std::max_element(status.peak_memory_by_rank.begin(), status.peak_memory_by_rank.end());
  }
  // Every metrics line is on disk before the verdict that says the run is over.
  if (Status synced = metrics_.Sync(); !synced.ok())
    std::fprintf(stderr, "isoflop-train: %s\n", synced.message().c_str());
  const Status st = WriteFileAtomic(dir_ + "/status.json", status.ToJson());
  if (!st.ok()) std::fprintf(stderr, "isoflop-train: %s\n", st.message().c_str());
  if (options_.progress || exit_code != kExitFinished) {
    std::fprintf(stderr, "isoflop-train: %s%s%s (step %lld, %lld tokens, val_loss %.6f)\n",
                 out.state.c_str(), out.reason.empty() ? "" : ": ", out.reason.c_str(),
                 static_cast<long long>(progress_.step), static_cast<long long>(progress_.tokens),
                 last_val_loss_);
  }
  return out;
}

bool IsOutOfMemory(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) return true;
  const std::string what = e.what();
  // CUDA: "CUDA out of memory"; CPU: c10's DefaultCPUAllocator, "can't allocate memory" (1.13)
  // or "not enough memory" (2.x), both ending in malloc's ENOMEM.
  for (const char* sign : {"out of memory", "DefaultCPUAllocator: can't allocate memory",
                           "DefaultCPUAllocator: not enough memory", "Cannot allocate memory"}) {
    if (what.find(sign) != std::string::npos) return true;
  }
  return false;
}

RunOutcome Trainer::Fail(const std::exception& e) {
  const bool oom = IsOutOfMemory(e);
  const std::string message = TorchMessage(e);
  const std::string reason = oom ? "out of memory: " + message.substr(0, 300)
                                 : "LibTorch error: " + message.substr(0, 500);
  const int code = oom ? kExitOutOfMemory : kExitFailed;
  if (group_->size() == 1) {
    // Before the ranks have met, the environment says which rank this process is.
    const Result<RankInfo> rank = RankFromEnvironment();
    if (rank.ok() && rank->rank != 0) {
      std::fprintf(stderr, "isoflop-train: rank %d: failed: %s\n", rank->rank, reason.c_str());
      return {"failed", reason, code};
    }
  }
  return Finish("failed", reason, code);
}

RunOutcome Trainer::Run() {
  if (Status st = Setup(); !st.ok()) return Finish("failed", st.message(), kExitFailed);
  if (Status st = Resume(); !st.ok()) return Finish("failed", st.message(), kExitFailed);
  if (Status st = AgreeOnResumedStep(); !st.ok())
    return Finish("failed", st.message(), kExitFailed);
  // After Resume: loading a checkpoint into the parameters detaches gradient hooks.
  if (group_->size() > 1) StartGradientReducer();
  if (Status st = WriteInfo(); !st.ok()) return Finish("failed", st.message(), kExitFailed);

  const int64_t total_steps = (train_.tokens + train_.batch_tokens - 1) / train_.batch_tokens;
  auto interval_start = Clock::now();
  int64_t interval_tokens = 0;
  std::optional<PendingStep> pending;  // the last step whose values are still on their way
  (void)AgreedStop();  // a signal during set-up
  while (progress_.tokens < train_.tokens) {
    if (agreed_signal_ != 0) break;
    // Next batch, forward, backward, clip, step, log.
    const int64_t step_tokens = std::min(train_.batch_tokens, train_.tokens - progress_.tokens);
    auto batch = NextBatch(step_tokens);
    if (!batch.ok()) return Finish("failed", batch.status().message(), kExitFailed);
    // Gradients to none, not zero (LibTorch 2's default, not 1.13's): an expert that gets no
    // token in a step then has no gradient and AdamW leaves it alone, whether or not it had one
    // before a resume. With zeroed gradients it would decay only in a run that never restarted.
    model_->zero_grad(/*set_to_none=*/true);
    for (MoeImpl* moe : model_->moe_layers()) moe->ResetStepStats();
    const int64_t step = progress_.step + 1;
    std::optional<PendingStep> current;
    {
      // Nothing from here to the optimizer step reads the device (ISOFLOP_SYNC_CHECK checks).
      SyncCheck no_sync(device_.is_cuda());
      const torch::Tensor loss_votes = ForwardBackward(*batch, step_tokens);
      const torch::Tensor norm = ClipGradNorm(model_->parameters(), train_.grad_clip);
      const double lr = LearningRate(train_, progress_.tokens + step_tokens);
      for (auto& group : optimizer_->param_groups()) {
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      }
      optimizer_->step();
      current.emplace(
          PendingStep{step, progress_.tokens, step_tokens,
                      StepValues(torch::cat({loss_votes, norm.to(torch::kDouble).reshape({1})}))});
    }
    // DeepSeek-V3's selection bias follows the load of the step just taken (every rank's); it
    // is a buffer of the model, so the next checkpoint holds it.
    if (group_->size() > 1) ReduceMoeStepStats();
    for (MoeImpl* moe : model_->moe_layers()) moe->UpdateSelectionBias();
    progress_.step = step;
    progress_.tokens += step_tokens;
    interval_tokens += step_tokens;

    // The previous step's values: this step is queued behind them, so on a GPU they have
    // landed and the device has work while the host checks them.
    double train_loss = NAN, grad_norm = NAN;
    if (pending) {
      if (auto out = ReadStep(*pending, &train_loss, &grad_norm)) return *out;
      pending.reset();
    }
    pending = std::move(current);
    const bool last = progress_.tokens == train_.tokens;
    const bool eval = step % train_.eval_interval_steps == 0 || last;
    const bool log = step % train_.log_interval_steps == 0 || eval;
    const bool ckpt = !last && step % train_.ckpt_interval_steps == 0;
    // One process: a signal is seen at once. Several: through the votes read so far, which
    // every rank has read at the same steps.
    if (group_->size() == 1) agreed_signal_ = g_stop_signal;
    // This step's own values, where the host needs them now: to log them, or to know the
    // weights are sound before evaluating or checkpointing them.
    if (log || ckpt || agreed_signal_ != 0) {
      if (auto out = ReadStep(*pending, &train_loss, &grad_norm)) return *out;
      pending.reset();
    }
    const bool stopping = !last && agreed_signal_ != 0;
    const double lr = LearningRate(train_, progress_.tokens);

    double val_loss = NAN;
    if (eval) {
      val_loss = Evaluate();
      last_val_loss_ = val_loss;
      if (!std::isfinite(val_loss)) {
        return Finish(
            "diverged",
            "validation loss is " + std::to_string(val_loss) + " at step " + std::to_string(step),
            kExitDiverged);
      }
    }
    if (log) {
      // Every step up to this one has been read: the interval's mean is complete.
      train_loss = interval_loss_sum_ / static_cast<double>(interval_loss_tokens_);
      interval_loss_sum_ = 0;
      interval_loss_tokens_ = 0;
      const double seconds = SecondsSince(interval_start);
      const double tokens_per_s = seconds > 0 ? interval_tokens / seconds : 0.0;
      if (Status st = LogMetrics(train_loss, val_loss, lr, grad_norm, tokens_per_s,
                                 MoeStepMetrics(model_->moe_layers()));
          !st.ok()) {
        return Finish("failed", st.message(), kExitFailed);
      }
      if (options_.progress) {
        const double eta = tokens_per_s > 0 ? (train_.tokens - progress_.tokens) / tokens_per_s : 0;
        std::fprintf(stderr,
                     "step %lld/%lld | tokens %lld | loss %.4f%s | lr %.2e | %.0f tok/s | "
                     "ETA %.0fs\n",
                     static_cast<long long>(step), static_cast<long long>(total_steps),
                     static_cast<long long>(progress_.tokens), train_loss,
                     std::isfinite(val_loss) ? (" | val " + std::to_string(val_loss)).c_str() : "",
                     lr, tokens_per_s, eta);
      }
      interval_start = Clock::now();
      interval_tokens = 0;
    }
    if (group_->size() > 1 && (eval || ckpt || stopping)) GatherPeakMemory();
    if (ckpt || stopping) {
      if (Status st = SaveCheckpoint(); !st.ok())
        return Finish("failed", st.message(), kExitFailed);
    }
  }
  if (agreed_signal_ != 0 && progress_.tokens < train_.tokens) {
    // A signal before the first step (or before any checkpoint) still leaves a resumable state.
    if (lead() && (ListCheckpoints(dir_ + "/ckpt").empty() ||
                   ListCheckpoints(dir_ + "/ckpt").back().step != progress_.step)) {
      if (Status st = SaveCheckpoint(); !st.ok())
        return Finish("failed", st.message(), kExitFailed);
    }
    const int sig = agreed_signal_;
    return Finish("preempted",
                  std::string("signal ") + std::to_string(sig) + " (" + strsignal(sig) +
                      "); resumable from step " + std::to_string(progress_.step),
                  128 + sig);
  }
  return Finish("finished", "", kExitFinished);
}

}  // namespace

void InstallStopSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigset_t stop;
  sigemptyset(&stop);
  for (int sig : {SIGTERM, SIGINT, SIGUSR2}) {
    sigaction(sig, &sa, nullptr);
    sigaddset(&stop, sig);
  }
  // The sweep manager starts workers with these signals blocked, so one that arrives while
  // LibTorch loads stays pending instead of killing the process before it can record its
  // state; now that the handler is in place it is delivered (and sets the flag).
  sigprocmask(SIG_UNBLOCK, &stop, nullptr);
}

int PendingStopSignal() { return g_stop_signal; }

RunOutcome RunTraining(const std::string& run_dir, const RunConfig& config,
                       const TrainOptions& options) {
  Trainer trainer(run_dir, config, options);
  try {
    return trainer.Run();
  } catch (const std::exception& e) {
    return trainer.Fail(e);
  }
}

}  // namespace isoflop::trainer
