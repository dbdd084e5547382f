// The page's static files (index.html, app.js, style.css and the charting library), embedded
// into the binary at build time from serve/web/ (serve/embed_assets.cmake writes assets.cc), so
// the dashboard needs no network and no files beside the binary.
#pragma once

#include <cstddef>
#include <string_view>

namespace isoflop::serve {

struct Asset {
  std::string_view path;          // URL path, e.g. "/app.js"
  std::string_view content_type;  // e.g. "text/javascript; charset=utf-8"
  std::string_view data;          // the file's bytes
};

// The asset served at `url_path` ("/" is index.html), or nullptr: only these exact paths are
// served, so no request can reach the filesystem.
const Asset* FindAsset(std::string_view url_path);

}  // namespace isoflop::serve
