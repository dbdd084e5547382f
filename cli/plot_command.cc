// `isoflop plot`: draws the scaling-law figures of a sweep or an observation set by executing
// notebooks/scaling_report.ipynb headlessly (Debian's nbconvert), parameters passed by
// environment, child started with an argv vector (no shell), Python isolated from the current
// folder, and a parent-death signal. Also RunPlot for `sweep run`.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "command.h"
#include "isoflop/analysis/curves.h"
#include "isoflop/common/files.h"
#include "isoflop/common/subprocess.h"
#include "isoflop/store/store.h"
#include "plot.h"

extern char** environ;

namespace isoflop::cli {
namespace {

namespace fs = std::filesystem;

constexpr char kNotebook[] = "scaling_report.ipynb";

// Python module -> the Debian package providing it (named in the error message).
const std::vector<std::pair<std::string, std::string>> kPythonPackages = {
    {"numpy", "python3-numpy"},           {"pandas", "python3-pandas"},
    {"matplotlib", "python3-matplotlib"}, {"nbclient", "python3-nbclient"},
    {"nbconvert", "python3-nbconvert"},   {"ipykernel", "python3-ipykernel"},
};

std::string AllAptPackages() {
  std::string s;
  for (const auto& [module, package] : kPythonPackages) s += " " + package;
  return s;
}

// Python's own flags for every interpreter started here. -I (isolated): neither the current
// directory nor the user's site-packages nor PYTHON* variables reach sys.path, so a numpy.py
// in the user's folder is not imported (and run) in place of numpy. -B: no __pycache__ written
// beside the notebook (-I ignores PYTHONDONTWRITEBYTECODE).
const std::vector<std::string> kPythonFlags = {"-I", "-B"};

// The environment of the notebook's kernel, which nbconvert starts as a plain `python -m
// ipykernel_launcher` in the notebook's folder: the same isolation by variables (no script
// folder on sys.path, no user site, no PYTHONPATH); the notebook puts its own folder
// (ISOFLOP_NOTEBOOK_DIR) on the path itself.
const std::map<std::string, std::string> kIsolatedKernel = {{"PYTHONSAFEPATH", "1"},
                                                            {"PYTHONNOUSERSITE", "1"}};
const std::vector<std::string> kUnsetForPython = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                                                  "PYTHONUSERBASE"};

std::string PythonOf(const PlotOptions& o) {
  if (!o.python.empty()) return o.python;
  if (const char* env = std::getenv("ISOFLOP_PYTHON"); env && *env) return env;
  return "/usr/bin/python3";
}

// The current environment with `set` entries replacing or adding variables and `unset` ones
// removed.
std::vector<std::string> ChildEnvironment(const std::map<std::string, std::string>& set,
                                          const std::vector<std::string>& unset) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string entry = *e;
    std::string key = entry.substr(0, entry.find('='));
    if (set.count(key) || std::find(unset.begin(), unset.end(), key) != unset.end()) continue;
    env.push_back(entry);
  }
  for (const auto& [k, v] : set) env.push_back(k + "=" + v);
  return env;
}

// Runs argv[0] (a path, no PATH search, no shell) with `env` in `cwd`, dying with this process
// (a killed `isoflop plot` leaves no notebook running); stdout and stderr go to `log_path`
// (truncated) when given, else are captured. Errors as isoflop::RunChild.
Result<ChildResult> RunPythonChild(const std::vector<std::string>& argv,
                                   const std::vector<std::string>& env, const std::string& log_path,
                                   const std::string& cwd) {
  SpawnOptions o;
  o.env = env;
  o.cwd = cwd;  // out of the user's folder: nothing there (a matplotlibrc, a jupyter config)
  o.output_path = log_path;
  o.append_output = false;
  o.exec_failure_message = "isoflop plot: cannot execute " + argv[0];
  return RunChild(argv, o);
}

