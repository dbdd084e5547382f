// `isoflop serve` end to end: the real binary over a real store made by the real binaries (a
// finished `sweep run` of tests/sweep/testdata/tiny.yaml with its fits, and the Chinchilla points
// imported and fitted), asked over real HTTP. Checks each endpoint's JSON, that `optimal` gives
// exactly `isoflop optimal`'s numbers, every 4xx case (unknown names, bad budgets, path
// traversal, other methods), and that a concurrent `sweep run` ingests every row while the
// dashboard polls it (the server only reads).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "e2e_util.h"

namespace isoflop::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kTiny = std::string(ISOFLOP_SOURCE_DIR) + "/tests/sweep/testdata/tiny.yaml";
const std::string kChinchilla =
    std::string(ISOFLOP_DATA_DIR) + "/chinchilla/svg_extracted_data.csv";

// A running `isoflop serve` on any free port; stopped with SIGTERM (which must exit 0).
class Server {
 public:
  Server(const std::string& db, const std::string& dir) : log_(dir + "/serve.log") {
    pid_ = SpawnLogged({Binary("isoflop"), "--db", db, "serve", "--port", "0"}, dir, log_);
    const std::regex re(R"(at http://127\.0\.0\.1:(\d+)/)");
    for (int i = 0; i < 500 && port_ == 0; ++i) {
      std::smatch m;
      const std::string text = Slurp(log_);
      if (std::regex_search(text, m, re))
        port_ = std::stoi(m[1]);
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~Server() {
    if (pid_ > 0) Stop();
  }
  int Stop() {
    kill(pid_, SIGTERM);
    const int code = WaitExit(pid_);
    pid_ = -1;
    return code;
  }
  int port() const { return port_; }
  std::string log() const { return Slurp(log_); }

 private:
  std::string log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

struct Reply {
  int status = 0;
  json body;
  std::string content_type;
};

Reply Get(int port, const std::string& path, const std::string& method = "GET") {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(60, 0);
  httplib::Result r =
      method == "GET" ? cli.Get(path.c_str()) : cli.Post(path.c_str(), "{}", "application/json");
  Reply out;
  if (!r) {
    ADD_FAILURE() << path << ": no response (" << httplib::to_string(r.error()) << ")";
    return out;
  }
  out.status = r->status;
  out.content_type = r->get_header_value("Content-Type");
  out.body = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(out.body.is_discarded()) << path << ": not one JSON document: " << r->body;
  return out;
}

class ServeE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir("serve_e2e"));
    db_ = new std::string(*dir_ + "/s.db");
    auto run = RunCommand({Binary("isoflop"), "--db", *db_, "sweep", "run", kTiny, "--no-plot"}, {},
                          *dir_);
    ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
    auto imp =
        RunCommand({Binary("isoflop"), "--db", *db_, "import", kChinchilla, "--name", "chin"});
    ASSERT_EQ(imp.exit_code, 0) << imp.err;
    auto fit = RunCommand({Binary("isoflop"), "--db", *db_, "fit", "--observations", "chin",
                           "--exclude-top-loss", "5", "--bootstrap", "40", "--method", "all"});
    ASSERT_EQ(fit.exit_code, 0) << fit.out << fit.err;
    server_ = new Server(*db_, *dir_);
    ASSERT_GT(server_->port(), 0) << server_->log();
  }
  static void TearDownTestSuite() {
    delete server_;
    fs::remove_all(*dir_);
  }
  static json CliJson(std::vector<std::string> args) {
    args.insert(args.begin(), {Binary("isoflop"), "--db", *db_});
    auto r = RunCommand(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out);
  }
  static std::string* dir_;
  static std::string* db_;
  static Server* server_;
};
std::string* ServeE2ETest::dir_ = nullptr;
std::string* ServeE2ETest::db_ = nullptr;
Server* ServeE2ETest::server_ = nullptr;

