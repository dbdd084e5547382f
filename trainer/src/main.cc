// isoflop-train: the worker binary. `isoflop-train --run-dir DIR` runs DIR/run.json; the
// standalone form `isoflop-train --out DIR --n-layer 2 ... --tokens 2e6 --data synthetic`
// writes DIR/run.json from flags, then runs it. Exit codes: docs/run-protocol.md.
// This file does not include LibTorch (fast to compile); the loop lives in train_loop.cc.
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "isoflop/common/files.h"
#include "isoflop/common/help.h"
#include "isoflop/common/process.h"
#include "isoflop/common/subprocess.h"
#include "isoflop/trainer/run_config.h"
#include "isoflop/trainer/run_dir.h"
#include "isoflop/trainer/train_loop.h"

namespace {

namespace fs = std::filesystem;
using isoflop::Status;
using namespace isoflop::trainer;

// Flags of the standalone form. Every default is run.json's own (RunConfig, the one
// definition): numbers bind to its fields, enumerations and data files go in as text and meet
// run.json's parser like any run.json would.
struct StandaloneFlags {
  RunConfig run;
  std::string norm = isoflop::accounting::ToString(run.model.norm);
  std::string pos = isoflop::accounting::ToString(run.model.pos);
  std::string mlp = isoflop::accounting::ToString(run.model.mlp);
  std::string schedule = ToString(run.train.schedule);
  bool untie = false;
  // MoE: --n-experts > 0 makes the model family "moe"; the other fields keep MoeShape's
  // defaults unless given.
  isoflop::accounting::MoeShape moe = [] {
    isoflop::accounting::MoeShape m;
    m.n_experts = 0;
    return m;
  }();
  std::string router = isoflop::accounting::ToString(moe.router);
  std::string data = "synthetic";
  std::string language = "markov";  // synthetic: markov | skills (run.json data.language)
  double skill_zipf = 0;            // skills: 0 = the protocol's default
  std::vector<std::string> data_paths, val_paths;
  double tokens = 0;  // a double so that 2e6 is accepted; the parser checks it is whole
  double warmup_tokens = 0;  // likewise
};

std::string BuildRunJson(const StandaloneFlags& f) {
  nlohmann::json j = nlohmann::json::parse(RunConfigToJson(f.run));
  j["model"]["norm"] = f.norm;
  j["model"]["pos"] = f.pos;
  j["model"]["mlp"] = f.mlp;
  if (f.untie) j["model"]["tie_embeddings"] = false;
  if (f.moe.n_experts != 0) {  // a negative count meets the parser's error
    isoflop::accounting::Shape with_moe = f.run.model;
    with_moe.moe = f.moe;
    j["model"]["family"] = "moe";
    j["model"]["moe"] = ModelToJson("moe", with_moe)["moe"];
    j["model"]["moe"]["router"] = f.router;
  }
  j["train"]["schedule"] = f.schedule;
  j["train"]["tokens"] = f.tokens;
  j["train"]["warmup_tokens"] = f.warmup_tokens;
  nlohmann::json data = {{"source", f.data}};
  if (f.data == "synthetic") {
    data["vocab"] = f.run.model.vocab_size;
    data["build_seed"] = f.run.data.build_seed;
    // Written only when asked for, so markov runs keep the run.json they always had; a value
    // that is no language, or skill_zipf with markov, meets the parser's error naming the field.
    if (f.language != "markov") data["language"] = f.language;
    if (f.skill_zipf != 0) data["skill_zipf"] = f.skill_zipf;
  } else if (f.data == "text") {
    data["paths"] = f.data_paths;
  } else if (f.data == "bin") {
    data["train"] = f.data_paths.empty() ? "" : f.data_paths[0];
    data["val"] = f.val_paths.empty() ? "" : f.val_paths[0];
  } else if (f.data == "llmc") {
    data["train"] = f.data_paths;
    data["val"] = f.val_paths;
  }
  j["data"] = data;
  return j.dump();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Makes this process receive SIGTERM when its parent dies (e.g. a SIGKILLed sweep manager), so
// an orphaned worker checkpoints and stops instead of training on unobserved.
void StopWithParent() {
  const pid_t parent = ::getppid();
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) std::raise(SIGTERM);  // the parent died before prctl
}

// The standalone form's OUT/run.json: written, or found equal (a resume). 0, or the exit code.
int WriteStandaloneRunJson(const std::string& out_dir, const std::string& run_json) {
  const std::string path = out_dir + "/run.json";
  if (fs::exists(path) && ReadFile(path) != run_json) {
    std::fprintf(stderr,
                 "isoflop-train: %s exists with a different config; resume it with "
                 "--run-dir %s or choose a new --out\n",
                 path.c_str(), out_dir.c_str());
    return kExitBadConfig;
  }
  if (Status st = WriteFileAtomic(path, run_json); !st.ok()) {
    std::fprintf(stderr, "isoflop-train: %s\n", st.message().c_str());
    return kExitFailed;
  }
  return 0;
}

// ---- --nproc N: this process starts N ranks of itself and supervises them ----------------

volatile std::sig_atomic_t g_launcher_signal = 0;
extern "C" void OnLauncherSignal(int sig) { g_launcher_signal = sig; }

// Runs `args` (this binary's own arguments without --nproc) as `nproc` ranks with torchrun's
// variables set, forwards stop signals to all of them, and returns rank 0's exit code. A rank
// killed by a signal (SIGKILL, a crash) takes the others down at once: they are killed rather
// than left waiting for the collective timeout, and status.json says which rank died (the run
// resumes from its last checkpoint).
int RunRanks(int nproc, const std::vector<std::string>& args, const std::string& run_dir) {
  struct sigaction sa {};
  sa.sa_handler = OnLauncherSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGUSR2}) sigaction(sig, &sa, nullptr);
  sigset_t stop;
  sigemptyset(&stop);
  for (int sig : {SIGTERM, SIGINT, SIGUSR2}) sigaddset(&stop, sig);
  sigprocmask(SIG_UNBLOCK, &stop, nullptr);
  StopWithParent();

  const int port = isoflop::FreeLoopbackPort();
  std::vector<std::string> base_env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (key == "RANK" || key == "WORLD_SIZE" || key == "LOCAL_RANK" || key == "LOCAL_WORLD_SIZE" ||
        key == "MASTER_ADDR" || key == "MASTER_PORT")
      continue;
    base_env.push_back(kv);
  }
  std::vector<pid_t> pids(nproc, -1);
  for (int r = 0; r < nproc; ++r) {
    isoflop::SpawnOptions o;
    o.env = base_env;
    o.env->push_back("RANK=" + std::to_string(r));
    o.env->push_back("LOCAL_RANK=" + std::to_string(r));
    o.env->push_back("WORLD_SIZE=" + std::to_string(nproc));
    o.env->push_back("LOCAL_WORLD_SIZE=" + std::to_string(nproc));
    o.env->push_back("MASTER_ADDR=127.0.0.1");
    o.env->push_back("MASTER_PORT=" + std::to_string(port));
    o.die_with_parent = true;
    o.blocked_signals = {SIGTERM, SIGINT, SIGUSR2};  // held until the rank's handlers are in
    std::vector<std::string> argv = {"/proc/self/exe"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto pid = isoflop::Spawn(argv, o);
    if (!pid.ok()) {
      std::fprintf(stderr, "isoflop-train: cannot start rank %d: %s\n", r,
                   pid.status().message().c_str());
      for (pid_t p : pids)
        if (p > 0) ::kill(p, SIGKILL);
      return kExitFailed;
    }
    pids[r] = *pid;
  }
  int forwarded = 0, rank0_code = -1, live = nproc;
  std::string death;  // "rank 1 was killed by signal 9"
  std::vector<int> codes(nproc, -1);
  auto kill_all = [&](int sig) {
    for (int r = 0; r < nproc; ++r)
      if (codes[r] < 0) ::kill(pids[r], sig);
  };
  while (live > 0) {
    if (g_launcher_signal != 0 && g_launcher_signal != forwarded) {
      forwarded = g_launcher_signal;
      kill_all(forwarded);
    }
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, 0);
    if (done < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int r = 0; r < nproc; ++r) {
      if (pids[r] != done) continue;
      --live;
      codes[r] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (r == 0) rank0_code = codes[r];
      if (WIFSIGNALED(status) && death.empty() && WTERMSIG(status) != forwarded) {
        death = "rank " + std::to_string(r) + " of " + std::to_string(nproc) +
                " was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
                strsignal(WTERMSIG(status)) + ")";
        kill_all(SIGKILL);  // the others would wait for it until the collective timeout
      }
    }
  }
  if (!death.empty()) {
    // Rank 0 wrote "finished" before a rank died (in teardown: a process group's destructor,
    // an exit handler): every step, metric and the verdict are in; the run stands finished.
    if (auto done = StatusFile::Parse(ReadFile(run_dir + "/status.json"));
        done.ok() && done->state == "finished") {
      std::fprintf(stderr, "isoflop-train: %s after the run finished; it stands finished\n",
                   death.c_str());
      return kExitFinished;
    }
    StatusFile st;
    st.state = "failed";
    st.reason = death + "; the other ranks were stopped; the run resumes from its last checkpoint";
    st.exit_code = kExitFailed;
    (void)isoflop::WriteFileAtomic(run_dir + "/status.json", st.ToJson());
    std::fprintf(stderr, "isoflop-train: failed: %s\n", st.reason.c_str());
    return kExitFailed;
  }
  return rank0_code < 0 ? kExitFailed : rank0_code;
}

