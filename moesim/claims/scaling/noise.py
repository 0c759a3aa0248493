"""Claim ``scaling-noise``: the noise a run tolerates (sigma_p*, gamma*) does not shrink as d grows."""

from __future__ import annotations

import math

import numpy as np

from ..base import Check, Context, register
from .fits import _percentile_interval, threshold_fit
from .grids import claim_specs, options
from .runner import _base_columns, _config_value, export_table, run_spec


# --- 5. noise thresholds vs d --------------------------------------------------------------------

def noise_table(rows, axis: str):
    import pandas as pd

    level = (_config_value(rows, "sigma_p").astype(np.float64) if axis == "sigma_p"
             else np.array([r["config"]["gamma_range"][1] for r in rows], dtype=np.float64))
    return pd.DataFrame(dict(patch_dim=_config_value(rows, "patch_dim"), n_train=_config_value(rows, "n_train"),
                             level=level, axis=axis, **_base_columns(rows)))


def thresholds(df) -> dict:
    """Per d: the 50 %-success level with its bootstrap interval; and the slope of log threshold in
    log d with the bootstrap interval built from the per-d replicates."""
    per_d = {}
    for d, g in df.groupby("patch_dim"):
        per_d[int(d)] = threshold_fit(g["level"], g["success"], g["level"].astype(str).to_numpy())
    dims = np.array(sorted(per_d), dtype=np.float64)
    out = dict(per_d={d: {k: v for k, v in f.items() if k != "log_replicates"} for d, f in per_d.items()})
    ths = np.array([per_d[int(d)]["threshold"] for d in dims])
    if dims.size >= 2 and np.all(np.isfinite(ths)) and np.all(ths > 0):
        out["slope"] = float(np.polyfit(np.log(dims), np.log(ths), 1)[0])
    else:
        out["slope"] = math.nan
    reps = np.column_stack([per_d[int(d)]["log_replicates"] for d in dims]) if dims.size else np.zeros((0, 0))
    good = np.all(np.isfinite(reps), axis=1) if reps.size else np.zeros(0, bool)
    if dims.size >= 2 and good.any():
        lx = np.log(dims) - np.log(dims).mean()
        slopes = (reps[good] * lx).sum(1) / (lx**2).sum()  # least-squares slope of each replicate
    else:
        slopes = np.zeros(0)
    out["slope_interval"] = list(_percentile_interval(slopes))
    out["replicates_used"] = int(good.sum())
    return out


def analyse_noise(sig, gam) -> list[Check]:
    checks = []
    for df, name in ((sig, "sigma_p*"), (gam, "gamma*")):
        th = thresholds(df)
        lo, hi = th["slope_interval"]
        per = ", ".join(f"d={d}: {f['threshold']:.3g} [{f['interval'][0]:.3g}, {f['interval'][1]:.3g}]"
                        + (" (outside the grid)" if f["censored"] else "") for d, f in th["per_d"].items())
        passed = bool(np.isfinite(hi) and hi >= -1e-9)  # equal thresholds (slope 0) do not shrink
        checks.append(Check(f"{name} (50 % success) does not shrink as d grows (theory: any constant level is "
                            f"allowed for d large enough); rule: 95 % bootstrap interval of the slope of log {name} "
                            f"in log d reaches >= 0",
                            f"{per}; slope {th['slope']:.3f} [{lo:.3f}, {hi:.3f}]", passed, th))
    return checks


@register(
    "scaling-noise", "Definition 3.1 and Theorem 4.2 (constant sigma_p, D_gamma)",
    "Theorem 4.2 holds for any constant Gaussian-patch scale sigma_p and feature-noise range D_gamma once d is large "
    "enough, so the noise a run tolerates must not shrink as d grows.",
    "Grid: working point (K = 4, M = 8, J = 3, T = 500), d in {32, 64, 128} with n = 40 d, sigma_p in {1, 1.5, "
    "2.2, 3.3, 5, 7.5, 11} (gamma ~ U(0.5, 3)) and, separately, gamma ~ U(0.5, gamma_max), gamma_max in {2, 3, "
    "4, 5, 6.5, 8.5} (sigma_p = 1); 6 seeds a cell. Fitted per d: logistic success in log level, threshold at "
    "50 %; then the slope of log threshold in log d.",
    "Sign rule on the slope (any shrinking contradicts a constant allowance): 95 % bootstrap interval (cells "
    "resampled within d) must reach 0.",
    tier="scaling",
)
def scaling_noise(ctx: Context):
    opts = options(ctx)
    s_spec, g_spec = claim_specs(ctx, "scaling-noise")
    sig = noise_table(run_spec(s_spec, opts), "sigma_p")
    gam = noise_table(run_spec(g_spec, opts), "gamma_max")
    import pandas as pd

    export_table(opts, "scaling-noise", pd.concat([sig, gam], ignore_index=True), [s_spec, g_spec])
    return analyse_noise(sig, gam)
