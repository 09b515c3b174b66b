"""The statistics the BabyLM 2025 scores need, in plain numpy (no scipy, no statsmodels).

  rankdata / spearman  Spearman's rho = Pearson correlation of the ranks, ties
                       getting the average of the ranks they span (the WUG tasks).
  pearson              Pearson's r (the AoA "curve fitness").
  ols_r2               R^2 of an ordinary least-squares fit with an intercept, given
                       formula-style terms ("a", "a:b" for a product) (the reading task,
                       which the official pipeline fits with statsmodels' `smf.ols`).
  fit_sigmoid          least-squares fit of f(x) = a / (1 + exp(-b (x - c))) + d:
                       MINPACK's Levenberg-Marquardt, with optional box bounds (the AoA
                       task, which the official pipeline fits with scipy's `curve_fit`).

Degenerate inputs (fewer than two points, a constant column) give NaN, as the
scipy functions do, so callers can report "undefined" instead of crashing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# ---------------------------------------------------------------------------
# Correlations


def rankdata(x) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they occupy (e.g. [10, 20, 20] -> [1, 2.5, 2.5])."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # boundaries of runs of equal values in the sorted array
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]  # exclusive
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def pearson(x, y) -> float:
    """Pearson's r; NaN for fewer than 2 points or a constant input."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("pearson needs two 1-D arrays of the same length")
    if len(x) < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    den = np.sqrt((dx @ dx) * (dy @ dy))
    if den == 0:
        return float("nan")
    return float(np.clip((dx @ dy) / den, -1.0, 1.0))


def spearman(x, y) -> float:
    """Spearman's rho with average ranks for ties; NaN when either input is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    return pearson(rankdata(x), rankdata(y))


# ---------------------------------------------------------------------------
# Ordinary least squares


def design_matrix(columns: Mapping[str, np.ndarray], terms: Sequence[str]) -> np.ndarray:
    """(n, 1 + len(terms)): an intercept column, then one column per term; "a:b" is a * b."""
    n = len(next(iter(columns.values())))
    cols = [np.ones(n)]
    for term in terms:
        col = np.ones(n)
        for name in term.split(":"):
            col = col * np.asarray(columns[name], dtype=np.float64)
        cols.append(col)
    return np.column_stack(cols)


def ols_r2(y, X) -> float:
    """R^2 = 1 - SSR / SST of the least-squares fit of y on X (X holds the intercept column).

    lstsq solves rank-deficient designs too (the minimum-norm solution has the
    same fitted values), as statsmodels' pinv-based fit does.
    """
    y = np.asarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    centred = y - y.mean()
    sst = centred @ centred
    if sst == 0:
        return float("nan")
    return float(1.0 - (resid @ resid) / sst)


def pairwise_terms(names: Sequence[str]) -> list[str]:
    """Main effects and every two-way interaction, in the order statsmodels formulas list them
    when written out as in the official reading scorer: a, b, c, a:b, a:c, b:c."""
    out = list(names)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            out.append(f"{names[i]}:{names[j]}")
    return out


# ---------------------------------------------------------------------------
# Sigmoid fits


def sigmoid(x, a: float, b: float, c: float, d: float) -> np.ndarray:
    """a / (1 + exp(-b (x - c))) + d, written with tanh so that no exp overflows."""
    return a * 0.5 * (1.0 + np.tanh(0.5 * b * (np.asarray(x, dtype=np.float64) - c))) + d


def _forward_difference_jacobian(x: np.ndarray, y: np.ndarray, p: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(n, 4) Jacobian of the residuals f = sigmoid(x; p) - y by forward differences, with
    MINPACK's steps h_j = sqrt(eps) |p_j| (sqrt(eps) when p_j = 0), as `lmdif` takes them."""
    root_eps = np.sqrt(np.finfo(np.float64).eps)
    J = np.empty((len(x), 4))
    for j in range(4):
        h = root_eps * abs(p[j]) or root_eps
        q = p.copy()
        q[j] += h
        J[:, j] = ((sigmoid(x, *q) - y) - f) / h
    return J


