// Reads (N, D, loss[, G, budget]) observations from a CSV or JSON file, for `isoflop import` and
// `isoflop fit
// --csv`. Columns are found by name (given, or recognised headers); D may be derived from
// a compute column as D = C / (6N) (Hoffmann et al. 2022 convention).
#pragma once

#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/store/store.h"

namespace isoflop::store {

struct CsvColumns {
  // Column names; empty = recognise from the header (case-insensitive):
  //   N: "n", "params", "parameters", "model size", "model_size", "n_params"
  //   D: "d", "tokens", "training tokens", "n_tokens", "data"
  //   C: "c", "flops", "compute", "training flop", "training flops", "training_flops"
  //   loss: "loss", "final_loss", "val_loss", "final loss"
  //   G (optional, MoE granularity, Krajewski et al. 2024): "g", "granularity"
  //   budget (optional, each run's nominal isoFLOP budget in FLOPs): "budget",
  //     "compute_budget", "budget_flops", "isoflop_budget". Without one, a C column beside a
  //     D column whose values repeat (at most half the rows distinct) is taken as the budget:
  //     isoFLOP files record the nominal budget there, and their 6ND differs from it.
  std::string n, d, c, loss, g, budget;
  // "COLUMN=VALUE" conditions (all must hold): only the rows whose COLUMN cell is VALUE are
  // read (one experiment of a file that holds several). An unknown COLUMN is an error.
  std::vector<std::string> where;
  // FLOPs per parameter per token used to derive D from C (C = k·N·D).
  double flops_per_param_token = 6.0;
};

// Returns every data row as an Observation (n, d, c, loss, line; g and budget when the file
// has that column and the row's cell is not empty, as described above: an empty cell is "not
// recorded", what `isoflop export` writes; a non-empty one must be a positive finite number).
// Errors name the file, the line and the
// column: NotFound (missing file), InvalidArgument (no usable header, a missing or non-numeric
// or non-positive value, neither D nor C present, a G or budget column given by name but
// absent). Never
// returns a partial set.
// `notes`, when given, receives warnings a person should see (a text column with a few
// repeated values: the file may mix experiments, take one with --where).
Result<std::vector<Observation>> ReadObservationsCsv(const std::string& path,
                                                     const CsvColumns& columns = {},
                                                     std::vector<std::string>* notes = nullptr);

// The same from a CSV file or a JSON file: a JSON array of objects, or JSON lines (one object
// per line), recognised by the extension (.json, .jsonl, .ndjson) or a first character '[' or
// '{'. Object keys are the columns (numbers or numeric strings; null = empty). Errors as above,
// naming "FILE:LINE" (CSV, JSON lines) or "FILE: object K" (array), and "not valid JSON".
Result<std::vector<Observation>> ReadObservations(const std::string& path,
                                                  const CsvColumns& columns = {},
                                                  std::vector<std::string>* notes = nullptr);

}  // namespace isoflop::store