TEST_F(ServeE2ETest, SweepsCellsSeriesAndFitsHaveTheirShapes) {
  const int port = server_->port();
  Reply list = Get(port, "/api/sweeps");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.content_type, "application/json; charset=utf-8");
  ASSERT_EQ(list.body["sweeps"].size(), 1u);
  const json& tiny = list.body["sweeps"][0];
  EXPECT_EQ(tiny["name"], "tiny");
  EXPECT_EQ(tiny["cells"], 6);
  EXPECT_EQ(tiny["by_status"]["finished"], 6);
  EXPECT_EQ(tiny["tokens_done"], tiny["tokens_total"]);
  ASSERT_EQ(list.body["observation_sets"].size(), 1u);
  EXPECT_EQ(list.body["observation_sets"][0]["name"], "chin");
  EXPECT_EQ(list.body["observation_sets"][0]["points"], 245);

  // The cells: what `isoflop sweep status` lists, with progress, rate and no ETA once done.
  const json status = CliJson({"sweep", "status", "tiny", "--format", "json"});
  Reply cells = Get(port, "/api/sweeps/tiny");
  ASSERT_EQ(cells.status, 200);
  ASSERT_EQ(cells.body["cells"].size(), status.size());
  std::set<std::string> want_keys, got_keys;
  for (const auto& row : status) want_keys.insert(row["cell"].get<std::string>());
  for (const auto& c : cells.body["cells"]) {
    got_keys.insert(c["cell"].get<std::string>());
    EXPECT_EQ(c["status"], "finished");
    EXPECT_EQ(c["progress"], 1.0);
    EXPECT_GT(c["tokens_per_s"].get<double>(), 0);
    EXPECT_TRUE(c["eta_s"].is_null());
    EXPECT_GT(c["n_total"].get<int64_t>(), 0);
    EXPECT_GT(c["final_val_loss"].get<double>(), 0);
    EXPECT_EQ(c["shape"].get<std::string>().substr(0, 2), "1x");
  }
  EXPECT_EQ(got_keys, want_keys);
  EXPECT_EQ(cells.body["revision"].get<std::string>().size(), 16u);
  EXPECT_GT(cells.body["newest_fit_id"].get<int64_t>(), 0);

  // Series: one per run, thinned to max_points, ending at the run's last row.
  Reply series = Get(port, "/api/sweeps/tiny/series?max_points=5");
  ASSERT_EQ(series.status, 200);
  ASSERT_EQ(series.body["runs"].size(), 6u);
  for (const auto& r : series.body["runs"]) {
    EXPECT_LE(r["step"].size(), 5u);
    EXPECT_GT(r["rows"].get<int>(), 5);
    EXPECT_EQ(r["tokens"].size(), r["train_loss"].size());
    EXPECT_EQ(r["flops"].size(), r["train_loss"].size());
    Reply one = Get(port, "/api/runs/" + std::to_string(r["run_id"].get<int64_t>()) + "/series");
    ASSERT_EQ(one.status, 200);
    EXPECT_EQ(one.body["rows"], r["rows"]);
    EXPECT_EQ(one.body["step"].back(), r["step"].back());
  }

  // Fits: the sweep run's fits with parameters, and curves from the C++ fit code.
  Reply fits = Get(port, "/api/sweeps/tiny/fits");
  ASSERT_EQ(fits.status, 200);
  ASSERT_GE(fits.body["fits"].size(), 1u);
  EXPECT_TRUE(fits.body["fits"][0]["params"].is_object());
  const json& curves = fits.body["curves"];
  EXPECT_EQ(curves["points"].size(), 6u);
  ASSERT_TRUE(curves["parametric"].is_object()) << curves.dump().substr(0, 500);
  EXPECT_EQ(curves["parametric"]["parametric"]["frontier"]["c"].size(), 200u);
  // tiny.yaml's minima lie outside its sampled sizes, so `sweep run` stores no isoFLOP fit.
  EXPECT_TRUE(curves["isoflop"].is_null());
  EXPECT_TRUE(curves["envelope"].is_object());

  // Observations: the imported set's fits, with the bootstrap band.
  Reply obs = Get(port, "/api/observations/chin/fits");
  ASSERT_EQ(obs.status, 200);
  EXPECT_EQ(obs.body["curves"]["points"].size(), 245u);
  const json& band = obs.body["curves"]["parametric"]["parametric"]["band"];
  ASSERT_TRUE(band.is_object());
  EXPECT_EQ(band["draws_used"], 40);
  EXPECT_EQ(band["n_lo"].size(), 200u);
  // The isoFLOP fit's parabolas, evaluated by the C++ fit code over each budget's sampled N.
  const json& parabolas = obs.body["curves"]["isoflop"]["parabolas"];
  int drawn = 0;
  for (const auto& p : parabolas) {
    if (!p.contains("n")) continue;
    ++drawn;
    EXPECT_EQ(p["n"].size(), 60u);
    EXPECT_EQ(p["loss_n"].size(), 60u);
  }
  EXPECT_GT(drawn, 10);
  Reply sets = Get(port, "/api/observations");
  ASSERT_EQ(sets.status, 200);
  EXPECT_EQ(sets.body["observation_sets"].size(), 1u);
}