def _lm_step(J: np.ndarray, f: np.ndarray, D: np.ndarray, delta: float, par: float) -> tuple[np.ndarray, float]:
    """The Levenberg-Marquardt step s = -(J^T J + par D^2)^-1 J^T f whose scaled length ||D s||
    is at most delta (par = 0, the Gauss-Newton step, when that one is short enough), else
    within 10% of delta (Moré 1978, as MINPACK's `lmpar`). Returns (s, par)."""
    U, sig, Vt = np.linalg.svd(J / D, full_matrices=False)  # J D^-1 = U diag(sig) V^T
    ft = U.T @ f
    keep = sig > sig.max(initial=0.0) * 1e-12  # drop null directions (rank-deficient J)

    def z_of(lam):  # z = D s
        w = np.where(keep, sig / np.where(keep, sig * sig + lam, 1.0), 0.0)
        return -(Vt.T @ (w * ft))

    z = z_of(0.0)
    if np.linalg.norm(z) <= 1.1 * delta:
        return z / D, 0.0
    # ||z(lam)|| decreases in lam; 1/||z|| is nearly linear in lam (Hebden): Newton on it, bisection as a guard.
    lo, hi = 0.0, np.linalg.norm(sig * ft) / delta
    lam = min(max(par, lo), hi) or hi * 1e-3
    for _ in range(60):
        z = z_of(lam)
        nz = np.linalg.norm(z)
        if abs(nz - delta) <= 0.1 * delta:
            break
        if nz > delta:
            lo = lam
        else:
            hi = lam
        w = np.where(keep, sig / np.where(keep, sig * sig + lam, 1.0), 0.0)
        dnz = -np.sum((w * ft) ** 2 / np.where(keep, sig * sig + lam, 1.0)) / nz  # d||z||/dlam
        new = lam - (1.0 / nz - 1.0 / delta) / (-dnz / nz**2) if dnz != 0 else hi
        lam = new if lo < new < hi else 0.5 * (lo + hi)
    return z / D, lam


