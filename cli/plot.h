// Drawing the figures of a sweep or an observation set: `isoflop plot`, and the last step of
// `isoflop sweep run`. Both execute notebooks/scaling_report.ipynb headlessly with Debian's
// Python (nbconvert + nbclient), passing every parameter through the environment. Python runs
// isolated (-I, in the notebook's folder): modules in the caller's folder are never imported.
#pragma once

#include <string>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop::cli {

// What to plot and where. Validate() once at the edge; RunPlot validates again.
struct PlotOptions {
  std::string db_path;       // the store file (required); read only, never written
  std::string sweep;         // plot this sweep's runs and fits, or
  std::string observations;  // this imported observation set's points and fits; both empty =
                             // the store's only sweep or set (an error when it has several)
  std::string out_dir;       // figures, report.html, manifest.json, the executed notebook and
                             // plot.log; empty = ./plots/<source name>
  std::vector<std::string> formats = {"png"};  // figure formats, each png, svg or pdf
  std::string notebook_dir;  // folder of scaling_report.ipynb; empty = FindNotebookDir()
  std::string python;        // interpreter with the Debian packages; empty = $ISOFLOP_PYTHON,
                             // else /usr/bin/python3 (PATH's python3 may lack them)
  int cell_timeout_s = 600;  // nbconvert's per-cell limit: a hung kernel cannot hang a sweep
  bool quiet = false;        // true: print only the report's path and skipped figures

  // InvalidArgument naming the field: no db_path, both sources, an unknown format.
  Status Validate() const;
};

// The folder holding scaling_report.ipynb: $ISOFLOP_NOTEBOOK_DIR, else the source tree's
// notebooks/ (compile definition ISOFLOP_NOTEBOOK_DIR), else <bin>/../share/isoflop/notebooks,
// else <bin>/../../notebooks. NotFound listing the places tried.
Result<std::string> FindNotebookDir();

// Checks that the interpreter runs and imports numpy, pandas, matplotlib, nbclient, nbconvert
// and ipykernel. FailedPrecondition naming the apt packages to install otherwise. Takes 1-2 s.
Status CheckPlotDependencies(const PlotOptions& options);

// Executes the notebook for the chosen source; writes each figure as <out>/<stem>.<format>
// (stems: isoflop_curves, optimal_n_d, loss_contours, training_curves, residuals,
// extrapolation, moe, granularity; figures that do not apply are skipped and the report says
// why), <out>/report.html and <out>/manifest.json, and prints their paths to stdout.
// Errors: InvalidArgument for bad options; NotFound for a missing store, sweep, set or
// notebook; FailedPrecondition for missing Python packages (naming the apt packages);
// Internal when the notebook fails (with its last error line and the log's path).
Status RunPlot(const PlotOptions& options);

}  // namespace isoflop::cli