// Test hook: ISOFLOP_TEST_KILL_AT_EXIT=R makes rank R kill itself (SIGKILL) once its run is over
// and rank 0's status.json is written, as a crash in a process group's teardown would, so that
// what becomes of a finished run killed at exit is tested deterministically.
void KillAtExitIfAsked(const std::string& run_dir, int rank) {
  const char* v = std::getenv("ISOFLOP_TEST_KILL_AT_EXIT");
  if (v == nullptr || *v == '\0' || std::atoi(v) != rank) return;
  for (int i = 0; i < 3000 && !fs::exists(run_dir + "/status.json"); ++i) ::usleep(10000);
  ::raise(SIGKILL);
}

}  // namespace

static int Main(int argc, char** argv) {
  CLI::App app{
      "isoflop-train: one LibTorch training run over a run directory (docs/run-protocol.md).\n"
      "Exit codes: 0 finished, 1 failed, 2 bad config, 3 diverged, 4 busy (another worker owns\n"
      "the run directory), 5 out of memory, 128+signal preempted."};
  isoflop::UseHelpFormatter(app);
  std::string run_dir, out_dir;
  bool quiet = false;
  StandaloneFlags f;
  auto* run_opt =
      app.add_option("--run-dir", run_dir, "Run directory holding run.json")->type_name("DIR");
  auto* out_opt =
      app.add_option("--out", out_dir, "Standalone: write DIR/run.json from flags, then run it")
          ->type_name("DIR")
          ->excludes(run_opt);
  app.add_flag("--quiet", quiet, "No progress lines on stderr");
  int nproc = 1;
  app.add_option("--nproc", nproc,
                 "Data parallel: start N ranks of this run on this machine (Gloo on CPU, NCCL on "
                 "GPU), as torchrun --nproc-per-node N would")
      ->check(CLI::Range(1, 1024));
  const std::string g = "Standalone run (with --out)";
  app.add_option("--name", f.run.name, "Free-text run name")->group(g);
  app.add_option("--seed", f.run.seed, "Model init and data RNG seed")->group(g);
  app.add_option("--n-layer", f.run.model.n_layer, "Transformer blocks")->group(g);
  app.add_option("--d-model", f.run.model.d_model, "Residual width")->group(g);
  app.add_option("--n-head", f.run.model.n_head, "Attention heads")->group(g);
  app.add_option("--d-ff", f.run.model.d_ff, "MLP width (0 = default)")->group(g);
  app.add_option("--vocab-size", f.run.model.vocab_size, "Vocabulary (synthetic: its vocab too)")
      ->group(g);
  app.add_option("--seq-len", f.run.model.seq_len, "Context length")->group(g);
  app.add_option("--norm", f.norm, "rmsnorm | layernorm")->group(g);
  app.add_option("--pos", f.pos, "rope | alibi | learned")->group(g);
  app.add_option("--mlp", f.mlp, "swiglu | gelu")->group(g);
  app.add_flag("--untie", f.untie, "Separate output head")->group(g);
  app.add_flag("--bias", f.run.model.bias, "Biases in linear layers and LayerNorm")->group(g);
  const std::string gm = "Mixture of Experts (standalone; --n-experts > 0 sets family moe)";
  app.add_option("--n-experts", f.moe.n_experts, "Routed experts per MoE layer")->group(gm);
  // Every other MoE flag needs --n-experts: given alone it would be silently ignored.
  std::vector<CLI::Option*> moe_opts = {
      app.add_option("--top-k", f.moe.top_k, "Routed experts per token (default 2)"),
      app.add_option("--granularity", f.moe.granularity,
                     "Split experts G ways: expert d_ff / G, top-k x G (0 = off)"),
      app.add_option("--expert-d-ff", f.moe.expert_d_ff, "Expert hidden size (0 = d_ff)"),
      app.add_option("--n-shared-experts", f.moe.n_shared_experts, "Always-on experts"),
      app.add_option("--router", f.router, "softmax | sigmoid"),
      app.add_option("--aux-loss-weight", f.moe.aux_loss_weight,
                     "Switch load-balancing loss weight (default 0.01)"),
      app.add_option("--z-loss-weight", f.moe.z_loss_weight, "Router z-loss weight (default 1e-3)"),
      app.add_option("--bias-update-rate", f.moe.bias_update_rate,
                     "Loss-free balancing bias step per optimizer step (0 = off)"),
      app.add_option("--capacity-factor", f.moe.capacity_factor,
                     "Expert capacity factor (0 = dropless)"),
      app.add_option("--moe-every", f.moe.moe_every,
                     "Every K-th block after the dense ones is MoE"),
      app.add_option("--n-dense-layers", f.moe.n_dense_layers, "First L blocks stay dense")};
  for (CLI::Option* o : moe_opts) o->group(gm);
  app.add_option("--data", f.data, "synthetic | text | bin | llmc")->group(g);
  app.add_option("--data-path", f.data_paths, "text: files; bin: train.bin; llmc: train shards")
      ->type_name("FILE")
      ->group(g);
  app.add_option("--val-path", f.val_paths, "bin: val.bin; llmc: validation shards")
      ->type_name("FILE")
      ->group(g);
  app.add_option("--build-seed", f.run.data.build_seed, "synthetic: the language's seed")->group(g);
  app.add_option("--synthetic-language", f.language,
                 "synthetic: markov (order-2 mixture) | skills (Zipf-distributed skills whose "
                 "loss follows a power law; vocab at least 6; docs/synthetic-data.md)")
      ->group(g);
  app.add_option("--skill-zipf", f.skill_zipf,
                 "skills: exponent s of the skill frequencies p_r ~ r^-s (default 1.4)")
      ->group(g);
  app.add_option("--tokens", f.tokens, "Training tokens D (e.g. 2e6)")->group(g);
  app.add_option("--batch-tokens", f.run.train.batch_tokens, "Tokens per optimizer step")->group(g);
  app.add_option("--micro-batch", f.run.train.micro_batch, "Sequences per forward pass")->group(g);
  app.add_option("--lr", f.run.train.lr, "Peak learning rate")->group(g);
  app.add_option("--min-lr", f.run.train.min_lr, "Final learning rate")->group(g);
  app.add_option("--schedule", f.schedule, "cosine | wsd | constant")->group(g);
  app.add_option("--warmup-frac", f.run.train.warmup_frac, "Warmup fraction of the budget")
      ->group(g);
  app.add_option("--warmup-tokens", f.warmup_tokens,
                 "Warmup in tokens (overrides --warmup-frac when > 0)")
      ->group(g);
  app.add_option("--decay-frac", f.run.train.decay_frac,
                 "wsd: final fraction of the steps spent decaying to --min-lr")
      ->group(g);
  app.add_option("--beta1", f.run.train.beta1, "AdamW beta1")->group(g);
  app.add_option("--beta2", f.run.train.beta2, "AdamW beta2")->group(g);
  app.add_option("--eps", f.run.train.eps, "AdamW epsilon")->group(g);
  app.add_option("--weight-decay", f.run.train.weight_decay, "AdamW weight decay (matrices)")
      ->group(g);
  app.add_option("--grad-clip", f.run.train.grad_clip, "Gradient norm clip (0 = off)")->group(g);
  app.add_option("--eval-interval", f.run.train.eval_interval_steps, "Steps between evaluations")
      ->group(g);
  app.add_option("--eval-tokens", f.run.train.eval_tokens, "Held-out tokens")->group(g);
  app.add_option("--log-interval", f.run.train.log_interval_steps, "Steps between metrics lines")
      ->group(g);
  app.add_option("--ckpt-interval", f.run.train.ckpt_interval_steps, "Steps between checkpoints")
      ->group(g);
  app.add_option("--threads", f.run.train.threads, "CPU threads (0 = all cores)")->group(g);
  app.add_option("--device", f.run.train.device, "auto | cpu | cuda")->group(g);
  app.add_flag("--activation-checkpointing", f.run.train.activation_checkpointing,
               "Recompute each block's activations in the backward pass (less memory)")
      ->group(g);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kExitBadConfig;
  }
  if (f.moe.n_experts == 0) {
    for (const CLI::Option* o : moe_opts) {
      if (o->count() > 0) {
        std::fprintf(stderr, "isoflop-train: %s needs --n-experts N (N > 0)\n",
                     o->get_name().c_str());
        return kExitBadConfig;
      }
    }
  }
  // A data flag the chosen source does not read is a mistake, not something to ignore.
  const auto refuse_data_flag = [&](const char* flag, const char* why) {
    std::fprintf(stderr, "isoflop-train: %s: %s\n", flag, why);
    return kExitBadConfig;
  };
  if (f.data == "synthetic" && !f.data_paths.empty())
    return refuse_data_flag("--data-path",
                            "--data synthetic reads no files (give --data text, "
                            "bin or llmc)");
  if ((f.data == "synthetic" || f.data == "text") && !f.val_paths.empty())
    return refuse_data_flag("--val-path",
                            "only --data bin and llmc read a validation file (text "
                            "holds out val_fraction of its files)");
  if ((f.data == "text" || f.data == "bin" || f.data == "llmc") && f.data_paths.empty())
    return refuse_data_flag("--data-path", f.data == "text" ? "--data text needs its files"
                                           : f.data == "bin"
                                               ? "--data bin needs its train.bin"
                                               : "--data llmc needs its train shards");
  if ((f.data == "bin" || f.data == "llmc") && f.val_paths.empty())
    return refuse_data_flag("--val-path", f.data == "bin" ? "--data bin needs its val.bin"
                                                          : "--data llmc needs its validation "
                                                            "shards");
  if (f.data == "bin" && (f.data_paths.size() > 1 || f.val_paths.size() > 1))
    return refuse_data_flag(f.data_paths.size() > 1 ? "--data-path" : "--val-path",
                            "--data bin reads one train.bin and one val.bin (several shards: "
                            "--data llmc)");
  if (run_dir.empty() && out_dir.empty()) {
    std::fprintf(stderr, "isoflop-train: give --run-dir DIR, or --out DIR with model flags\n%s",
                 app.help().c_str());
    return kExitBadConfig;
  }

  // Standalone flags get exactly run.json's validation (a round trip through its parser),
  // before anything is created.
  std::string standalone_json;
  if (!out_dir.empty()) {
    (void)out_opt;
    auto parsed = ParseRunConfig(BuildRunJson(f));
    if (!parsed.ok()) {
      std::fprintf(stderr, "isoflop-train: %s\n", parsed.status().message().c_str());
      return kExitBadConfig;
    }
    standalone_json = RunConfigToJson(*parsed);
  }

  // Signals first: a stop that was sent while this process was starting (stop signals are
  // blocked until here when a manager launched it) is seen now, before any file is touched.
  InstallStopSignalHandlers();
  StopWithParent();
  if (const int sig = PendingStopSignal(); sig != 0) {
    std::fprintf(stderr, "isoflop-train: stopped by signal %d before starting; nothing touched\n",
                 sig);
    return 128 + sig;
  }
  if (!out_dir.empty()) {
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    run_dir = out_dir;
  }
  const bool launcher = nproc > 1 && std::getenv("WORLD_SIZE") == nullptr;
  if (launcher && !out_dir.empty()) {
    // The ranks run the folder this launcher prepares.
    if (const int rc = WriteStandaloneRunJson(out_dir, standalone_json); rc != 0) return rc;
  }
  if (launcher) {
    std::vector<std::string> args = {"--run-dir", run_dir};
    if (quiet) args.push_back("--quiet");
    return RunRanks(nproc, args, run_dir);
  }
  // Exactly one live worker owns a run directory, from before it resumes until it exits; in a
  // data-parallel run that is rank 0 (the others only read it).
  const char* rank_env = std::getenv("RANK");
  const char* ntasks = std::getenv("SLURM_NTASKS");
  if (rank_env == nullptr && std::getenv("WORLD_SIZE") == nullptr && ntasks &&
      std::atoi(ntasks) > 1)
    rank_env = std::getenv("SLURM_PROCID");  // srun --ntasks=K
  const bool lead = rank_env == nullptr || std::atoi(rank_env) == 0;
  if (!lead) {
    auto config = LoadRunConfig(run_dir + "/run.json");
    if (!config.ok()) {
      std::fprintf(stderr, "isoflop-train: %s\n", config.status().message().c_str());
      return kExitFailed;
    }
    const int code = RunTraining(run_dir, *config, TrainOptions{.progress = false}).exit_code;
    KillAtExitIfAsked(run_dir, std::atoi(rank_env));
    return code;
  }
  auto lock = isoflop::FileLock::TryAcquire(RunDirLockPath(run_dir));
  if (!lock.ok() && lock.status().code() == Status::Code::kFailedPrecondition) {
    std::fprintf(stderr,
                 "isoflop-train: %s: another worker owns this run directory (%s); not touching "
                 "it\n",
                 run_dir.c_str(), lock.status().message().c_str());
    return kExitBusy;
  }
  if (!lock.ok()) {
    std::fprintf(stderr, "isoflop-train: cannot lock the run directory: %s\n",
                 lock.status().message().c_str());
    return kExitFailed;
  }
  if (const int sig = PendingStopSignal(); sig != 0) return 128 + sig;

  if (!out_dir.empty()) {
    if (const int rc = WriteStandaloneRunJson(out_dir, standalone_json); rc != 0) return rc;
  }

  auto config = LoadRunConfig(run_dir + "/run.json");
  if (!config.ok()) {
    std::fprintf(stderr, "isoflop-train: %s\n", config.status().message().c_str());
    return config.status().code() == Status::Code::kInvalidArgument ? kExitBadConfig : kExitFailed;
  }
  const RunOutcome outcome = RunTraining(run_dir, *config, TrainOptions{.progress = !quiet});
  KillAtExitIfAsked(run_dir, 0);
  return outcome.exit_code;
}

// The one error boundary of isoflop-train: anything that escapes (it should not) is an
// internal error with exit code 1, never an abort.
int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "isoflop-train: internal error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "isoflop-train: internal error: unknown exception\n");
  }
  return kExitFailed;
}