def fit_sigmoid(x, y, p0, bounds=None, max_nfev: int = 1000, ftol: float = 1.49012e-8,
                xtol: float = 1.49012e-8) -> np.ndarray | None:
    """Least-squares (a, b, c, d) of `sigmoid` through the points (x, y), or None if the fit fails.

    The official AoA code fits with scipy's `curve_fit(..., maxfev=1000)`, i.e. MINPACK's
    `lmdif` (Moré 1978) without bounds. This is the same algorithm in numpy: forward-difference
    Jacobian with MINPACK's steps, column-norm scaling, trust-region updates of the
    Levenberg-Marquardt parameter, the same stopping rules (actual and predicted relative
    reduction of the sum of squares <= ftol, or trust radius <= xtol * ||D p||) and budget
    (a Jacobian costs 4 evaluations; running out is a failure: `curve_fit` raises and the
    official code then has no AoA for the word).

    bounds = (lower, upper): scipy switches to its trust-region-reflective method there; we
    keep the same iteration, hold a parameter that sits on a bound with the gradient pushing
    out, and move variables that would leave the box onto it. On the children's CDI curves
    this gives scipy's ages of acquisition to 1e-4 months (tests/test_eval_tasks2025.py).

    Where the sigmoid is not identifiable (a flat or straight learning curve) the parameters
    drift along a valley and any implementation stops wherever its progress test fires: there
    our fit may differ from scipy's, in values or in whether it converges at all (5 of 300
    synthetic curves, mostly straight lines, in our comparison; the AoAs of the curves
    both fit agreed to 2e-4 log10 words).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p0, dtype=np.float64).copy()
    if bounds is not None:
        lo, hi = (np.asarray(b, dtype=np.float64) for b in bounds)
        if np.any(p < lo) or np.any(p > hi):
            raise ValueError("initial guess is outside the bounds")
    else:
        lo, hi = np.full(4, -np.inf), np.full(4, np.inf)
    eps = np.finfo(np.float64).eps

    f = sigmoid(x, *p) - y
    fnorm = np.linalg.norm(f)
    nfev, first, par = 1, True, 0.0
    D = delta = xnorm = None
    while True:
        J = _forward_difference_jacobian(x, y, p, f)  # (n, 4)
        nfev += 4
        if not (np.all(np.isfinite(J)) and np.isfinite(fnorm)):
            return None
        colnorm = np.linalg.norm(J, axis=0)
        if D is None:
            D = np.where(colnorm == 0, 1.0, colnorm)
            xnorm = np.linalg.norm(D * p)
            delta = 100.0 * xnorm if xnorm > 0 else 100.0
        else:
            D = np.maximum(D, colnorm)
        g = J.T @ f
        if fnorm == 0 or not np.any(g):
            return p  # exact fit, or a stationary point (MINPACK's gtol = 0 test)
        # A parameter on a bound that the gradient pushes outwards stays there.
        free = ~(((p <= lo) & (g > 0)) | ((p >= hi) & (g < 0)))
        if not free.any():
            return p
        while True:
            # A variable whose step would leave the box moves onto its bound; the step of the
            # others is then solved again with that move fixed (at most 4 rounds).
            s = np.zeros(4)
            move = free.copy()
            for _ in range(4):
                fixed_part = f + J[:, ~move] @ s[~move]
                s[move], par = _lm_step(J[:, move], fixed_part, D[move], delta, par)
                out = move & ((p + s < lo) | (p + s > hi))
                if not out.any():
                    break
                s[out] = np.clip(p + s, lo, hi)[out] - p[out]
                move &= ~out
                if not move.any():
                    break
            s = np.clip(p + s, lo, hi) - p
            pnorm = np.linalg.norm(D * s)
            if pnorm > delta > 0:  # moves onto bounds may overshoot the trust region: shorten (stays in the box)
                s *= delta / pnorm
                pnorm = delta
            q = p + s
            if first:
                delta = min(delta, pnorm)
            fq = sigmoid(x, *q) - y
            nfev += 1
            fnorm1 = np.linalg.norm(fq)
            actred = 1.0 - (fnorm1 / fnorm) ** 2 if 0.1 * fnorm1 < fnorm else -1.0
            Js = J @ s
            dirder = (f @ Js) / fnorm**2  # < 0 for a descent step
            prered = -(2.0 * (f @ Js) + Js @ Js) / fnorm**2
            ratio = actred / prered if prered > 0 else 0.0  # a step the model calls uphill is a failure
            if ratio <= 0.25:  # poor agreement: shrink the trust region
                temp = 0.5 if actred >= 0 else 0.5 * dirder / (dirder + 0.5 * actred)
                if 0.1 * fnorm1 >= fnorm or temp < 0.1 or prered <= 0:
                    temp = 0.1
                delta = temp * min(delta, pnorm / 0.1)
                par /= temp
            elif par == 0 or ratio >= 0.75:  # good agreement: grow it
                delta = pnorm / 0.5
                par *= 0.5
            if ratio >= 1e-4:  # successful step
                p, f, fnorm = q, fq, fnorm1
                xnorm = np.linalg.norm(D * p)
                first = False
            if abs(actred) <= ftol and prered <= ftol and 0.5 * ratio <= 1:
                return p
            if delta <= xtol * xnorm:
                return p
            if nfev >= max_nfev:
                return None
            if (abs(actred) <= eps and prered <= eps and 0.5 * ratio <= 1) or delta <= eps * xnorm:
                return None  # tolerances too small to make progress: MINPACK reports failure
            if ratio >= 1e-4:
                break


def sigmoid_crossing(params, level: float) -> float | None:
    """The x where the fitted sigmoid equals `level`, or None when the curve never reaches it
    (needs a > 0, b > 0 and d < level < a + d)."""
    a, b, c, d = (float(v) for v in params)
    if a <= 0 or b <= 0 or not d < level < a + d:
        return None
    return c - np.log(a / (level - d) - 1.0) / b