// A name safe as one path component (sweep names may hold anything).
std::string PathComponent(const std::string& name) {
  std::string s;
  for (char ch : name)
    s += (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.')
             ? ch
             : '_';
  if (s.empty() || s == "." || s == "..") s = "_" + s;
  return s;
}

// The error a failed notebook run left in its log: the last "SomethingError: ..." line,
// without terminal colours.
std::string LastErrorLine(const std::string& log_path) {
  std::ifstream in(log_path);
  std::string line, last;
  static const std::regex kAnsi("\x1b\\[[0-9;]*[A-Za-z]");
  static const std::regex kError(R"(^\s*([A-Za-z_][\w.]*(Error|Exception)|KeyError): .+)");
  while (std::getline(in, line)) {
    line = std::regex_replace(line, kAnsi, "");
    if (std::regex_search(line, kError) && line.find("CellExecutionError") == std::string::npos) {
      last = line;
    }
  }
  size_t start = last.find_first_not_of(" \t");
  return start == std::string::npos ? std::string() : last.substr(start);
}

// Resolves which sweep or observation set to plot. NotFound / InvalidArgument listing what
// the store holds.
Status ResolveSource(const PlotOptions& o, std::string* sweep, std::string* observations) {
  store::OpenOptions open;
  open.create_if_missing = false;
  open.read_only = true;
  ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(o.db_path, open));
  ISOFLOP_ASSIGN_OR_RETURN(auto sweeps, db->ListSweeps());
  ISOFLOP_ASSIGN_OR_RETURN(auto sets, db->ListObservationSets());
  std::string sweep_names, set_names;
  for (const auto& s : sweeps) sweep_names += (sweep_names.empty() ? "" : ", ") + s.name;
  for (const auto& s : sets) set_names += (set_names.empty() ? "" : ", ") + s.name;
  std::string holds =
      o.db_path + " holds sweeps [" + sweep_names + "] and observation sets [" + set_names + "]";
  *sweep = o.sweep;
  *observations = o.observations;
  if (!o.sweep.empty()) {
    bool found =
        std::any_of(sweeps.begin(), sweeps.end(), [&](const auto& s) { return s.name == o.sweep; });
    if (!found) return Status::NotFound("no sweep named '" + o.sweep + "': " + holds);
  } else if (!o.observations.empty()) {
    bool found = std::any_of(sets.begin(), sets.end(),
                             [&](const auto& s) { return s.name == o.observations; });
    if (!found)
      return Status::NotFound("no observation set named '" + o.observations + "': " + holds);
  } else if (sweeps.size() + sets.size() == 1) {
    if (!sweeps.empty())
      *sweep = sweeps[0].name;
    else
      *observations = sets[0].name;
  } else if (sweeps.empty() && sets.empty()) {
    return Status::NotFound(o.db_path +
                            " has no sweep and no observation set to plot (run "
                            "`isoflop sweep run` or `isoflop import` first)");
  } else {
    return Status::InvalidArgument(holds + ": say which to plot with --sweep or --observations");
  }
  return Status::Ok();
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

}  // namespace

Status PlotOptions::Validate() const {
  if (db_path.empty()) return Status::InvalidArgument("plot: no store file given (--db)");
  if (!sweep.empty() && !observations.empty())
    return Status::InvalidArgument("plot: give --sweep or --observations, not both");
  if (formats.empty()) return Status::InvalidArgument("plot: --format names no format");
  for (const auto& f : formats) {
    if (f != "png" && f != "svg" && f != "pdf")
      return Status::InvalidArgument("plot: unknown figure format '" + f +
                                     "' in --format (expected png, svg or pdf, comma-separated)");
  }
  if (cell_timeout_s <= 0) return Status::InvalidArgument("plot: cell_timeout_s must be > 0");
  return Status::Ok();
}

Result<std::string> FindNotebookDir() {
  std::vector<fs::path> tried;
  auto has_notebook = [&](const fs::path& dir) {
    tried.push_back(dir);
    std::error_code ec;
    return fs::is_regular_file(dir / kNotebook, ec);
  };
  if (const char* env = std::getenv("ISOFLOP_NOTEBOOK_DIR"); env && *env) {
    if (has_notebook(env)) return fs::absolute(env).string();
    return Status::NotFound(std::string("ISOFLOP_NOTEBOOK_DIR=") + env + " holds no " + kNotebook);
  }
#ifdef ISOFLOP_NOTEBOOK_DIR
  if (has_notebook(ISOFLOP_NOTEBOOK_DIR)) return std::string(ISOFLOP_NOTEBOOK_DIR);
#endif
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path bin = self.parent_path();
    for (const fs::path& dir :
         {bin / ".." / "share" / "isoflop" / "notebooks", bin / ".." / ".." / "notebooks"}) {
      if (has_notebook(dir)) return fs::weakly_canonical(dir, ec).string();
    }
  }
  std::string places;
  for (const auto& p : tried) places += (places.empty() ? "" : ", ") + p.string();
  return Status::NotFound(std::string("cannot find ") + kNotebook + " (tried " + places +
                          "); set ISOFLOP_NOTEBOOK_DIR to the project's notebooks/ folder");
}

