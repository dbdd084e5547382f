// A small seeded random generator whose whole state is four integers, so checkpoints can save
// and restore it exactly (xoshiro256**, Blackman & Vigna 2018; seeded through splitmix64).
// Not thread-safe: one generator per stream.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "isoflop/common/status.h"

namespace isoflop::trainer {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { Seed(seed); }

  void Seed(uint64_t seed) {
    for (auto& s : state_) {
      seed += 0x9e3779b97f4a7c15ULL;  // splitmix64
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      s = z ^ (z >> 31);
    }
  }

  uint64_t Next() {
    const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n), n >= 1 (Lemire's multiply-shift; bias < n / 2^64).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }

  // "s0 s1 s2 s3" in decimal; FromString returns Corrupt on anything else.
  std::string ToString() const {
    return std::to_string(state_[0]) + " " + std::to_string(state_[1]) + " " +
           std::to_string(state_[2]) + " " + std::to_string(state_[3]);
  }
  Status FromString(const std::string& s) {
    std::array<uint64_t, 4> st{};
    size_t pos = 0;
    for (auto& v : st) {
      size_t used = 0;
      try {
        v = std::stoull(s.substr(pos), &used);
      } catch (...) {
        return Status::Corrupt("bad RNG state '" + s + "'");
      }
      pos += used;
    }
    state_ = st;
    return Status::Ok();
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::array<uint64_t, 4> state_{};
};

}  // namespace isoflop::trainer
