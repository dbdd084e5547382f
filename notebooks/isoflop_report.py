"""Figures of a scaling-law study, drawn from an isoflop store (one SQLite file).

Used by scaling_report.ipynb (and so by `isoflop plot`). The C++ fit is the single source of
truth: fitted laws, parabolas, power laws, envelopes and bootstrap draws are read from the
`fits` table (layout: docs/fit-json.md), and every curve evaluated from a law (the
compute-optimal frontier and its bootstrap band, the loss surface, the residuals) is read from
the analysis file `isoflop plot` writes (`isoflop curves`, docs/fit-json.md "Evaluated
curves"); nothing is refitted or re-derived here. The one exception is the granularity figure,
which evaluates the moe law at points of its own (Law.loss, compared with the C++ law by
tests/plot). The store is opened read-only, so plotting never blocks or changes a running sweep.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
import re
import sqlite3
import urllib.parse
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize

# Every figure the report can draw: stable file stem, title, and what it shows. The stems are a
# contract with `isoflop plot`, its tests and docs/plots.md.
FIGURES = [
    ("isoflop_curves", "IsoFLOP curves",
     "Final loss against model size for each compute budget, with the fitted parabolas and "
     "their minima (Hoffmann et al. 2022, Figure 3 left)."),
    ("optimal_n_d", "Compute-optimal N and D",
     "N_opt(C) and D_opt(C) from each fitting method, with the fitted power laws extrapolated an "
     "order of magnitude beyond the largest budget (Hoffmann et al. 2022, Figure 3 centre, right)."),
    ("loss_contours", "Parametric loss contours",
     "The fitted law's loss over (C, N), the efficient frontier, and the observations "
     "(Hoffmann et al. 2022, Figure 4)."),
    ("training_curves", "Training curves",
     "Loss against training FLOPs for every run, coloured by model size, with the lower "
     "envelope (Hoffmann et al. 2022, Figure 2)."),
    ("residuals", "Residuals of the parametric fit",
     "log L - log L_hat against N, D and C: structure here means the law misses something."),
    ("extrapolation", "Extrapolation check",
     "The law fitted without the largest budget, predicting that budget's losses."),
    ("moe", "Mixture-of-Experts",
     "Final loss against active parameters for each expert count."),
    ("moe_compute", "MoE loss against compute",
     "Per expert count: the best final loss at each budget, and the compute-optimal loss of that "
     "count's own law L*(C) (the curve a dense-vs-MoE decision compares), extrapolated past the "
     "largest budget."),
    ("expert_load", "Expert load over training",
     "Per MoE expert count, its largest run: each routed expert's share of the token "
     "assignments at every logging step, relative to a perfectly balanced share (1 = balanced; "
     "hot experts are bright rows), with the max/mean imbalance below."),
    ("granularity", "Granularity law (fine-grained MoE)",
     "Final loss against MoE granularity G at a few fixed (N, D) from the data, with the fitted "
     "law L = c + (g/G^γ + a)/N^α + b/D^β (Krajewski et al. 2024, eq. 5) and its limit G → ∞; "
     "right: the law's residuals against G for every point."),
]
FIGURE_TITLES = {stem: title for stem, title, _ in FIGURES}
FIGURE_BLURBS = {stem: blurb for stem, _, blurb in FIGURES}

# The apt packages `isoflop plot` needs, by Python module (named in error messages).
APT_PACKAGES = {
    "numpy": "python3-numpy",
    "pandas": "python3-pandas",
    "matplotlib": "python3-matplotlib",
    "nbclient": "python3-nbclient",
    "nbconvert": "python3-nbconvert",
    "ipykernel": "python3-ipykernel",
}

# Parameter-count convention of a fit -> runs column holding that N.
N_COLUMNS = {"total": "n_total", "non_embedding": "n_non_embedding", "active": "n_active"}

# ci_json names of the power-law parameters in params_json (docs/fit-json.md).
CI_ALIASES = {"n_opt_a": "a", "d_opt_b": "b", "n_opt_k": "k_n", "d_opt_k": "k_d"}

BUDGET_CMAP = "viridis"
SIZE_CMAP = "plasma"
METHOD_STYLE = {  # colour and marker per fitting method, the same in every figure
    "parametric": dict(color="#d62728", marker="s"),
    "isoflop": dict(color="#1f77b4", marker="o"),
    "envelope": dict(color="#2ca02c", marker="^"),
}


def env_list(value: str | None, default: list[str]) -> list[str]:
    """Splits a comma-separated setting ("png,svg"); the default when empty."""
    items = [v.strip().lower() for v in (value or "").split(",") if v.strip()]
    return items or default


# --------------------------------------------------------------------------------------------
# Scaling laws (evaluation only: the parameters come from the fits table).

def flops_per_param_token(convention: str) -> float:
    """k in C = k N D from a flops convention name ("6nd" -> 6). Defaults to 6."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*nd\s*", convention or "6nd")
    try:
        return float(m.group(1)) if m else 6.0
    except ValueError:
        return 6.0