TEST_F(ServeE2ETest, OptimalEqualsTheOptimalCommand) {
  const int port = server_->port();
  for (const auto& [flag, name, api, c] :
       {std::tuple{"--sweep", "tiny", "/api/sweeps/tiny/optimal", "8e9"},
        std::tuple{"--observations", "chin", "/api/observations/chin/optimal", "1e24"}}) {
    SCOPED_TRACE(name);
    const json cli = CliJson({"optimal", flag, name, "--compute", c, "--format", "json"});
    Reply a = Get(port, std::string(api) + "?c=" + c);
    ASSERT_EQ(a.status, 200) << a.body.dump();
    EXPECT_EQ(a.body["n"].get<double>(), cli[0]["n_opt"].get<double>());
    EXPECT_EQ(a.body["d"].get<double>(), cli[0]["d_opt"].get<double>());
    EXPECT_EQ(a.body["loss"].get<double>(), cli[0]["loss"].get<double>());
    if (!cli[0]["n_lo"].is_null()) {
      EXPECT_EQ(a.body["ci"]["n"]["lo"].get<double>(), cli[0]["n_lo"].get<double>());
      EXPECT_EQ(a.body["ci"]["d"]["hi"].get<double>(), cli[0]["d_hi"].get<double>());
    }
  }
}

TEST_F(ServeE2ETest, BadRequestsGetA4xxJsonError) {
  const int port = server_->port();
  struct Case {
    std::string path;
    int status;
    std::string in_error;
  };
  const Case cases[] = {
      {"/api/sweeps/nope", 404, "no sweep named 'nope'"},
      {"/api/sweeps/nope/fits", 404, "no sweep named 'nope'"},
      {"/api/sweeps/nope/series", 404, "no sweep named 'nope'"},
      {"/api/observations/nope/fits", 404, "no observation set named 'nope'"},
      {"/api/observations/nope/optimal?c=1e21", 404, "no parametric fit"},
      {"/api/sweeps/tiny/optimal", 400, "c: give the budget"},
      {"/api/sweeps/tiny/optimal?c=abc", 400, "'abc' is not a positive number"},
      {"/api/sweeps/tiny/optimal?c=-1e21", 400, "not a positive number"},
      {"/api/sweeps/tiny/optimal?c=1e999", 400, "not a positive number"},
      {"/api/sweeps/tiny/optimal?c=0", 400, "not a positive number"},
      {"/api/sweeps/tiny/series?max_points=1", 400, "max_points"},
      {"/api/sweeps/tiny/series?max_points=ten", 400, "max_points"},
      {"/api/runs/0/series", 400, "not a run id"},
      {"/api/runs/x/series", 400, "not a run id"},
      {"/api/runs/999999/series", 404, "no run with id 999999"},
      {"/api/sweeps/..%2F..%2Fetc%2Fpasswd", 400, "path"},
      {"/api/sweeps/tiny/..%2F..%2Fsecret", 400, "path"},
      {"/api/sweeps/..", 400, "'..' segments are refused"},
      {"/api/observations/a%5Cb/fits", 400, "path-like"},
      {"/api/sweeps/a%00b", 400, "control characters"},
      {"/api/sweeps/a%2Fb", 400, "path-like"},
      {"/api/sweeps/%2e%2e", 400, "'..' segments are refused"},
      {"/api/sweeps/a%2", 400, "malformed %-escape"},
      {"/api/nope", 404, "no such endpoint"},
      {"/api/sweeps/tiny/nope", 404, "no such endpoint"},
      {"/../../../../etc/passwd", 404, "no such page"},
      {"/%2e%2e/%2e%2e/etc/passwd", 404, "no such page"},
      {"/app.js/../../etc/passwd", 404, "no such page"},
      {"/etc/passwd", 404, "no such page"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path);
    Reply r = Get(port, c.path);
    EXPECT_EQ(r.status, c.status) << r.body.dump();
    EXPECT_EQ(r.body["status"], c.status);
    EXPECT_NE(r.body["error"].get<std::string>().find(c.in_error), std::string::npos)
        << r.body.dump();
  }
  Reply post = Get(port, "/api/sweeps", "POST");
  EXPECT_EQ(post.status, 404);
  EXPECT_NE(post.body["error"].get<std::string>().find("GET only"), std::string::npos);
  // The page itself is served, from the binary.
  httplib::Client cli("127.0.0.1", port);
  auto page = cli.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<script src=\"/app.js\""), std::string::npos);
  auto chart = cli.Get("/vendor/chart.umd.min.js");
  ASSERT_TRUE(chart);
  EXPECT_EQ(chart->status, 200);
  EXPECT_GT(chart->body.size(), 100000u);
}

