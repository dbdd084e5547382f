// Numbers as people read them in messages and tables: one printf conversion, and byte sizes.
#pragma once

#include <cstdio>
#include <string>

namespace isoflop {

// `v` through one printf conversion ("%.3g", "%.1f"); at most 63 characters.
inline std::string Fmt(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

// "1.5 GiB" from 1 GiB up, else "12 MiB".
inline std::string Bytes(double bytes) {
  if (bytes >= double(1LL << 30)) return Fmt("%.1f GiB", bytes / double(1LL << 30));
  return Fmt("%.0f MiB", bytes / double(1 << 20));
}

}  // namespace isoflop
