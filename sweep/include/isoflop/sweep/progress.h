// What the sweep manager shows while it runs: on a terminal, a block redrawn in place with one
// line per active run (progress bar, tokens, loss, tokens/s, ETA) and a sweep total with ETA;
// otherwise plain log lines (events, and a progress line per run every 30 s).
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <ostream>
#include <string>
#include <vector>

namespace isoflop::sweep {

// One active run as displayed. Plain value.
struct RunView {
  std::string key, shape;
  double budget = 0;
  int64_t tokens_done = 0, tokens_target = 0;
  std::optional<double> loss, tokens_per_s;
  std::string queued;  // non-empty: still in the scheduler's queue ("PENDING (Resources)")
};

// Not thread-safe; owned by the manager's loop.
class ProgressDisplay {
 public:
  // `live`: redraw in place with ANSI escapes (use only when `out` is a terminal).
  ProgressDisplay(std::ostream& out, bool live) : out_(out), live_(live) {}

  // A line that stays (run started, finished, failed).
  void Event(const std::string& line);
  // The current state; on a terminal redrawn at most every 0.5 s, otherwise logged every 30 s.
  void Update(const std::vector<RunView>& runs, int done, int total, double eta_seconds);
  // Clears the live block.
  void Close();

  // "1h02m", "3m05s", "42s".
  static std::string Duration(double seconds);

 private:
  void Erase();
  std::ostream& out_;
  bool live_;
  int drawn_lines_ = 0;
  double last_draw_ = -1e9;
  std::pair<size_t, size_t> last_counts_{0, 0};  // (running, queued) when last drawn
};

}  // namespace isoflop::sweep
