// The dashboard's JSON API as a plain function of (path, query parameters): routing, input
// checks and the answer, with no HTTP library in sight, so the HTTP server (server.h) only moves
// bytes. Every number comes from analysis/ (sweep_view.h, curves.h, dataset.h); docs/serve.md
// lists each endpoint and its JSON.
#pragma once

#include <map>
#include <string>

namespace isoflop::serve {

// One answer: an HTTP status, and a body that is always one JSON document (errors are
// {"error": "...", "status": CODE}). Plain value.
struct ApiResponse {
  int status = 200;
  std::string body;
};

// Answers GET `path` (as sent: percent-encoded, starting "/api/"; each segment is decoded after
// splitting, so "a%2Fb" is one name, and refused) with `params` (decoded query
// parameters) from the store at `db_path`, which it opens read-only for this call and closes
// before returning (one connection per request, so concurrent calls share nothing). 400 for a
// malformed parameter or a path-like name ("..", "/", control characters), 404 for an unknown
// endpoint, sweep, observation set, run or fit, 503 when the store cannot be opened, 500 for
// other store errors. Thread-safe.
ApiResponse HandleApi(const std::string& db_path, const std::string& path,
                      const std::multimap<std::string, std::string>& params);

// A response for `status` with `message` as its JSON error body.
ApiResponse ErrorResponse(int status, const std::string& message);

}  // namespace isoflop::serve
