#!/usr/bin/python3
"""Independent check of the fit: scipy L-BFGS-B over Hoffmann's 4,500-start grid on the 240
Chinchilla points, summed Huber (delta 1e-3) of log residuals, with an analytic gradient and
with finite differences. Prints each variant's time, best objective and parameters.
Run with Debian's interpreter: /usr/bin/python3 bench/fit/scipy_reference.py [--quick]"""
import csv, itertools, os, sys, time
import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, huber

HERE = os.path.dirname(os.path.abspath(__file__))
CSV = os.path.join(HERE, "..", "..", "data", "chinchilla", "svg_extracted_data.csv")
DELTA = 1e-3

rows = list(csv.DictReader(open(CSV)))
n = np.array([float(r["Model Size"]) for r in rows])
c = np.array([float(r["Training FLOP"]) for r in rows])
loss = np.array([float(r["loss"]) for r in rows])
keep = np.argsort(loss)[:-5]  # drop the five highest losses -> 240 points
n, c, loss = n[keep], c[keep], loss[keep]
d = c / (6 * n)
ln, ld, ll = np.log(n), np.log(d), np.log(loss)


def objective(x):
    e, a, b, alpha, beta = x
    pred = logsumexp([a - alpha * ln, b - beta * ld, np.full_like(ln, e)], axis=0)
    return np.sum(huber(DELTA, ll - pred))


def objective_and_grad(x):
    e, a, b, alpha, beta = x
    u = np.stack([a - alpha * ln, b - beta * ld, np.full_like(ln, e)])
    lse = logsumexp(u, axis=0)
    w = np.exp(u - lse)  # softmax weights
    r = ll - lse
    dh = np.clip(r, -DELTA, DELTA)  # huber'(r)
    g = -np.array([np.sum(dh * w[2]), np.sum(dh * w[0]), np.sum(dh * w[1]),
                   -np.sum(dh * w[0] * ln), -np.sum(dh * w[1] * ld)])
    return np.sum(huber(DELTA, r)), g


grid = list(itertools.product(np.arange(-1, 1.01, 0.5), np.arange(0, 25.1, 5),
                              np.arange(0, 25.1, 5), np.arange(0, 2.01, 0.5),
                              np.arange(0, 2.01, 0.5)))
if "--quick" in sys.argv:
    grid = grid[::10]
print(f"points={len(loss)} starts={len(grid)}")
for label, kwargs in [("analytic", dict(jac=True)), ("numeric", dict())]:
    fun = objective_and_grad if kwargs else objective
    t0 = time.time()
    best = None
    for x0 in grid:
        res = minimize(fun, x0, method="L-BFGS-B", **kwargs)
        if best is None or res.fun < best.fun:
            best = res
    dt = time.time() - t0
    e, a, b, alpha, beta = best.x
    print(f"scipy L-BFGS-B {label:8s}: {dt:7.2f} s  best objective {best.fun:.10g}  "
          f"E={np.exp(e):.5g} A={np.exp(a):.5g} B={np.exp(b):.5g} alpha={alpha:.5g} beta={beta:.5g}")
