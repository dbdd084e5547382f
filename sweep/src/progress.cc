// The live progress display of `isoflop sweep run`.
#include "isoflop/sweep/progress.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

namespace isoflop::sweep {
namespace {

double Now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string Line(const RunView& r) {
  char buf[256];
  if (!r.queued.empty()) {
    std::snprintf(buf, sizeof(buf), "  %s C=%.2g %-10s queued: %s", r.key.substr(0, 8).c_str(),
                  r.budget, r.shape.c_str(), r.queued.c_str());
    return buf;
  }
  const double frac =
      r.tokens_target > 0 ? std::min(1.0, double(r.tokens_done) / r.tokens_target) : 0.0;
  const int width = 20, filled = static_cast<int>(frac * width);
  std::string bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
  std::string loss = r.loss ? std::to_string(*r.loss).substr(0, 6) : "-";
  std::string eta = "-";
  if (r.tokens_per_s && *r.tokens_per_s > 0) {
    eta = ProgressDisplay::Duration((r.tokens_target - r.tokens_done) / *r.tokens_per_s);
  }
  std::snprintf(buf, sizeof(buf),
                "  %s C=%.2g %-10s %s %3.0f%% %.3g/%.3g tok  loss %s  %.0f tok/s  eta %s",
                r.key.substr(0, 8).c_str(), r.budget, r.shape.c_str(), bar.c_str(), 100 * frac,
                double(r.tokens_done), double(r.tokens_target), loss.c_str(),
                r.tokens_per_s.value_or(0.0), eta.c_str());
  return buf;
}

}  // namespace

std::string ProgressDisplay::Duration(double s) {
  if (!std::isfinite(s) || s < 0) return "-";
  char buf[32];
  const long t = std::lround(s);
  if (t >= 3600)
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof(buf), "%lds", t);
  return buf;
}

void ProgressDisplay::Erase() {
  if (!live_ || drawn_lines_ == 0) return;
  out_ << "\r\033[" << drawn_lines_ << "A\033[J";
  drawn_lines_ = 0;
}

void ProgressDisplay::Event(const std::string& line) {
  Erase();
  out_ << line << "\n" << std::flush;
  if (live_) last_draw_ = -1e9;  // redraw the block at the next update
}

void ProgressDisplay::Update(const std::vector<RunView>& runs, int done, int total,
                             double eta_seconds) {
  const double now = Now();
  size_t queued = 0;
  for (const auto& r : runs) queued += !r.queued.empty();
  const std::pair<size_t, size_t> counts{runs.size() - queued, queued};
  // A log (not live) gets a block every 30 s, and at once when jobs start or leave the queue.
  if (now - last_draw_ < (live_ ? 0.5 : 30.0) && (live_ || counts == last_counts_)) return;
  last_draw_ = now;
  last_counts_ = counts;
  Erase();
  out_ << "sweep: " << done << "/" << total << " cells done, " << counts.first << " running, "
       << (queued > 0 ? std::to_string(queued) + " queued, " : "") << "eta "
       << Duration(eta_seconds) << "\n";
  for (const auto& r : runs) out_ << Line(r) << "\n";
  out_ << std::flush;
  if (live_) drawn_lines_ = 1 + static_cast<int>(runs.size());
}

void ProgressDisplay::Close() { Erase(); }

}  // namespace isoflop::sweep
