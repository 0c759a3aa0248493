"""The statistics of the scaling tier: power-law fits, logistic fits, trend tests, bootstraps.

Every interval is a stratified bootstrap (rows resampled within their grid cell) with the
generator seed ``BOOTSTRAP_SEED``, so the verdicts are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..base import Check
from .rules import BOOTSTRAP, BOOTSTRAP_SEED, EXPONENT_MARGIN, LEVEL, PERMUTATIONS


# --- statistics ----------------------------------------------------------------------------------

def _rng() -> np.random.Generator:
    return np.random.default_rng(BOOTSTRAP_SEED)


def _percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def stratified_indices(cells: np.ndarray, rng: np.random.Generator, reps: int) -> np.ndarray:
    """Bootstrap index sets (reps, N): rows resampled with replacement within each cell (grid point)."""
    cells = np.asarray(cells)
    N = cells.size
    out = np.empty((reps, N), dtype=np.int64)
    for c in np.unique(cells):
        idx = np.flatnonzero(cells == c)
        out[:, idx] = idx[rng.integers(0, idx.size, size=(reps, idx.size))]
    return out


@dataclass
class PowerFit:
    """log y = c + sum_j b_j log x_j by least squares, with stratified-bootstrap 95 % intervals."""

    names: list[str]
    coef: dict[str, float]
    interval: dict[str, tuple[float, float]]
    n: int
    dropped: int  # rows with a non-finite or non-positive y (censored), left out

    def to_dict(self) -> dict:
        return dict(names=self.names, coef=self.coef, interval={k: list(v) for k, v in self.interval.items()},
                    n=self.n, dropped=self.dropped)


def power_fit(y, regressors: dict[str, np.ndarray], cells, reps: int = BOOTSTRAP) -> PowerFit:
    """Fit the exponents of y = C prod_j x_j^b_j over runs; bootstrap within cells (grid points)."""
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y) & (y > 0)
    names = list(regressors)
    X = np.column_stack([np.ones(ok.sum())] + [np.log(np.asarray(regressors[k], dtype=np.float64)[ok]) for k in names])
    ly = np.log(y[ok])
    cells = np.asarray(cells)[ok]
    if ly.size <= X.shape[1]:
        nan = {k: math.nan for k in names}
        return PowerFit(names, nan, {k: (math.nan, math.nan) for k in names}, int(ok.sum()), int((~ok).sum()))
    coef = np.linalg.lstsq(X, ly, rcond=None)[0]
    idx = stratified_indices(cells, _rng(), reps)
    boot = np.full((reps, X.shape[1]), np.nan)
    for b in range(reps):
        Xi, yi = X[idx[b]], ly[idx[b]]
        if np.linalg.matrix_rank(Xi) == X.shape[1]:
            boot[b] = np.linalg.lstsq(Xi, yi, rcond=None)[0]
    return PowerFit(names, {k: float(coef[j + 1]) for j, k in enumerate(names)},
                    {k: _percentile_interval(boot[:, j + 1]) for j, k in enumerate(names)}, int(ok.sum()),
                    int((~ok).sum()))


def exponent_check(prediction: str, fit: PowerFit, name: str, theory: float, kind: str = "equal") -> Check:
    """Compare a fitted exponent with the theory's.

    ``kind="equal"`` (an order Theta(x^theory)): pass when the 95 % interval meets
    [theory - EXPONENT_MARGIN, theory + EXPONENT_MARGIN]. ``kind="at_least"`` (a bound O(x^theory)
    as x -> 0, i.e. the quantity falls at least as fast as x^theory): pass unless the whole interval
    lies below theory - EXPONENT_MARGIN.
    """
    b, (lo, hi) = fit.coef[name], fit.interval[name]
    if kind == "equal":
        passed = bool(np.isfinite(lo) and lo <= theory + EXPONENT_MARGIN and hi >= theory - EXPONENT_MARGIN)
        rule = f"95 % interval meets [{theory - EXPONENT_MARGIN:g}, {theory + EXPONENT_MARGIN:g}]"
    elif kind == "at_least":
        passed = bool(np.isfinite(hi) and hi >= theory - EXPONENT_MARGIN)
        rule = f"95 % interval reaches >= {theory - EXPONENT_MARGIN:g}"
    else:
        raise ValueError(f"kind={kind!r}: choose 'equal' or 'at_least'")
    measured = f"{b:.3f} [{lo:.3f}, {hi:.3f}] (95 % bootstrap, {fit.n} runs" + (
        f", {fit.dropped} censored left out)" if fit.dropped else ")")
    return Check(f"{prediction}: theory {theory:g}; rule: {rule}", measured, passed,
                 dict(fitted=b, interval=[lo, hi], theory=theory, margin=EXPONENT_MARGIN, kind=kind, fit=fit.to_dict()))


def logistic_fits(x, y, penalty: float = 1e-3, iterations: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Many logistic regressions at once: P(y = 1) = 1 / (1 + exp(-(a + b x))), row by row.

    ``x``, ``y``: (R, N) (or (N,)). Newton's method on the log-likelihood with a small ridge
    (``penalty`` on b, ``penalty / 10`` on a), which keeps the fit finite when the grid separates
    successes from failures: the 50 % point -a/b then lies between the separating grid values.
    Returns a, b and the unpenalized log-likelihood, each (R,).
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    x, y = np.broadcast_arrays(x, y)
    center = x.mean(1, keepdims=True)
    xc = x - center
    a = np.zeros(x.shape[0])
    b = np.zeros(x.shape[0])
    lam_a, lam_b = penalty / 10, penalty
    for _ in range(iterations):
        z = a[:, None] + b[:, None] * xc
        p = 0.5 * (1 + np.tanh(0.5 * z))  # 1 / (1 + e^-z) without overflow
        r = p - y
        w = p * (1 - p)
        g = np.stack([r.sum(1) + lam_a * a, (r * xc).sum(1) + lam_b * b], 1)
        h11 = w.sum(1) + lam_a
        h12 = (w * xc).sum(1)
        h22 = (w * xc**2).sum(1) + lam_b
        det = h11 * h22 - h12**2
        da = (h22 * g[:, 0] - h12 * g[:, 1]) / det
        db = (h11 * g[:, 1] - h12 * g[:, 0]) / det
        a, b = a - da, b - db
        if np.max(np.abs(da)) + np.max(np.abs(db)) < 1e-10:
            break
    z = a[:, None] + b[:, None] * xc
    ll = -(np.logaddexp(0, z) - y * z).sum(1)
    return a - b * center[:, 0], b, ll


def logistic_fit(x, y, penalty: float = 1e-3) -> tuple[float, float, float]:
    """One logistic regression (``logistic_fits`` of one row): (a, b, log-likelihood)."""
    a, b, ll = logistic_fits(np.asarray(x)[None], np.asarray(y)[None], penalty)
    return float(a[0]), float(b[0]), float(ll[0])


def trend_test(values, dose, reps: int = PERMUTATIONS) -> tuple[float, float]:
    """One-sided permutation test of an increasing trend of ``values`` in ``dose``.

    Statistic: Spearman's rank correlation (ties averaged; for 0/1 values the Cochran-Armitage
    trend test on ranks). Returns (rho, p) with p = (1 + #{rho_perm >= rho}) / (1 + reps).
    """
    from scipy.stats import rankdata

    v = rankdata(np.asarray(values, dtype=np.float64))
    x = rankdata(np.asarray(dose, dtype=np.float64))
    v, x = v - v.mean(), x - x.mean()
    den = math.sqrt(float((v**2).sum() * (x**2).sum()))
    if den == 0:
        return 0.0, 1.0
    rho = float((v * x).sum() / den)
    rng = _rng()
    perm = np.argsort(rng.random((reps, v.size)), axis=1)
    rho_perm = (v[perm] * x).sum(1) / den
    return rho, float((1 + (rho_perm >= rho - 1e-12).sum()) / (1 + reps))


def threshold_fit(level, ok, cells, reps: int = BOOTSTRAP) -> dict:
    """The 50 %-success level of a noise axis: logistic in log(level), with bootstrap replicates.

    Returns dict(threshold, interval (95 %), log_replicates (reps,), slope b, censored: the fitted
    threshold is not inside the grid, e.g. every run succeeded or every run failed).
    """
    x = np.log(np.asarray(level, dtype=np.float64))
    y = np.asarray(ok, dtype=np.float64)
    a, b, _ = logistic_fit(x, y)
    inside = y.min() < y.max() and b < 0
    th = math.exp(-a / b) if inside else math.nan
    idx = stratified_indices(cells, _rng(), reps)
    ai, bi, _ = logistic_fits(x[idx], y[idx])
    yb = y[idx]
    good = (bi < 0) & (yb.min(1) < yb.max(1))
    boot = np.where(good, -ai / np.where(good, bi, -1.0), np.nan)
    lo, hi = _percentile_interval(boot)
    censored = bool(not np.isfinite(th) or th < math.exp(x.min()) or th > math.exp(x.max()))
    return dict(threshold=th, interval=[math.exp(lo) if np.isfinite(lo) else math.nan,
                                        math.exp(hi) if np.isfinite(hi) else math.nan],
                log_replicates=boot, slope=b, censored=censored)