@dataclass
class Law:
    """A fitted parametric law L_hat(N, D[, G]) as stored by `isoflop fit`, evaluated only where
    the C++ analysis has no curve for it (the granularity figure)."""

    form: str
    params: dict
    k: float = 6.0  # C = k N D

    def loss(self, n, d, g=1.0):
        p = self.params
        n = np.asarray(n, dtype=float)
        d = np.asarray(d, dtype=float)
        if self.form == "chinchilla":  # Hoffmann et al. 2022, eq. 2
            return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]
        if self.form == "kaplan":  # Kaplan et al. 2020, eq. 1.5
            return ((p["Nc"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["Dc"] / d) ** p["alpha_D"]
        if self.form == "moe":  # Krajewski et al. 2024, eq. 5
            return (p["c"] + (p["g"] / np.asarray(g, float) ** p["gamma"] + p["a"]) / n ** p["alpha"]
                    + p["b"] / d ** p["beta"])
        raise ValueError(f"unknown scaling-law form '{self.form}'")


# --------------------------------------------------------------------------------------------
# Reading the store.

def open_store(path: str) -> sqlite3.Connection:
    """Opens the store read-only (URI mode=ro). FileNotFoundError when it does not exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no isoflop store at {path} (set ISOFLOP_DB or pass --db)")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    con = sqlite3.connect(uri, uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    return con


def _json(text, default):
    try:
        v = json.loads(text) if text else default
        return default if v is None else v
    except (TypeError, ValueError):
        return default


def list_sources(con) -> tuple[list[str], list[str]]:
    sweeps = [r[0] for r in con.execute("SELECT name FROM sweeps ORDER BY id")]
    sets = [r[0] for r in con.execute("SELECT name FROM observation_sets ORDER BY id")]
    return sweeps, sets


def load_fits(con, kind: str, name: str) -> dict:
    """Newest fit per method ("parametric", "isoflop", "envelope") for one source, plus every
    parametric form's newest fit under "parametric:<form>". Each value is a dict of the row with
    its JSON columns parsed."""
    rows = con.execute(
        "SELECT * FROM fits WHERE source_kind = ? AND source_name = ? ORDER BY id",
        (kind, name)).fetchall()
    fits = {}
    for r in rows:  # ascending id: later rows overwrite earlier ones
        f = dict(r)
        f["params"] = _json(f.get("params_json"), {})
        f["ci"] = _json(f.get("ci_json"), {})
        f["result"] = _json(f.get("result_json"), {})
        f["options"] = _json(f.get("options_json"), {})
        if "n_experts" in f["options"]:
            # One expert count's law (`sweep run`, `fit --n-experts`): not the source's law;
            # moe_compute draws them from the analysis file's "by_expert_count".
            continue
        fits[f["method"]] = f
        if f["method"] == "parametric":
            fits["parametric:" + (f.get("form") or "chinchilla")] = f
    # The Chinchilla form is what figures 2, 3 and 5 mean by "the parametric fit".
    if "parametric:chinchilla" in fits:
        fits["parametric"] = fits["parametric:chinchilla"]
    return fits


def load_observation_set(con, name: str) -> pd.DataFrame:
    """The set's points; column g is the MoE granularity G (NaN where none was imported, and
    for stores older than schema 3, which have no g column)."""
    columns = {r[1] for r in con.execute("PRAGMA table_info(observations)")}
    g = "o.g" if "g" in columns else "NULL AS g"
    df = pd.read_sql_query(
        f"SELECT o.n, o.d, o.c, o.loss, o.line, {g} FROM observations o "
        "JOIN observation_sets s ON s.id = o.set_id WHERE s.name = ? ORDER BY o.idx",
        con, params=(name,))
    df["g"] = df["g"].astype(float)
    df["n_experts"] = 0
    return df


def load_runs(con, sweep: str) -> pd.DataFrame:
    """Every run of the sweep (all statuses), with its final loss (validation, else train)."""
    df = pd.read_sql_query(
        "SELECT r.* FROM runs r JOIN sweeps s ON s.id = r.sweep_id WHERE s.name = ? "
        "ORDER BY r.budget_flops, r.n_total", con, params=(sweep,))
    df["loss"] = df["final_val_loss"].fillna(df["final_train_loss"])
    # D is the tokens trained (the fit's D), the target only where none was recorded.
    df["d"] = np.where(df["tokens_done"] > 0, df["tokens_done"], df["target_tokens"]).astype(float)
    df["n_experts"] = df["n_experts"].fillna(0).astype(int)
    # An MoE run's granularity G (1 when its experts are not split), as `isoflop fit` reads it;
    # dense runs have none.
    gran = df["granularity"].fillna(0).astype(float) if "granularity" in df else 0.0
    df["g"] = np.where(df["n_experts"] > 0, np.where(gran > 0, gran, 1.0), np.nan)
    return df


def load_expert_loads(con, run_id: int) -> pd.DataFrame:
    """One MoE run's per-expert load over training: step, tokens and one column load_i per
    routed expert (fraction of routed token assignments, from the metric extras)."""
    df = pd.read_sql_query(
        "SELECT m.step, m.tokens, x.name, x.value FROM metric_extras x JOIN metrics m "
        "ON m.run_id = x.run_id AND m.step = x.step WHERE x.run_id = ? AND x.name LIKE 'load\\_%' "
        "ESCAPE '\\' ORDER BY m.step", con, params=(int(run_id),))
    if df.empty:
        return df
    wide = df.pivot_table(index=["step", "tokens"], columns="name", values="value").reset_index()
    cols = sorted((c for c in wide.columns if re.fullmatch(r"load_\d+", str(c))),
                  key=lambda c: int(c.split("_")[1]))
    return wide[["step", "tokens"] + cols]


def load_curves(con, sweep: str) -> pd.DataFrame:
    """Per-step metrics of the sweep's runs: run_id, step, tokens, flops, loss."""
    df = pd.read_sql_query(
        "SELECT m.run_id, m.step, m.tokens, m.flops, m.val_loss, m.train_loss FROM metrics m "
        "JOIN runs r ON r.id = m.run_id JOIN sweeps s ON s.id = r.sweep_id WHERE s.name = ? "
        "ORDER BY m.run_id, m.step", con, params=(sweep,))
    df["loss"] = df["val_loss"].fillna(df["train_loss"])
    return df


# --------------------------------------------------------------------------------------------
# Small drawing helpers.

def _sci(x: float) -> str:
    """1.2e21 -> '1.2e21' (compact, for legends)."""
    if not np.isfinite(x):
        return "nan"
    mant, exp = f"{x:.2g}".split("e") if "e" in f"{x:.2g}" else (f"{x:.3g}", None)
    return f"{mant}e{int(exp)}" if exp is not None else mant


def _interval(ci: dict, *names):
    for n in names:
        v = ci.get(n)
        if isinstance(v, dict) and v.get("lo") is not None and v.get("hi") is not None:
            lo, hi = v["lo"], v["hi"]
            if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
                return float(lo), float(hi)
    return None


def _power(pl: dict | None):
    """(k, a) of a stored power law {"k":..,"a":..}; None when absent or NaN."""
    if not isinstance(pl, dict):
        return None
    k, a = pl.get("k"), pl.get("a")
    if k is None or a is None or not (np.isfinite(k) and np.isfinite(a)) or k <= 0:
        return None
    return float(k), float(a)


# --------------------------------------------------------------------------------------------
# The report.

@dataclass
class Report:
    """Loads one source (a sweep or an observation set) with its fits and draws the figures.

    Every figure method returns the matplotlib Figure it drew (saved under out_dir in each
    format) or None when the figure does not apply, after printing why. write_report() then
    writes report.html and manifest.json (read by `isoflop plot`)."""

    db: str
    sweep: str = ""
    observations: str = ""
    out_dir: str = "plots"
    formats: list = field(default_factory=lambda: ["png"])
    dpi: int = 150
    # The curves the C++ fit library evaluated for this source (`isoflop curves --sweep NAME`).
    analysis: str = field(default_factory=lambda: os.environ.get("ISOFLOP_ANALYSIS", ""))

    def __post_init__(self):
        self.formats = [f for f in self.formats if f]
        bad = [f for f in self.formats if f not in ("png", "svg", "pdf")]
        if bad:
            raise ValueError(f"unsupported figure format(s) {bad}: use png, svg or pdf")
        self.con = open_store(self.db)
        sweeps, sets = list_sources(self.con)
        if self.sweep and self.observations:
            raise ValueError("give a sweep or an observation set, not both")
        if not self.sweep and not self.observations:
            if len(sweeps) + len(sets) != 1:
                raise ValueError(
                    f"{self.db} holds sweeps {sweeps} and observation sets {sets}: "
                    "say which to plot (ISOFLOP_SWEEP or ISOFLOP_OBSERVATIONS)")
            self.sweep = sweeps[0] if sweeps else ""
            self.observations = sets[0] if sets else ""
        if self.sweep and self.sweep not in sweeps:
            raise ValueError(f"no sweep named '{self.sweep}' in {self.db} (sweeps: {sweeps})")
        if self.observations and self.observations not in sets:
            raise ValueError(f"no observation set named '{self.observations}' in {self.db} "
                             f"(sets: {sets})")
        self.kind = "sweep" if self.sweep else "observations"
        self.name = self.sweep or self.observations
        self.fits = load_fits(self.con, self.kind, self.name)
        self.cpp = {}
        if self.analysis and os.path.exists(self.analysis):
            with open(self.analysis) as f:
                self.cpp = json.load(f) or {}
        self.figures: list[dict] = []  # {"name", "title", "files"}
        self.skipped: list[dict] = []  # {"name", "title", "reason"}
        os.makedirs(self.out_dir, exist_ok=True)
        self._load_points()

    # ---- data

    def _load_points(self):
        par = self.fits.get("parametric") or next(iter(self.fits.values()), None)
        self.convention = (par or {}).get("convention") or "total"
        self.k = flops_per_param_token((par or {}).get("flops_convention") or "6nd")
        if self.kind == "observations":
            obs = load_observation_set(self.con, self.observations)
            obs["c"] = np.where(obs["c"] > 0, obs["c"], self.k * obs["n"] * obs["d"])
            # The budget each point belongs to, as the C++ isoFLOP grouping formed it.
            budgets = {_point_key(p["n"], p["d"], p["loss"]): p["budget"]
                       for p in self.cpp.get("points", [])}
            obs["budget"] = [budgets.get(_point_key(n, d, l), c) for n, d, l, c in
                             zip(obs["n"], obs["d"], obs["loss"], obs["c"])]
            self.runs = None
            self.curves = None
        else:
            runs = load_runs(self.con, self.sweep)
            self.runs = runs
            col = N_COLUMNS.get(self.convention, "n_total")
            obs = runs[(runs["status"] == "finished") & runs["loss"].notna()].copy()
            obs["n"] = obs[col].astype(float)
            obs["c"] = self.k * obs["n"] * obs["d"]
            obs["budget"] = np.where(obs["budget_flops"] > 0, obs["budget_flops"], obs["c"])
            self.curves = load_curves(self.con, self.sweep)
        # A sweep's fit takes every finished run (MoE ones by the fit's N convention): the
        # figures show the same points, MoE runs with their own marker.
        self.mixed = bool((obs["n_experts"] > 0).any())
        obs = obs.reset_index(drop=True)
        # The fit may have dropped the K highest losses (the Chinchilla replication drops 5);
        # mark them rather than pretend they were fitted.
        k = max(int((f.get("result") or {}).get("excluded_top_loss") or 0)
                for f in list(self.fits.values()) + [{}])
        obs["excluded"] = False
        if 0 < k < len(obs):
            obs.loc[obs["loss"].nlargest(k).index, "excluded"] = True
        self.n_excluded = int(obs["excluded"].sum())
        self.obs = obs

    def _g(self) -> np.ndarray:
        """Each point's granularity G as the fit saw it: 1 where none was recorded."""
        return self.obs["g"].fillna(1.0).to_numpy(dtype=float)

    def parametric_law(self, form: str = "") -> Law | None:
        f = self.fits.get("parametric:" + form) if form else self.fits.get("parametric")
        if not f or not f.get("params"):
            return None
        return Law(form=f.get("form") or "chinchilla", params=f["params"],
                   k=flops_per_param_token(f.get("flops_convention")))

    def _cpp_parametric(self) -> dict | None:
        """The C++-evaluated curves of the parametric fit (frontier, band, surface, points)."""
        cur = self.cpp.get("parametric") or {}
        return cur.get("parametric") if isinstance(cur, dict) else None

    def _parametric_and_curves(self, name: str) -> tuple[Law, dict] | None:
        """The parametric law and its C++-evaluated curves, or None once figure `name` is
        skipped for want of either."""
        law = self.parametric_law()
        if law is None:
            return self._skip(name, self._need_fit("parametric"))
        cpp = self._cpp_parametric()
        if cpp is None:
            return self._skip(name, "no evaluated curves of the parametric fit (run through "
                              "`isoflop plot`, which computes them)")
        return law, cpp

    def summary(self) -> str:
        """A few lines on what was loaded (printed by the notebook)."""
        lines = [f"store: {os.path.abspath(self.db)}",
                 f"source: {self.kind} '{self.name}' - {len(self.obs)} final-loss points"]
        if self.runs is not None:
            counts = self.runs["status"].value_counts().to_dict()
            lines.append("runs by status: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            lines.append(f"training-curve points: {len(self.curves)}")
        methods = [m for m in self.fits if ":" not in m]
        lines.append("fits in the store: " + (", ".join(
            f"{m} (#{self.fits[m]['id']}, {self.fits[m]['created_at']})" for m in methods)
            or "none - run `isoflop fit` first for the fitted curves"))
        return "\n".join(lines)

    # ---- bookkeeping

    def _skip(self, name: str, reason: str):
        print(f"skipped {name}: {reason}")
        self.skipped.append({"name": name, "title": FIGURE_TITLES[name], "reason": reason})
        return None

    def _save(self, fig, name: str, notes: list[str] | None = None):
        files = []
        for fmt in self.formats:
            path = os.path.join(self.out_dir, f"{name}.{fmt}")
            fig.savefig(path, dpi=self.dpi, bbox_inches="tight")
            files.append(path)
        self.figures.append({"name": name, "title": FIGURE_TITLES[name], "files": files,
                             "notes": notes or []})
        for p in files:
            print("wrote", p)
        for n in notes or []:
            print("note:", n)
        return fig

    def _budget_norm(self):
        c = self.obs["c"].to_numpy()
        lo, hi = float(np.min(c)), float(np.max(c))
        if hi <= lo * 1.01:
            lo, hi = lo / 2, hi * 2
        return LogNorm(vmin=lo, vmax=hi)

    def _need_fit(self, method: str) -> str:
        src = f"--sweep {self.name}" if self.kind == "sweep" else f"--observations {self.name}"
        return f"needs a stored {method} fit: run `isoflop fit {src} --method {method}`"

    def _common_notes(self) -> list[str]:
        notes = []
        if self.mixed:
            notes.append(f"triangles: MoE runs (N counted as '{self.convention}', as in the "
                         "fit); moe.png compares them with the dense runs")
        if self.n_excluded:
            notes.append(f"x: the {self.n_excluded} highest losses, excluded from the fit "
                         "(drawn where they fall inside the axes)")
        return notes

    def _scatter_points(self, ax, x, y, colour, cmap, norm, s=18, **kw):
        """Fitted points (dense circles, MoE triangles), coloured by `colour` on `norm`."""
        kept = ~self.obs["excluded"].to_numpy()
        moe = (self.obs["n_experts"] > 0).to_numpy()
        x, y, colour = np.asarray(x), np.asarray(y), np.asarray(colour)
        for mask, marker in ((kept & ~moe, "o"), (kept & moe, "^")):
            if mask.any():
                ax.scatter(x[mask], y[mask], c=colour[mask], cmap=cmap, norm=norm, s=s,
                           marker=marker, **kw)

    def _scatter_excluded(self, ax, x, y, label=True):
        ex = self.obs["excluded"].to_numpy()
        if ex.any():
            ax.scatter(np.asarray(x)[ex], np.asarray(y)[ex], marker="x", s=28, color="0.35",
                       linewidths=1.0, zorder=3,
                       label="excluded from the fit" if label else None)

    # ---- figure 1

    def isoflop_curves(self):
        """Final loss against N (and D) per budget, with the stored parabolas and minima."""
        name = "isoflop_curves"
        if len(self.obs) == 0:
            return self._skip(name, "no final losses yet (no finished runs)")
        fit = self.fits.get("isoflop")
        profiles = (fit or {}).get("result", {}).get("isoflop", {}).get("budgets", [])
        notes = self._common_notes()
        if not fit:
            notes.append("parabolas and minima missing: " + self._need_fit("isoflop"))
        norm = self._budget_norm()
        cmap = plt.get_cmap(BUDGET_CMAP)
        kept = ~self.obs["excluded"]
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
        off_scale = 0
        for ax, var, label in ((axes[0], "n", "Parameters N"), (axes[1], "d", "Training tokens D")):
            self._scatter_points(ax, self.obs[var], self.obs["loss"], self.obs["c"], cmap, norm,
                                 alpha=0.85, edgecolors="none", zorder=2)
            self._scatter_excluded(ax, self.obs[var], self.obs["loss"], label=False)
            x_lo, x_hi = self.obs[var].min() / 1.5, self.obs[var].max() * 1.5
            y_lo, y_hi = _loss_limits(self.obs["loss"][kept])
            for p in profiles:
                # Too few points or a downward parabola: nothing to draw. Budgets whose
                # minimum lies outside the sampled sizes are drawn hollow (the fit leaves them
                # out of the power laws by default).
                if not (p.get("usable") or p.get("outside_range")):
                    continue
                coef = p.get(f"parabola_{var}")
                lo, hi = p.get(f"{var}_lo"), p.get(f"{var}_hi")
                if not _finite(coef, 3) or not _finite([lo, hi, p.get("c")], 3) or coef[2] <= 0:
                    continue
                colour = cmap(norm(p["c"]))
                x = np.linspace(math.log(lo) - 0.15, math.log(hi) + 0.15, 200)
                ax.plot(np.exp(x), coef[0] + coef[1] * x + coef[2] * x * x, color=colour,
                        lw=1.4, zorder=3)
                opt, at = p.get(f"{var}_opt"), p.get(f"loss_at_{var}_opt")
                if not _finite([opt, at], 2):
                    continue
                if not (x_lo <= opt <= x_hi and y_lo <= at <= y_hi):
                    off_scale += 1
                    continue
                hollow = bool(p.get("outside_range"))
                ax.scatter([opt], [at], marker="D", s=48, zorder=4,
                           facecolors="white" if hollow else colour, edgecolors="black",
                           linewidths=1.0)
            ax.set_xlim(x_lo, x_hi)
            ax.set_ylim(y_lo, y_hi)
            ax.set_xscale("log")
            ax.set_xlabel(f"{label} (log scale)")
            ax.grid(True, which="major", alpha=0.3)
        axes[0].set_ylabel("Final loss (nats/token)")
        handles = [plt.Line2D([], [], color="0.4", marker="o", ls="none", ms=4,
                              label="final loss of one run")]
        if self.mixed:
            handles.append(plt.Line2D([], [], color="0.4", marker="^", ls="none", ms=5,
                                      label="MoE run"))
        if profiles:
            handles += [plt.Line2D([], [], color="0.4", lw=1.4, label="parabola fitted per budget"),
                        plt.Line2D([], [], marker="D", color="0.4", mec="black", ls="none",
                                   label="its minimum")]
        if any(p.get("outside_range") for p in profiles):
            handles.append(plt.Line2D([], [], marker="D", mfc="white", mec="black", ls="none",
                                      label="minimum outside the sampled sizes"))
        if self.n_excluded:
            handles.append(plt.Line2D([], [], marker="x", color="0.35", ls="none",
                                      label="excluded from the fit"))
        # Below the panels: isoFLOP curves fill every corner of the axes.
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
                   frameon=False, bbox_to_anchor=(0.45, -0.06))
        if off_scale:
            notes.append(f"{off_scale} parabola minimum/minima off the plotted range (flat or "
                         "extrapolated parabolas), not drawn")
        cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, pad=0.01)
        cb.set_label("Training compute C (FLOPs)")
        n_usable = sum(1 for p in profiles if p.get("usable") or p.get("outside_range"))
        fig.suptitle(f"IsoFLOP profiles - {self.kind} '{self.name}'"
                     + (f" ({n_usable} of {len(profiles)} budgets give a minimum)"
                        if profiles else " (no isoFLOP fit stored: parabolas not drawn)"),
                     fontsize=11)
        return self._save(fig, name, notes)

    # ---- figure 2

    def optimal_n_d(self, extrapolate: float = 10.0):
        """N_opt(C), D_opt(C) from each method, power laws extrapolated, bootstrap bands."""
        name = "optimal_n_d"
        methods = [m for m in ("parametric", "isoflop", "envelope") if m in self.fits]
        if not methods:
            return self._skip(name, "no fit in the store: run `isoflop fit` (parametric, "
                              "isoflop or envelope) first")
        c_obs = self.obs["c"].to_numpy() if len(self.obs) else np.array([1e18])
        c_lo, c_max = float(np.min(c_obs)), float(np.max(c_obs))
        c_grid = np.logspace(math.log10(c_lo) - 0.3, math.log10(c_max * extrapolate), 200)
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
        notes = []
        for ax, var, label in ((axes[0], "n", "Compute-optimal parameters N_opt"),
                               (axes[1], "d", "Compute-optimal training tokens D_opt")):
            core = []  # values that set the y range: lines and in-range minima
            off = []   # minima outside that range (noted, drawn at the edge)
            # Parametric: the law's frontier, with a band from the bootstrap draws.
            law = self.parametric_law()
            cpp = self._cpp_parametric()
            if law is not None and cpp is None and var == "n":
                notes.append("parametric frontier not drawn: no evaluated curves (run through "
                             "`isoflop plot`, which computes them)")
            if law is not None and cpp is not None:
                st = METHOD_STYLE["parametric"]
                fr = cpp["frontier"]
                c_all = np.asarray(fr["c"], float)
                keep = (c_all >= c_grid[0]) & (c_all <= c_grid[-1])
                cs = c_all[keep]
                y = np.asarray(fr["n_opt" if var == "n" else "d_opt"], float)[keep]
                core.extend(y)
                slope = np.polyfit(np.log(cs), np.log(y), 1)[0]
                ax.plot(cs, y, color=st["color"], lw=1.8,
                        label=f"parametric law ({law.form}): ∝ C^{slope:.3f}")
                band = cpp.get("band")
                dropped = self._non_finite_draws()
                if dropped and var == "n":
                    notes.append(f"{dropped} bootstrap draw(s) with a non-finite parameter left "
                                 "out of the band")
                if band:
                    lo = np.asarray(band[f"{var}_lo"], float)[keep]
                    hi = np.asarray(band[f"{var}_hi"], float)[keep]
                    ax.fill_between(cs, lo, hi, color=st["color"], alpha=0.15, lw=0,
                                    label=f"parametric {band['level']:.0%} bootstrap band")
                elif var == "n":
                    notes.append("no bootstrap draws on the parametric fit: no band "
                                 "(`isoflop fit --bootstrap N` stores them)")
            # IsoFLOP: per-budget minima and their power law.
            iso = self.fits.get("isoflop")
            if iso:
                st = METHOD_STYLE["isoflop"]
                res = iso.get("result", {}).get("isoflop", {})
                pts = [p for p in res.get("budgets", [])
                       if p.get("usable") or p.get("outside_range")]
                xs = [p["c"] for p in pts]
                ys = [p.get(f"{var}_opt") for p in pts]
                hollow = [bool(p.get("outside_range")) for p in pts]
                core.extend(y for y, h in zip(ys, hollow) if not h)
                if xs:
                    ax.scatter([x for x, h in zip(xs, hollow) if not h],
                               [y for y, h in zip(ys, hollow) if not h], color=st["color"],
                               marker=st["marker"], s=36, zorder=4, edgecolors="black",
                               linewidths=0.5, label="isoFLOP parabola minima")
                    if any(hollow):
                        ax.scatter([x for x, h in zip(xs, hollow) if h],
                                   [y for y, h in zip(ys, hollow) if h], facecolors="white",
                                   edgecolors=st["color"], marker=st["marker"], s=36, zorder=4,
                                   label="minimum outside sampled range")
                pl = _power(res.get("n_opt" if var == "n" else "d_opt")) or _power_from_params(
                    iso.get("params", {}), var)
                if pl:
                    core.extend(pl[0] * c_grid[[0, -1]] ** pl[1])
                    ax.plot(c_grid, pl[0] * c_grid ** pl[1], color=st["color"], ls="--", lw=1.5,
                            label=f"isoFLOP power law: ∝ C^{pl[1]:.3f}"
                                  + _ci_text(iso.get("ci", {}), "a" if var == "n" else "b"))
            # Envelope: the best run at each FLOP level, and its power law.
            env = self.fits.get("envelope")
            if env:
                st = METHOD_STYLE["envelope"]
                res = env.get("result", {}).get("envelope", {})
                pts = res.get("points", [])
                if pts:
                    core.extend(p.get(var) for p in pts)
                    ax.scatter([p["c"] for p in pts], [p.get(var) for p in pts], color=st["color"],
                               marker=st["marker"], s=16, alpha=0.7, zorder=3,
                               label="envelope (best run at each C)")
                pl = _power(res.get("n_opt" if var == "n" else "d_opt")) or _power_from_params(
                    env.get("params", {}), var)
                if pl:
                    ax.plot(c_grid, pl[0] * c_grid ** pl[1], color=st["color"], ls=":", lw=1.8,
                            label=f"envelope power law: ∝ C^{pl[1]:.3f}"
                                  + _ci_text(env.get("ci", {}), "a" if var == "n" else "b"))
            # Bootstrap intervals at chosen budgets ("N_opt@1e+21") as error bars.
            par = self.fits.get("parametric")
            if par:
                shown = [(key, iv) for key, iv in _at_budget_intervals(
                    par.get("ci", {}), "N_opt" if var == "n" else "D_opt")
                    if c_grid[0] <= key <= c_grid[-1]]
                for i, (key, (lo, hi)) in enumerate(shown):
                    mid = math.sqrt(lo * hi)
                    ax.errorbar([key], [mid], yerr=[[mid - lo], [hi - mid]], fmt="none",
                                color=METHOD_STYLE["parametric"]["color"], capsize=3, lw=1,
                                label=None if i else "parametric bootstrap interval at C")
            ax.axvspan(c_max, c_grid[-1], color="0.5", alpha=0.08, lw=0)
            ax.text(math.sqrt(c_max * c_grid[-1]), 0.985, "beyond the largest budget",
                    transform=ax.get_xaxis_transform(), fontsize=7, color="0.35", va="top",
                    ha="center")
            ax.set_xscale("log")
            ax.set_yscale("log")
            core = np.array([v for v in core if v is not None and np.isfinite(v) and v > 0])
            if len(core):
                y_lo, y_hi = core.min() / 2, core.max() * 2
                ax.set_ylim(y_lo, y_hi)
                if iso:
                    for p in iso.get("result", {}).get("isoflop", {}).get("budgets", []):
                        v = p.get(f"{var}_opt")
                        if (p.get("usable") or p.get("outside_range")) and _finite([v], 1) \
                                and not y_lo <= v <= y_hi:
                            off.append(f"{var.upper()}_opt = {_sci(v)} at C = {_sci(p['c'])}")
            if off:
                notes.append(f"isoFLOP minima off the {var.upper()}_opt scale (extrapolated, not "
                             "drawn; they enter the isoFLOP power law only if the fit kept them): " + "; ".join(off))
            ax.set_xlim(c_grid[0], c_grid[-1])
            ax.set_xlabel("Training compute C (FLOPs)")
            ax.set_ylabel(label)
            ax.grid(True, which="major", alpha=0.3)
            # Below the axes: with envelope points and bootstrap bands no corner stays empty.
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7.5,
                      frameon=False)
        fig.suptitle(f"Compute-optimal allocation - {self.kind} '{self.name}'", fontsize=11)
        missing = [m for m in ("parametric", "isoflop", "envelope") if m not in self.fits]
        if self.kind == "observations" and "envelope" in missing:
            missing.remove("envelope")  # no training curves: never applies
        if missing:
            notes.append("methods without a stored fit (not drawn): " + ", ".join(missing))
        return self._save(fig, name, notes)

    def _bootstrap_draws(self):
        """(finite draws, number left out, parameter names) of the parametric fit's bootstrap.

        A draw is a list of numbers, one per parameter. JSON has no infinity: an infinite or NaN
        parameter was stored as null (None here), and one None in the arithmetic of a law is a
        TypeError, so such draws are left out and counted (fits stored by this version already
        leave them out in C++).
        """
        par = self.fits.get("parametric")
        if not par:
            return [], 0, []
        boot = par.get("result", {}).get("bootstrap", {}) or {}
        draws = boot.get("draws") or []
        names = (par.get("result", {}).get("parametric", {}).get("param_names")
                 or list(par.get("params", {}).keys()))
        kept = []
        for d in draws:
            if (isinstance(d, list) and len(d) == len(names)
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                            and math.isfinite(x) for x in d)):
                kept.append([float(x) for x in d])
        return kept, len(draws) - len(kept), names

    def _non_finite_draws(self):
        """Bootstrap draws left out: those stored with a non-finite parameter."""
        par = self.fits.get("parametric") or {}
        boot = par.get("result", {}).get("bootstrap", {}) or {}
        stored = boot.get("non_finite") or 0
        return int(stored) + self._bootstrap_draws()[1]

    # ---- figure 3

    def loss_contours(self):
        """Iso-loss contours of the parametric law over (C, N), the frontier, the data."""
        name = "loss_contours"
        found = self._parametric_and_curves(name)
        if found is None:
            return None
        law, cpp = found
        c_obs, n_obs = self.obs["c"].to_numpy(), self.obs["n"].to_numpy()
        surf = cpp["surface"]
        c_axis, n_axis = np.asarray(surf["c"], float), np.asarray(surf["n"], float)
        cc, nn = np.meshgrid(c_axis, n_axis)
        loss = np.array([[np.nan if v is None else v for v in row] for row in surf["loss"]],
                        dtype=float)
        c_lo, c_hi = c_axis[0], c_axis[-1]
        n_lo, n_hi = n_axis[0], n_axis[-1]
        kept = ~self.obs["excluded"].to_numpy()
        obs_l = self.obs["loss"].to_numpy()
        # Contours where the data are: from just above the law's floor in view to the highest
        # fitted loss.
        lmin = max(float(np.nanmin(loss)), obs_l[kept].min() - 0.1)
        lmax = float(np.quantile(obs_l[kept], 0.99))
        levels = np.linspace(lmin, lmax, 12)
        norm = Normalize(vmin=lmin, vmax=lmax)
        fig, ax = plt.subplots(figsize=(8, 6))
        cs = ax.contour(cc, nn, loss, levels=levels, cmap="viridis", norm=norm, linewidths=1.0)
        ax.clabel(cs, levels[::2], fmt="%.2f", fontsize=7, inline=True)
        self._scatter_points(ax, c_obs, n_obs, obs_l, "viridis", norm, s=16, edgecolors="black",
                             linewidths=0.3, zorder=3)
        ax.scatter([], [], color="0.6", edgecolors="black", linewidths=0.3, s=16,
                   label="observations (colour = final loss)")
        self._scatter_excluded(ax, c_obs, n_obs)
        fr = cpp["frontier"]
        ax.plot(np.asarray(fr["c"], float), np.asarray(fr["n_opt"], float), color="#1f3fbf",
                lw=2.2, label="efficient frontier N_opt(C)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(c_lo, c_hi)
        ax.set_ylim(n_lo, n_hi)
        ax.set_xlabel("Training compute C (FLOPs)")
        ax.set_ylabel("Parameters N")
        ax.set_title(f"Parametric law ({law.form}): {self._law_text(law)}", fontsize=9)
        cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, pad=0.01)
        cb.set_label("Loss (nats/token)")
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
        notes = self._common_notes()
        if law.form == "moe":
            notes.append("the moe law is drawn at granularity G = 1; granularity.png shows "
                         "its dependence on G")
        return self._save(fig, name, notes)

    def _law_text(self, law: Law) -> str:
        """"E=1.82, A=478, ..." in the form's parameter order, Greek letters as symbols."""
        par = self.fits.get("parametric", {})
        order = par.get("result", {}).get("parametric", {}).get("param_names") or list(law.params)
        greek = {"alpha": "α", "beta": "β", "gamma": "γ", "alpha_N": "α_N", "alpha_D": "α_D"}
        return ", ".join(f"{greek.get(k, k)}={_fmt_param(law.params[k])}" for k in order
                         if k in law.params)

    # ---- figure 4

    def training_curves(self):
        """Loss against FLOPs for every run, coloured by N, with the envelope."""
        name = "training_curves"
        if self.kind != "sweep":
            return self._skip(name, "an imported observation set has final losses only, no "
                              "training curves (they come from a sweep's metrics)")
        if self.curves is None or self.curves["loss"].notna().sum() == 0:
            return self._skip(name, "no metrics logged yet for this sweep")
        runs = self.runs.set_index("id")
        col = N_COLUMNS.get(self.convention, "n_total")
        sizes = runs[col].astype(float)
        norm = LogNorm(vmin=max(sizes.min(), 1), vmax=max(sizes.max(), sizes.min() * 1.01 + 1))
        cmap = plt.get_cmap(SIZE_CMAP)
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for run_id, g in self.curves.dropna(subset=["loss"]).groupby("run_id"):
            g = g[g["flops"] > 0]
            if len(g) == 0 or run_id not in runs.index:
                continue
            ls = "-" if runs.loc[run_id, "status"] == "finished" else ":"
            if runs.loc[run_id, "n_experts"] > 0:
                ls = "--" if ls == "-" else ls
            ax.plot(g["flops"], g["loss"], color=cmap(norm(sizes[run_id])), lw=1.0, alpha=0.85,
                    ls=ls)
        notes = []
        env = self.fits.get("envelope")
        pts = (env or {}).get("result", {}).get("envelope", {}).get("points", [])
        if pts:
            ax.plot([p["c"] for p in pts], [p["loss"] for p in pts], color="black", lw=2.0,
                    label="envelope (stored fit)")
        else:
            e = _lower_envelope(self.curves[self.curves["run_id"].isin(runs.index)].dropna(
                subset=["loss"]))
            if e is not None:
                ax.plot(e[0], e[1], color="black", lw=1.6, ls="--",
                        label="lower envelope (computed here; no envelope fit stored)")
                notes.append("envelope drawn from the curves directly: "
                             + self._need_fit("envelope"))
        ax.set_xscale("log")
        ax.set_xlabel("Training compute so far (FLOPs)")
        ax.set_ylabel("Loss (nats/token)")
        _clip_loss_axis(ax, self.curves["loss"], low_q=0.0, high_q=0.97)
        ax.grid(True, which="major", alpha=0.3)
        cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
        cb.set_label(f"Parameters N ({self.convention.replace('_', '-')})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
        if (self.runs["status"] != "finished").any():
            notes.append("dotted curves: runs not finished")
        if self.mixed:
            notes.append("dashed curves: MoE runs")
        ax.set_title(f"Training curves - sweep '{self.name}' ({len(runs)} runs)",
                     fontsize=11)
        return self._save(fig, name, notes)

    # ---- figure 5

    def residuals(self):
        """log L - log L_hat of the parametric fit against N, D and C."""
        name = "residuals"
        found = self._parametric_and_curves(name)
        if found is None:
            return None
        law, cpp = found
        # Each point's residual as the C++ analysis evaluated it, found by its (N, D, loss).
        obs = self.obs
        residual = {_point_key(p["n"], p["d"], p["loss"]): p["log_residual"]
                    for p in cpp["points"]}
        r = np.array([residual.get(_point_key(n, d, l)) for n, d, l in
                      zip(obs["n"], obs["d"], obs["loss"])], dtype=float)
        norm = self._budget_norm()
        kept = ~obs["excluded"].to_numpy()
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), sharey=True)
        for ax, col, label in ((axes[0], "n", "Parameters N"),
                               (axes[1], "d", "Training tokens D"),
                               (axes[2], "c", "Training compute C (FLOPs)")):
            self._scatter_points(ax, obs[col], r, obs["c"], BUDGET_CMAP, norm, s=14,
                                 edgecolors="none", alpha=0.85)
            self._scatter_excluded(ax, obs[col], r, label=self.n_excluded and col == "n")
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.grid(True, which="major", alpha=0.3)
        axes[0].set_ylabel(r"Residual $\log L - \log \hat{L}$")
        fitted_r = r[kept & np.isfinite(r)]
        if len(fitted_r):
            # The fitted points set the scale; excluded outliers would flatten them.
            span = max(np.abs(fitted_r).max() * 1.15, 1e-3)
            axes[0].set_ylim(-span, span)
            above = int(np.sum(~kept & (np.abs(r) > span)))
            if above:
                axes[0].text(0.02, 0.97, f"{above} excluded point(s) off the scale "
                             f"(residual up to {np.nanmax(np.abs(r)):.2f})",
                             transform=axes[0].transAxes, fontsize=7.5, va="top", color="0.3")
        cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=BUDGET_CMAP), ax=axes, pad=0.01)
        cb.set_label("Training compute C (FLOPs)")
        fitted = r[kept & np.isfinite(r)]
        rms = float(np.sqrt(np.mean(fitted ** 2))) if len(fitted) else float("nan")
        fig.suptitle(f"Residuals of the parametric fit ({law.form}): {len(fitted)} fitted points, "
                     f"RMS {rms:.4f} in log loss" + (f", {self.n_excluded} excluded"
                                                      if self.n_excluded else ""), fontsize=11)
        return self._save(fig, name, self._common_notes())

    def extrapolation(self):
        """The held-out largest budget: losses predicted by the law fitted without it."""
        name = "extrapolation"
        par = self.fits.get("parametric")
        if not par:
            return self._skip(name, self._need_fit("parametric"))
        ex = par.get("result", {}).get("extrapolation")
        if not ex or not ex.get("test_loss"):
            why = (ex or {}).get("skipped") or "the stored parametric fit has none"
            return self._skip(name, f"no extrapolation check in the parametric fit: {why}")
        actual = np.asarray(ex["test_loss"], float)
        pred = np.asarray(ex["predicted_loss"], float)
        fig, ax = plt.subplots(figsize=(6, 5.5))
        lo, hi = min(actual.min(), pred.min()), max(actual.max(), pred.max())
        pad = (hi - lo) * 0.08 + 1e-3
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=1, ls="--",
                label="perfect prediction")
        ax.scatter(actual, pred, color=METHOD_STYLE["parametric"]["color"], s=30,
                   edgecolors="black", linewidths=0.4, zorder=3,
                   label=f"held-out budget C ≈ {_sci(ex.get('held_out_c', float('nan')))} FLOPs")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel("Actual final loss (nats/token)")
        ax.set_ylabel("Predicted final loss (nats/token)")
        ax.grid(True, alpha=0.3)
        # Below the axes: with few held-out points any corner may hold one.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, ncol=2,
                  frameon=False)
        text = (f"trained on {ex.get('n_train', '?')} points, tested on {ex.get('n_test', len(actual))}\n"
                f"mean |rel. error| {100 * ex.get('mean_abs_rel_error', float('nan')):.2f}%, "
                f"max {100 * ex.get('max_abs_rel_error', float('nan')):.2f}%")
        npred, nobs = ex.get("n_opt_predicted"), ex.get("n_opt_observed")
        if npred and nobs:
            text += f"\nN_opt predicted {_sci(npred)}, observed {_sci(nobs)}"
        ax.set_title("Extrapolation check: law fitted without the largest budget\n" + text,
                     fontsize=9)
        return self._save(fig, name)

    # ---- figure 6

    def moe(self):
        """Final loss against active parameters per expert count (MoE sweeps)."""
        name = "moe"
        if self.kind != "sweep" or not self.mixed:
            return self._skip(name, "no Mixture-of-Experts runs (n_experts > 0) in this source")
        obs = self.obs.copy()
        obs["n_act"] = obs["n_active"].where(obs["n_active"] > 0, obs["n_total"]).astype(float)
        counts = sorted(obs["n_experts"].unique())
        colours = plt.get_cmap("tab10")
        budgets = sorted(obs["budget"].unique())
        markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for i, e in enumerate(counts):
            g = obs[obs["n_experts"] == e]
            lbl = "dense" if e == 0 else f"{e} experts"
            for j, b in enumerate(budgets):
                gb = g[g["budget"] == b].sort_values("n_act")
                if len(gb) == 0:
                    continue
                ax.plot(gb["n_act"], gb["loss"], color=colours(i % 10), lw=1,
                        marker=markers[j % len(markers)], ms=5,
                        label=lbl if j == 0 or not ax.get_legend_handles_labels()[1].count(lbl)
                        else None)
        # Marker = budget, in a second legend.
        handles = [plt.Line2D([], [], color="0.3", marker=markers[j % len(markers)], ls="none",
                              label=f"C = {_sci(b)} FLOPs") for j, b in enumerate(budgets)]
        ax.set_xscale("log")
        ax.set_xlabel("Active parameters per token N_active")
        ax.set_ylabel("Final loss (nats/token)")
        ax.grid(True, which="major", alpha=0.3)
        leg1 = ax.legend(loc="upper right", fontsize=8, title="expert count", framealpha=0.9)
        ax.add_artist(leg1)
        ax.legend(handles=handles, loc="lower left", fontsize=7.5, title="budget", framealpha=0.9)
        ax.set_title(f"Mixture-of-Experts - sweep '{self.name}'", fontsize=11)
        return self._save(fig, name)

    # ---- figure 7

    def moe_compute(self):
        """Loss against compute per expert count: the best final loss at each budget, and each
        count's law's compute-optimal loss L*(C) (evaluated by the C++ fit library)."""
        name = "moe_compute"
        if self.kind != "sweep" or not self.mixed:
            return self._skip(name, "no Mixture-of-Experts runs (n_experts > 0) in this source")
        obs = self.obs[~self.obs["excluded"]] if "excluded" in self.obs else self.obs
        counts = sorted(obs["n_experts"].unique())
        laws = {int(e["n_experts"]): e for e in self.cpp.get("by_expert_count", [])}
        colours = plt.get_cmap("tab10")
        fig, ax = plt.subplots(figsize=(9, 5.5))
        notes, drawn_laws = [], 0
        for i, e in enumerate(counts):
            lbl = "dense" if e == 0 else f"{e} experts"
            best = obs[obs["n_experts"] == e].groupby("budget")["loss"].min().sort_index()
            ax.plot(best.index, best.values, ls="none", marker="o", ms=6, color=colours(i % 10),
                    label=f"{lbl}: best run per budget")
            entry = laws.get(int(e))
            frontier = ((entry or {}).get("curves") or {}).get("parametric", {}).get("frontier")
            if frontier and frontier.get("c"):
                ax.plot(frontier["c"], frontier["loss"], color=colours(i % 10), lw=1.5,
                        label=f"{lbl}: L*(C), fit #{entry['fit_id']}")
                drawn_laws += 1
            elif entry and entry.get("error"):
                notes.append(f"{lbl}: law not drawn: {entry['error']}")
        if drawn_laws == 0:
            notes.append("no per-expert-count laws stored: `isoflop sweep run` fits one per count; "
                         f"or run `isoflop fit --sweep {self.name} --n-experts K` for each K")
        ent = None
        if self.runs is not None and "data_entropy" in self.runs:
            e_vals = self.runs["data_entropy"].dropna()
            ent = float(e_vals.iloc[0]) if len(e_vals) else None
        if ent:
            ax.axhline(ent, color="0.4", ls=":", lw=1, label=f"data entropy {ent:.4f}")
        ax.set_xscale("log")
        ax.set_xlabel("Training compute C (FLOPs, by active parameters)")
        ax.set_ylabel("Final loss (nats/token)")
        _clip_loss_axis(ax, list(obs["loss"]) + ([ent] if ent else []))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, framealpha=0.9)
        ax.set_title(f"MoE loss against compute - sweep '{self.name}'", fontsize=11)
        return self._save(fig, name, notes)

    # ---- figure 8

    def expert_load(self, panels: int = 4):
        """Per-expert load over training for the largest run of each MoE expert count."""
        name = "expert_load"
        if self.kind != "sweep" or self.runs is None or not self.mixed:
            return self._skip(name, "no Mixture-of-Experts runs (n_experts > 0) in this source")
        runs = self.runs[(self.runs["n_experts"] > 0) & self.runs["loss"].notna()]
        picks = []
        for e in sorted(runs["n_experts"].unique()):
            g = runs[runs["n_experts"] == e].sort_values(["budget_flops", "n_active"])
            for _, run in g.iloc[::-1].iterrows():  # largest budget, then largest model
                loads = load_expert_loads(self.con, run["id"])
                if not loads.empty:
                    picks.append((int(e), run, loads))
                    break
        if not picks:
            return self._skip(name, "the MoE runs logged no per-expert load (metric extras "
                                    "load_0, load_1, ...)")
        picks = picks[:panels]
        fig, axes = plt.subplots(2, len(picks), figsize=(4.6 * len(picks), 6.2), squeeze=False,
                                 gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
        vmax = 1.0
        for _, _, loads in picks:
            cols = [c for c in loads.columns if c.startswith("load_")]
            vmax = max(vmax, float(np.nanmax(loads[cols].to_numpy() * len(cols))))
        norm = Normalize(vmin=0, vmax=vmax)
        for j, (e, run, loads) in enumerate(picks):
            cols = [c for c in loads.columns if c.startswith("load_")]
            rel = loads[cols].to_numpy().T * len(cols)  # (experts, steps), 1 = balanced
            tokens = loads["tokens"].to_numpy(dtype=float)
            ax, axb = axes[0][j], axes[1][j]
            edges = np.concatenate([[0.0], tokens]) if len(tokens) else np.array([0.0, 1.0])
            im = ax.pcolormesh(edges, np.arange(len(cols) + 1) - 0.5, rel, cmap="magma",
                               norm=norm, shading="flat")
            ax.set_ylabel("routed expert")
            ax.set_yticks(range(len(cols)))
            ax.set_title(f"{e} experts: N_active {_sci(float(run['n_active']))}, "
                         f"C = {_sci(float(run['budget_flops']))}", fontsize=9)
            axb.plot(tokens, rel.max(axis=0), color="#d62728", lw=1.2, label="max / mean")
            axb.axhline(1.0, color="0.4", ls=":", lw=1)
            axb.set_xlabel("Tokens trained")
            axb.set_ylabel("imbalance")
            axb.grid(True, alpha=0.3)
            axb.legend(fontsize=7, loc="upper right")
        fig.colorbar(im, ax=list(axes[0]), label="load / balanced share", shrink=0.9)
        fig.suptitle(f"Expert load over training - sweep '{self.name}'", fontsize=11)
        return self._save(fig, name)

    # ---- figure 9

    def granularity(self, panels: int = 4):
        """Loss against granularity G at `panels` fixed (N, D) of the data, with the stored
        moe-form law (Krajewski et al. 2024, eq. 5), and the law's residuals against G."""
        name = "granularity"
        obs = self.obs[np.isfinite(self.obs["g"].to_numpy(dtype=float))]
        if obs["g"].nunique() < 2:
            if self.kind == "sweep" and len(obs) == 0:
                why = "the sweep has no MoE runs (dense runs have no granularity G)"
            elif self.kind == "sweep":
                why = (f"every MoE run of the sweep has granularity G = {obs['g'].iloc[0]:g} "
                       "(sweep over model.moe.granularity for the law)")
            elif len(obs) == 0:
                why = ("this observation set has no MoE granularity G (import it with "
                       "`isoflop import FILE --g-column NAME`)")
            else:
                why = f"every point has the same granularity G = {obs['g'].iloc[0]:g}"
            return self._skip(name, why)
        f = self.fits.get("parametric:moe")
        law = (Law(form="moe", params=f["params"], k=flops_per_param_token(
            f.get("flops_convention"))) if f and f.get("params") else None)
        notes = []
        if law is None:
            notes.append("fitted law missing: needs a stored moe-form parametric fit: run "
                         f"`isoflop fit --observations {self.name} --form moe`")
        # Points sharing (N, D) to within 0.05 decades form one series; the series with the
        # most granularities, then `panels` of them spread over their loss, are drawn.
        key = pd.DataFrame({"ln": np.round(np.log10(obs["n"]) / 0.1),
                            "ld": np.round(np.log10(obs["d"]) / 0.1)}, index=obs.index)
        groups = [(k, obs.loc[idx]) for k, idx in key.groupby(["ln", "ld"]).groups.items()]
        groups = [(k, g) for k, g in groups if g["g"].nunique() >= 2]
        if not groups:
            return self._skip(name, "no (N, D) was measured at two or more granularities G")
        most = max(g["g"].nunique() for _, g in groups)
        groups = sorted((g for _, g in groups if g["g"].nunique() == most),
                        key=lambda g: g["loss"].mean())
        pick = sorted({int(round(i)) for i in np.linspace(0, len(groups) - 1,
                                                          min(panels, len(groups)))})
        chosen = [groups[i] for i in reversed(pick)]  # highest loss first: legend order = curves
        g_all = obs["g"].to_numpy(dtype=float)
        g_grid = np.logspace(math.log10(g_all.min() / 1.3), math.log10(g_all.max() * 2.5), 200)
        colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(chosen)))
        fig, (ax, axr) = plt.subplots(1, 2, figsize=(13.5, 5.4), constrained_layout=True,
                                      gridspec_kw={"width_ratios": [1.35, 1]})
        for colour, g in zip(colours, chosen):
            n, d = float(np.exp(np.log(g["n"]).mean())), float(np.exp(np.log(g["d"]).mean()))
            label = f"N = {_sci(n)}, D = {_sci(d)}"
            ax.scatter(g["g"], g["loss"], color=colour, s=34, edgecolors="black",
                       linewidths=0.4, zorder=3, label=label)
            if law is not None:
                with np.errstate(all="ignore"):
                    ax.plot(g_grid, law.loss(n, d, g_grid), color=colour, lw=1.8)
                    # G -> infinity leaves c + a/N^alpha + b/D^beta.
                    floor = float(law.loss(n, d, np.inf))
                ax.axhline(floor, color=colour, lw=0.9, ls=":", alpha=0.9)
        if law is not None:
            ax.plot([], [], color="0.3", lw=1.8, label="fitted law")
            ax.plot([], [], color="0.3", lw=0.9, ls=":", label="its limit G → ∞")
        ax.set_xscale("log")
        ticks = sorted(set(g_all))
        if len(ticks) <= 10:
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel("Granularity G")
        ax.set_ylabel("Final loss (nats/token)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
        if law is not None:
            p = law.params
            ax.set_title("Fitted law L = c + (g/G^γ + a)/N^α + b/D^β\n"
                         f"c={_fmt_param(p['c'])}, g={_fmt_param(p['g'])}, "
                         f"γ={_fmt_param(p['gamma'])}, a={_fmt_param(p['a'])}, "
                         f"α={_fmt_param(p['alpha'])}, b={_fmt_param(p['b'])}, "
                         f"β={_fmt_param(p['beta'])}", fontsize=9)
            with np.errstate(all="ignore"):
                r = np.log(obs["loss"].to_numpy()) - np.log(
                    law.loss(obs["n"].to_numpy(), obs["d"].to_numpy(), g_all))
            n_norm = LogNorm(vmin=obs["n"].min(), vmax=max(obs["n"].max(), obs["n"].min() * 1.01))
            # Spread the points of one G sideways (in log G) so they do not stack.
            jitter = np.exp(np.random.default_rng(0).uniform(-0.08, 0.08, len(r)))
            axr.scatter(g_all * jitter, r, c=obs["n"], cmap=SIZE_CMAP, norm=n_norm, s=14,
                        edgecolors="none", alpha=0.85)
            axr.axhline(0, color="black", lw=0.8)
            span = max(float(np.nanmax(np.abs(r))) * 1.15, 1e-3)
            axr.set_ylim(-span, span)
            rms = float(np.sqrt(np.nanmean(r ** 2)))
            axr.set_title(f"Residuals of all {len(r)} points (RMS {rms:.4f})", fontsize=9)
            axr.set_ylabel(r"Residual $\log L - \log \hat{L}$")
            cb = fig.colorbar(plt.cm.ScalarMappable(norm=n_norm, cmap=SIZE_CMAP), ax=axr,
                              pad=0.01)
            cb.set_label("Parameters N")
        else:
            axr.scatter(g_all, obs["loss"], c="0.4", s=12)
            axr.set_title("All points (no fitted law to compare with)", fontsize=9)
            axr.set_ylabel("Final loss (nats/token)")
        axr.set_xscale("log")
        if len(ticks) <= 10:
            axr.set_xticks(ticks)
            axr.set_xticklabels([f"{t:g}" for t in ticks])
            axr.minorticks_off()
        axr.set_xlabel("Granularity G")
        axr.grid(True, which="major", alpha=0.3)
        fig.suptitle(f"Granularity law (Krajewski et al. 2024) - {self.kind} '{self.name}': "
                     f"{len(obs)} points at G = " + ", ".join(f"{t:g}" for t in ticks[:10])
                     + (" ..." if len(ticks) > 10 else ""), fontsize=11)
        return self._save(fig, name, notes)

    # ---- everything

    def all_figures(self):
        """Draws every figure (closing each), for scripts; the notebook calls them one by one."""
        for stem, _, _ in FIGURES:
            fig = getattr(self, stem)()
            if fig is not None:
                plt.close(fig)

    def write_report(self) -> str:
        """Writes report.html (every figure, every skipped one with the reason) and
        manifest.json next to the figures. Returns the report's path."""
        manifest = {
            "db": os.path.abspath(self.db), "source_kind": self.kind, "source_name": self.name,
            "formats": self.formats, "figures": self.figures, "skipped": self.skipped,
            "report": os.path.join(self.out_dir, "report.html"),
        }
        path = manifest["report"]
        with open(path, "w", encoding="utf-8") as f:
            f.write(self._html())
        with open(os.path.join(self.out_dir, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
        print("wrote", path)
        return path

    def _html(self) -> str:
        e = html.escape
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
               f"<title>isoflop report: {e(self.name)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
               "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;"
               "font-size:90%}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
               ".note{color:#555;font-size:90%}.skip{color:#8a5a00}</style></head><body>",
               f"<h1>Scaling report: {e(self.kind)} '{e(self.name)}'</h1>",
               f"<p class=\"note\">Store <code>{e(os.path.abspath(self.db))}</code>, "
               f"{len(self.obs)} final-loss points, generated {now} by <code>isoflop plot</code>."
               "</p>"]
        out.append("<h2>Fits</h2>")
        methods = [m for m in ("parametric", "isoflop", "envelope") if m in self.fits]
        if methods:
            out.append("<table><tr><th>method</th><th>form</th><th>fit</th><th>points</th>"
                       "<th>parameters (95% interval)</th></tr>")
            for m in methods:
                f = self.fits[m]
                params = ", ".join(
                    f"{e(k)} = {_fmt_param(v)}"
                    + (f" [{_fmt_param(iv[0])}, {_fmt_param(iv[1])}]"
                       if (iv := _interval(f.get("ci", {}), k, CI_ALIASES.get(k, k))) else "")
                    for k, v in f.get("params", {}).items() if isinstance(v, (int, float)))
                out.append(f"<tr><td>{e(m)}</td><td>{e(f.get('form') or '')}</td>"
                           f"<td>#{f['id']} {e(f['created_at'])}</td><td>{f['n_points']}</td>"
                           f"<td>{params}</td></tr>")
            out.append("</table>")
        else:
            out.append("<p class=\"skip\">No fit in the store for this source: run "
                       "<code>isoflop fit</code> to get the fitted curves.</p>")
        for fig in self.figures:
            stem = fig["name"]
            files = [os.path.basename(p) for p in fig["files"]]
            img = next((p for p in files if p.endswith((".png", ".svg"))), None)
            out.append(f"<h2 id=\"{e(stem)}\">{e(fig['title'])}</h2>")
            out.append(f"<p>{e(FIGURE_BLURBS[stem])}</p>")
            if img:
                out.append(f"<p><img src=\"{e(urllib.parse.quote(img))}\" alt=\"{e(fig['title'])}\"></p>")
            out.append("<p class=\"note\">Files: " + ", ".join(
                f"<a href=\"{e(urllib.parse.quote(p))}\">{e(p)}</a>" for p in files) + "</p>")
            for n in fig.get("notes", []):
                out.append(f"<p class=\"note\">Note: {e(n)}</p>")
        if self.skipped:
            out.append("<h2>Figures not drawn</h2><ul>")
            for s in self.skipped:
                out.append(f"<li class=\"skip\"><b>{e(s['title'])}</b> ({e(s['name'])}): "
                           f"{e(s['reason'])}</li>")
            out.append("</ul>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------

def _point_key(n, d, loss) -> tuple:
    """An observation's identity across the store and the C++ analysis (12 digits each)."""
    return tuple(float(f"{float(x):.12g}") for x in (n, d, loss))


def _fmt_param(v) -> str:
    if not isinstance(v, (int, float)) or not np.isfinite(v):
        return str(v)
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"


def _ci_level(ci: dict):
    for v in ci.values():
        if isinstance(v, dict) and v.get("level"):
            return v["level"]
    return None


def _ci_text(ci: dict, name: str) -> str:
    iv = _interval(ci, name)
    return f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""


def _power_from_params(params: dict, var: str):
    k = params.get("n_opt_k" if var == "n" else "d_opt_k")
    a = params.get("n_opt_a" if var == "n" else "d_opt_b")
    return _power({"k": k, "a": a})


def _at_budget_intervals(ci: dict, prefix: str):
    """[(C, (lo, hi))] from ci_json keys like "N_opt@1e+21"."""
    out = []
    for key, v in ci.items():
        if not key.startswith(prefix + "@"):
            continue
        try:
            c = float(key.split("@", 1)[1])
        except ValueError:
            continue
        iv = _interval(ci, key)
        if iv and iv[0] > 0:
            out.append((c, iv))
    return sorted(out)


def _finite(values, count) -> bool:
    """True when `values` holds `count` finite numbers (JSON nulls are None)."""
    try:
        return (values is not None and len(values) == count
                and all(v is not None and np.isfinite(v) for v in values))
    except TypeError:
        return False


def _loss_limits(losses):
    v = pd.Series(losses).dropna().to_numpy()
    if len(v) == 0:
        return 0.0, 1.0
    pad = (v.max() - v.min()) * 0.06 + 1e-3
    return float(v.min() - pad), float(v.max() + pad)


def _clip_loss_axis(ax, losses, low_q=0.0, high_q=1.0):
    """Keeps the loss axis on the data that matter (early training losses dwarf the rest)."""
    v = pd.Series(losses).dropna().to_numpy()
    if len(v) == 0:
        return
    lo, hi = np.quantile(v, low_q), np.quantile(v, high_q)
    pad = (hi - lo) * 0.05 + 1e-3
    ax.set_ylim(lo - pad, hi + pad)


def _lower_envelope(curves: pd.DataFrame, levels: int = 60):
    """The lowest loss any curve reaches at each of `levels` log-spaced FLOP values, each curve
    interpolated in (log C, loss) within its own range, from where the shortest run ends (as
    fit/envelope.cc; the whole range when every run ends together). Used only when no envelope
    fit is stored; (C, loss) arrays or None."""
    curves = curves[curves["flops"] > 0]
    if curves["run_id"].nunique() < 2:
        return None
    lo, hi = curves["flops"].min(), curves["flops"].max()
    shortest_end = curves.groupby("run_id")["flops"].max().min()
    if shortest_end < hi:
        lo = max(lo, shortest_end)
    grid = np.logspace(math.log10(lo), math.log10(hi), levels)
    best = np.full(levels, np.inf)
    for _, g in curves.groupby("run_id"):
        g = g.sort_values("flops")
        x, y = np.log(g["flops"].to_numpy()), g["loss"].to_numpy()
        inside = (np.log(grid) >= x[0]) & (np.log(grid) <= x[-1])
        if inside.any():
            best[inside] = np.minimum(best[inside], np.interp(np.log(grid[inside]), x, y))
    ok = np.isfinite(best)
    return (grid[ok], best[ok]) if ok.sum() >= 2 else None