// A second sweep runs (a real manager ingesting real runs) while the dashboard polls it every
// 50 ms: every poll answers, progress is seen mid-run, and the manager finishes with every row.
// Deterministic: one trainer is held (SIGSTOP) after its first checkpoint, and the dashboard must
// show that cell running part-way before it is let go.
TEST_F(ServeE2ETest, ConcurrentSweepRunKeepsWritingWhileTheDashboardPolls) {
  const int port = server_->port();
  const std::string live_dir = *dir_ + "/live";
  const std::string runs = live_dir + "/runs/live";
  fs::create_directories(live_dir);
  const pid_t manager = SpawnLogged({Binary("isoflop"), "--db", *db_, "sweep", "run", kTiny, "--set",
                               "name=live", "--set", "budgets=[2e9]", "--no-fit", "--no-plot"},
                              live_dir, live_dir + "/manager.log");
  std::set<std::string> states_seen;
  int polls = 0, answered = 0, not_planned = 0;
  // One poll of the sweep's cells; its body, or null before the sweep is planned.
  auto poll = [&]() -> json {
    ++polls;
    Reply r = Get(port, "/api/sweeps/live");
    if (r.status == 404) {
      ++not_planned;
      return json();
    }
    EXPECT_EQ(r.status, 200) << r.body.dump();
    ++answered;
    for (const auto& c : r.body["cells"]) {
      states_seen.insert(c["status"].get<std::string>());
      if (c["status"] == "running" && !c["eta_s"].is_null()) {
        EXPECT_GE(c["eta_s"].get<double>(), 0);
      }
    }
    if (polls % 5 == 0) {
      EXPECT_EQ(Get(port, "/api/sweeps/live/series").status, 200);
    }
    return r.body;
  };
  // Hold a trainer that has checkpointed and not finished.
  pid_t held = 0;
  std::string held_cell;
  ASSERT_TRUE(WaitFor(
      [&] {
        poll();
        std::error_code ec;
        for (const auto& run : fs::directory_iterator(runs, ec)) {
          bool ckpt = false;
          for (const auto& c : fs::directory_iterator(run.path() / "ckpt", ec))
            ckpt = ckpt || fs::exists(c.path() / "DONE");
          if (!ckpt || fs::exists(run.path() / "status.json")) continue;
          const pid_t pid = std::atoi(Slurp(run.path() / ".lock").c_str());
          if (pid <= 0 || kill(pid, SIGSTOP) != 0) continue;
          if (fs::exists(run.path() / "status.json")) {  // finished just before the stop
            kill(pid, SIGCONT);
            continue;
          }
          held = pid;
          held_cell = run.path().filename().string();
          return true;
        }
        return false;
      },
      120))
      << Slurp(live_dir + "/manager.log");
  // While it is held, the dashboard shows its cell running, part-way (what was ingested).
  json mid;
  const bool seen_mid = WaitFor(
      [&] {
        const json body = poll();
        if (body.is_null()) return false;
        for (const auto& c : body["cells"]) {
          if (c["cell"] == held_cell && c["status"] == "running" && c["tokens_done"] > 0 &&
              c["tokens_done"] < c["tokens_target"]) {
            mid = c;
            return true;
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return false;
      },
      60);
  kill(held, SIGCONT);
  EXPECT_TRUE(seen_mid) << "progress of the held cell " << held_cell << " never showed";
  EXPECT_TRUE(mid.is_null() || !mid["progress"].is_null()) << mid.dump();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  int status = 0;
  while (waitpid(manager, &status, WNOHANG) == 0 && std::chrono::steady_clock::now() < deadline) {
    poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << Slurp(live_dir + "/manager.log");
  EXPECT_EQ(answered + not_planned, polls) << "every poll answered";
  EXPECT_GT(answered, 3);
  EXPECT_TRUE(states_seen.count("running"));

  // Every metric row landed: the store's rows equal each finished run's log steps.
  Reply cells = Get(port, "/api/sweeps/live");
  ASSERT_EQ(cells.body["cells"].size(), 3u);
  for (const auto& c : cells.body["cells"]) {
    EXPECT_EQ(c["status"], "finished") << c.dump();
    EXPECT_EQ(c["tokens_done"], c["tokens_target"]);
    Reply s = Get(port, "/api/runs/" + std::to_string(c["run_id"].get<int64_t>()) + "/series");
    const int64_t last_step = (c["tokens_target"].get<int64_t>() + 255) / 256;
    EXPECT_EQ(s.body["rows"].get<int64_t>(), last_step / 2 + last_step % 2) << c.dump();
  }
}

TEST_F(ServeE2ETest, ASecondServerOnTheSamePortFailsToBind) {
  auto second = RunCommand(
      {Binary("isoflop"), "--db", *db_, "serve", "--port", std::to_string(server_->port())});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("cannot bind 127.0.0.1:" + std::to_string(server_->port())),
            std::string::npos)
      << second.err;
}

TEST_F(ServeE2ETest, ZZStopsCleanlyOnSigterm) {
  EXPECT_EQ(server_->Stop(), 0) << server_->log();
  EXPECT_NE(server_->log().find("stopped"), std::string::npos);
}

TEST(ServeCliTest, RefusesAMissingStoreAndWarnsOffLoopback) {
  const std::string dir = TempDir("serve_cli");
  auto missing = RunCommand({Binary("isoflop"), "--db", dir + "/none.db", "serve", "--port", "0"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no such store"), std::string::npos) << missing.err;
  auto bad_port =
      RunCommand({Binary("isoflop"), "--db", dir + "/none.db", "serve", "--port", "70000"});
  EXPECT_NE(bad_port.exit_code, 0);
  EXPECT_NE(bad_port.err.find("--port"), std::string::npos) << bad_port.err;

  // 0.0.0.0 is every interface: the warning says who can read the store.
  auto imp =
      RunCommand({Binary("isoflop"), "--db", dir + "/s.db", "import", kChinchilla, "--name", "c"});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  {
    const std::string log = dir + "/wide.log";
    const pid_t pid = SpawnLogged(
        {Binary("isoflop"), "--db", dir + "/s.db", "serve", "--host", "0.0.0.0", "--port", "0"},
        dir, log);
    for (int i = 0; i < 500 && Slurp(log).find("serving") == std::string::npos; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::string text = Slurp(log);
    EXPECT_NE(text.find("warning: serving on 0.0.0.0, not loopback: anyone who can reach port"),
              std::string::npos)
        << text;
    kill(pid, SIGINT);
    EXPECT_EQ(WaitExit(pid), 0);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace isoflop::testing