Status CheckPlotDependencies(const PlotOptions& options) {
  const std::string python = PythonOf(options);
  if (::access(python.c_str(), X_OK) != 0) {
    return Status::FailedPrecondition("plot: no Python interpreter at " + python +
                                      "; install Debian's with `apt-get install python3" +
                                      AllAptPackages() + "` (or set ISOFLOP_PYTHON)");
  }
  // Imports each module for real (a broken install counts as missing) and prints the misses.
  std::vector<std::string> argv = {python};
  argv.insert(argv.end(), kPythonFlags.begin(), kPythonFlags.end());
  argv.insert(argv.end(), {"-c",
                           "import importlib, sys\n"
                           "missing = []\n"
                           "for m in sys.argv[1:]:\n"
                           "    try:\n"
                           "        importlib.import_module(m)\n"
                           "    except Exception:\n"
                           "        missing.append(m)\n"
                           "print('missing:' + ' '.join(missing))\n"});
  for (const auto& [module, package] : kPythonPackages) argv.push_back(module);
  std::map<std::string, std::string> set = kIsolatedKernel;
  set["MPLBACKEND"] = "Agg";
  ISOFLOP_ASSIGN_OR_RETURN(ChildResult r,
                           RunPythonChild(argv, ChildEnvironment(set, kUnsetForPython), "", "/"));
  size_t at = r.output.rfind("missing:");
  if (r.exit_code != 0 || at == std::string::npos) {
    return Status::FailedPrecondition("plot: " + python + " failed to run (exit " +
                                      std::to_string(r.exit_code) + "): " + r.output);
  }
  std::istringstream words(r.output.substr(at + 8));
  std::vector<std::string> modules, packages;
  for (std::string m; words >> m;) {
    modules.push_back(m);
    for (const auto& [module, package] : kPythonPackages)
      if (module == m) packages.push_back(package);
  }
  if (modules.empty()) return Status::Ok();
  return Status::FailedPrecondition(
      "plot: " + python + " cannot import " + Join(modules, ", ") +
      "; install them with `apt-get install " + Join(packages, " ") +
      "` (Debian's packages; a python3 from pyenv or a venv does not see them)");
}

