"""Claim ``scaling-router-n``: the router's feature/center alignment ratio falls like n^-1/2 (Section 5)."""

from __future__ import annotations

import numpy as np

from ...metrics import majority_experts
from ..base import Check, Context, register
from .fits import exponent_check, power_fit
from .grids import claim_specs, options
from .runner import _base_columns, _config_value, export_table, run_spec


# --- 3. router alignment vs n --------------------------------------------------------------------

def alignment_ratio(rows) -> np.ndarray:
    """Per run: geometric mean over k of max_j |<theta_m, v_j>| / <theta_m, c_k>, m = m*(k) (NaN
    where some <theta_m*(k), c_k> <= 0: the router is not aligned with the center at all)."""
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if r["status"] != "done":
            continue
        counts = np.asarray(r["metrics"]["test_dispatch_counts"])  # (K, M)
        mstar = majority_experts(counts)  # (K,)
        rc = np.asarray(r["trajectory"]["snapshots/router_center"])[-1]  # (M, K)
        rf = np.asarray(r["trajectory"]["snapshots/router_feature"])[-1]
        K = counts.shape[0]
        own = rc[mstar, np.arange(K)]
        feat = np.abs(rf[mstar]).max(-1)
        if np.all(own > 0):
            out[i] = float(np.exp(np.mean(np.log(feat / own))))
    return out


def alignment_table(rows):
    import pandas as pd

    return pd.DataFrame(dict(n_train=_config_value(rows, "n_train"), feature_center_ratio=alignment_ratio(rows),
                             **_base_columns(rows)))


def analyse_alignment(df) -> list[Check]:
    fit = power_fit(df["feature_center_ratio"], {"n": df["n_train"]}, df["n_train"].to_numpy())
    med = df.groupby("n_train")["feature_center_ratio"].median()
    check = exponent_check("router feature/center alignment ratio ~ n^b: exponent b", fit, "n", -0.5)
    check.measured += "; median ratio " + ", ".join(f"n={int(n)}: {v:.3g}" for n, v in med.items())
    check.values["median_ratio"] = {int(n): float(v) for n, v in med.items()}
    return [check]


@register(
    "scaling-router-n", "Section 5 (router-learning stage)",
    "The router learns the cluster centers because the feature terms of its gradient, y alpha v_k and "
    "eps gamma v_k', average out over the samples: their share falls like n^-1/2.",
    "Grid: working point (K = 4, M = 8, J = 3, d = 50, T = 500, 2000 test points), n in {2000, 4000, 8000, "
    "16000}, 8 seeds. Per run: geometric mean over k of max_j |<theta_m, v_j>| / <theta_m, c_k> for "
    "m = m*(k), after the last step. Fitted: exponent of n (theory -1/2).",
    "95 % stratified-bootstrap interval must meet -0.5 +- 0.1 (EXPONENT_MARGIN).",
    tier="scaling",
)
def scaling_router_n(ctx: Context):
    opts = options(ctx)
    [spec] = claim_specs(ctx, "scaling-router-n")
    df = alignment_table(run_spec(spec, opts))
    export_table(opts, "scaling-router-n", df, [spec])
    return analyse_alignment(df)