Status RunPlot(const PlotOptions& options) {
  ISOFLOP_RETURN_IF_ERROR(options.Validate());
  PlotOptions o = options;
  std::error_code ec;
  if (!fs::exists(o.db_path, ec))
    return Status::NotFound("plot: no store at " + o.db_path + " (--db or $ISOFLOP_DB)");
  o.db_path = fs::absolute(o.db_path, ec).string();
  std::string sweep, observations;
  ISOFLOP_RETURN_IF_ERROR(ResolveSource(o, &sweep, &observations).WithPrefix("plot"));
  if (o.notebook_dir.empty()) {
    ISOFLOP_ASSIGN_OR_RETURN(o.notebook_dir, FindNotebookDir());
  }
  // Absolute: the child runs in this folder, and the notebook puts it on its import path.
  o.notebook_dir = fs::absolute(o.notebook_dir, ec).string();
  ISOFLOP_RETURN_IF_ERROR(CheckPlotDependencies(o));
  if (o.out_dir.empty())
    o.out_dir = (fs::path("plots") / PathComponent(sweep + observations)).string();
  fs::create_directories(o.out_dir, ec);
  if (ec) return Status::IoError("plot: cannot create " + o.out_dir + ": " + ec.message());
  o.out_dir = fs::absolute(o.out_dir, ec).string();
  const fs::path out = o.out_dir;
  fs::remove(out / "manifest.json", ec);  // never report a previous run's figures

  // Every curve the figures draw, evaluated here by the fit library (the notebook draws them,
  // it does not re-implement the laws).
  {
    store::OpenOptions ro;
    ro.read_only = true;
    ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(o.db_path, ro));
    analysis::Source source;
    source.kind =
        sweep.empty() ? analysis::Source::Kind::kObservations : analysis::Source::Kind::kSweep;
    source.name = sweep.empty() ? observations : sweep;
    ISOFLOP_ASSIGN_OR_RETURN(nlohmann::json curves, analysis::SourceCurves(*db, source));
    ISOFLOP_RETURN_IF_ERROR(WriteFileAtomic((out / "analysis.json").string(), curves.dump()));
  }
  std::map<std::string, std::string> set = {
      {"ISOFLOP_ANALYSIS", (out / "analysis.json").string()},
      {"ISOFLOP_DB", o.db_path},
      {"ISOFLOP_SWEEP", sweep},
      {"ISOFLOP_OBSERVATIONS", observations},
      {"ISOFLOP_PLOT_DIR", o.out_dir},
      {"ISOFLOP_PLOT_FORMATS", Join(o.formats, ",")},
      {"ISOFLOP_NOTEBOOK_DIR", o.notebook_dir},
      {"PYTHONDONTWRITEBYTECODE", "1"},         // keep __pycache__ out of the notebooks folder
      {"PYDEVD_DISABLE_FILE_VALIDATION", "1"},  // quiets ipykernel's debugger in plot.log
  };
  // Jupyter and matplotlib keep state under $HOME; give them a scratch place when it is absent
  // or read-only (batch jobs, containers).
  const char* home = std::getenv("HOME");
  std::string scratch;
  if (!home || !*home || ::access(home, W_OK) != 0) {
    scratch = (out / ".jupyter").string();
    fs::create_directories(scratch, ec);
    set["JUPYTER_RUNTIME_DIR"] = scratch;
    set["IPYTHONDIR"] = scratch;
    set["MPLCONFIGDIR"] = scratch;
  }
  for (const auto& [k, v] : kIsolatedKernel) set[k] = v;
  // The notebook selects the inline backend itself; a GUI backend from the caller would fail.
  std::vector<std::string> unset = kUnsetForPython;
  unset.push_back("MPLBACKEND");
  const std::string log_path = (out / "plot.log").string();
  std::vector<std::string> argv = {PythonOf(o)};
  argv.insert(argv.end(), kPythonFlags.begin(), kPythonFlags.end());
  argv.insert(argv.end(), {"-m", "nbconvert", "--to", "notebook", "--execute",
                           "--ExecutePreprocessor.timeout=" + std::to_string(o.cell_timeout_s),
                           "--output-dir", o.out_dir, "--output", "scaling_report",
                           (fs::path(o.notebook_dir) / kNotebook).string()});
  ISOFLOP_ASSIGN_OR_RETURN(
      ChildResult r, RunPythonChild(argv, ChildEnvironment(set, unset), log_path, o.notebook_dir));
  if (!scratch.empty()) fs::remove_all(scratch, ec);
  if (r.exit_code != 0) {
    std::string why = LastErrorLine(log_path);
    return Status::Internal("plot: the notebook failed (exit " + std::to_string(r.exit_code) + ")" +
                            (why.empty() ? "" : ": " + why) + "; full log: " + log_path);
  }

  std::ifstream in(out / "manifest.json");
  nlohmann::json manifest = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!in || manifest.is_discarded() || !manifest.is_object()) {
    return Status::Internal("plot: the notebook ran but wrote no readable " +
                            (out / "manifest.json").string() + "; log: " + log_path);
  }
  for (const auto& fig : manifest.value("figures", nlohmann::json::array())) {
    for (const auto& file : fig.value("files", nlohmann::json::array())) {
      if (!o.quiet) std::cout << "wrote " << file.get<std::string>() << "\n";
    }
    for (const auto& note : fig.value("notes", nlohmann::json::array())) {
      if (!o.quiet) std::cout << "  note: " << note.get<std::string>() << "\n";
    }
  }
  for (const auto& skip : manifest.value("skipped", nlohmann::json::array())) {
    std::cout << "skipped " << skip.value("name", "") << ": " << skip.value("reason", "") << "\n";
  }
  std::cout << "report " << manifest.value("report", (out / "report.html").string()) << "\n";
  return Status::Ok();
}

namespace {

struct PlotArgs {
  PlotOptions options;
};

void AddPlotCommand(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<PlotArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plot", "Draw the scaling-law figures and an HTML report from the store's runs and fits");
  auto* sweep = cmd->add_option("--sweep", args->options.sweep, "Plot this sweep");
  cmd->add_option("--observations", args->options.observations,
                  "Plot this imported observation set instead")
      ->excludes(sweep);
  cmd->add_option("--out", args->options.out_dir,
                  "Folder for the figures and report.html (default ./plots/<name>)")
      ->type_name("DIR");
  cmd->add_option("--format", args->options.formats, "Figure formats: png, svg, pdf")
      ->delimiter(',')
      ->capture_default_str();
  cmd->footer(
      "Needs Debian's Python packages: apt-get install python3-matplotlib python3-pandas "
      "python3-nbconvert python3-nbclient python3-ipykernel.\nEnvironment: ISOFLOP_PYTHON "
      "(interpreter, default /usr/bin/python3), ISOFLOP_NOTEBOOK_DIR (folder of "
      "scaling_report.ipynb).");
  cmd->callback([&ctx, args] {
    PlotOptions o = args->options;
    o.db_path = ctx.db_path;
    if (Status v = o.Validate(); !v.ok()) {
      ctx.status = v;
      ctx.usage_error = true;
      return;
    }
    ctx.status = RunPlot(o);
  });
}

}  // namespace

ISOFLOP_REGISTER_COMMAND("plot", 80, AddPlotCommand);

}  // namespace isoflop::cli
