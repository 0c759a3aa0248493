"""Phase diagrams from sweeps: where the conclusions of Theorem 4.2 hold, beside the theory.

A run *succeeds* when the layer both specialises and classifies (Theorem 4.2, conclusions 2-4):
the majority experts m*(k) of the K clusters (test dispatch) are distinct, and the test accuracy
is at least ``SUCCESS_ACCURACY``. A failed (raised or diverged) run counts as no success.

Input is a DataFrame from ``moesim.store.load_runs`` or a CSV from ``moesim.sweeps.export.export_csv``
(``load_results`` reads either). pandas and matplotlib are imported only here.
"""

from __future__ import annotations

import math
import os
import typing
from pathlib import Path

import numpy as np

from .config import field_types

#: Test accuracy (%) a run needs to count as a success (with distinct majority experts).
SUCCESS_ACCURACY = 99.0
#: Success rate at which a grid point counts as "enough experts".
SUCCESS_LEVEL = 0.9
#: The paper's experiments use K = 4 clusters and M = 8 experts (d = 50): the theory's constant
#: is unknown, so its curve is scaled to pass through this point.
PAPER_POINT = (4, 8)


def load_results(path: str | os.PathLike, sweep: str | None = None):
    """A sweep's runs as a DataFrame, from a run store (``.sqlite``/``.db``) or an exported CSV.

    Range fields become tuples, ``majority_experts`` lists of ints; from a store the
    ``moesim.sweeps.export.TRAJECTORY_METRICS`` are computed as ``export_csv`` writes them; ``success``
    (at the last step) is added.
    """
    import pandas as pd

    path = Path(path)
    if path.suffix == ".csv":
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
        for name, kind in field_types().items():
            if name in df and kind is tuple:
                df[name] = df[name].map(lambda s: tuple(float(a) for a in str(s).split(",")))
        if "majority_experts" in df:
            df["majority_experts"] = df["majority_experts"].map(
                lambda s: [int(a) for a in str(s).split()] if isinstance(s, str) else [])
        if "distinct_majority" in df:
            df["distinct_majority"] = df["distinct_majority"].map(_as_bool)
    else:
        from .store import RunStore
        from .sweeps.export import TRAJECTORY_METRICS, trajectory_metrics

        with RunStore(path, create=False, readonly=True) as store:
            df = store.dataframe(sweep)
            traj = pd.DataFrame([trajectory_metrics(store.trajectory(k)) for k in df["key"]], index=df.index,
                                columns=list(TRAJECTORY_METRICS))
        df = pd.concat([df, traj], axis=1)
    df["success"] = success(df)
    return df


def _as_bool(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "1.0")
    return False if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v)  # NaN: a failed run


#: When success is read: after the last step, or at the snapshot with the lowest training loss.
STOPPINGS = ("final", "early")


def success(df, accuracy: float = SUCCESS_ACCURACY, stopping: str = "final"):
    """Per run: done, K clusters on K distinct majority experts, and test accuracy >= ``accuracy``.

    ``stopping="final"``: after the last step (test dispatch). ``"early"``: at the snapshot with
    the lowest training loss (``moesim.sweeps.export.trajectory_metrics``; training dispatch of that step).
    """
    import pandas as pd

    if stopping not in STOPPINGS:
        raise ValueError(f"stopping={stopping!r} is not allowed; choose one of: {', '.join(STOPPINGS)}")
    distinct_col, acc_col = (("distinct_majority", "test_accuracy") if stopping == "final"
                             else ("early_stop_distinct", "early_stop_test_accuracy"))
    if distinct_col not in df or acc_col not in df:  # no finished run at all
        return pd.Series(False, index=df.index)
    distinct = df[distinct_col].map(_as_bool).astype(bool)
    acc = pd.to_numeric(df[acc_col], errors="coerce").fillna(-1.0)
    return (df["status"] == "done") & distinct & (acc >= accuracy)


def rates(df, by: list[str], accuracy: float = SUCCESS_ACCURACY, stopping: str = "final"):
    """One row per grid point ``by``: runs, failed runs, success rate (with a 95 % Wilson interval),
    mean test accuracy and mean training dispatch entropy (Eq. 6.1) over its seeds."""
    import pandas as pd

    d = df.assign(_success=success(df, accuracy, stopping).astype(float),
                  _failed=(df["status"] != "done").astype(int),
                  _acc=pd.to_numeric(df["test_accuracy"], errors="coerce"),
                  _ent=pd.to_numeric(df["dispatch_entropy"], errors="coerce"))
    g = d.groupby(by, sort=True)
    out = pd.DataFrame({
        "runs": g.size(),
        "failed": g["_failed"].sum(),
        "success_rate": g["_success"].mean(),
        "test_accuracy": g["_acc"].mean(),
        "dispatch_entropy": g["_ent"].mean(),
    })
    lo, hi = wilson_interval(out["success_rate"].to_numpy() * out["runs"].to_numpy(), out["runs"].to_numpy())
    out["rate_low"], out["rate_high"] = lo, hi
    return out.reset_index()


def wilson_interval(successes, n, z: float = 1.96):
    """95 % Wilson score interval of a binomial rate (elementwise)."""
    successes, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    p = np.where(n > 0, successes / np.maximum(n, 1), np.nan)
    den = 1 + z**2 / n
    center = (p + z**2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return np.clip(center - half, 0.0, 1.0), np.clip(center + half, 0.0, 1.0)


def theory_experts(K, d: int, anchor: tuple[int, int] = PAPER_POINT):
    """Theorem 4.2's M = Theta(K log K log log d), with the unknown constant fixed so the curve
    passes through ``anchor`` = (K, M) (the paper's (4, 8)). Natural logs; needs d > e."""
    K = np.asarray(K, dtype=float)
    if d <= math.e:
        raise ValueError(f"d={d} is not allowed: log log d needs d > e")
    k0, m0 = anchor
    c = m0 / (k0 * math.log(k0) * math.log(math.log(d)))
    return c * K * np.log(K) * math.log(math.log(d))


def coverage_probability(K: int, M: int) -> float:
    """P(M experts, each adopting a uniformly random one of K clusters, cover all K clusters).

    Inclusion-exclusion: sum_j (-1)^j C(K, j) (1 - j/K)^M. The covering picture behind the
    K log K of Theorem 4.2 (Lemma 5.2: an expert specialises on the cluster its initialization
    favours), taken literally as a coupon collector.
    """
    return float(sum((-1) ** j * math.comb(K, j) * (1 - j / K) ** M for j in range(K + 1)))


def coupon_collector_experts(K: int, level: float = SUCCESS_LEVEL) -> int:
    """The smallest M with ``coverage_probability(K, M) >= level``."""
    M = K
    while coverage_probability(K, M) < level:
        M += 1
    return M


def experts_threshold(df, level: float = SUCCESS_LEVEL, accuracy: float = SUCCESS_ACCURACY,
                      stopping: str = "final"):
    """Per K: the smallest M whose success rate reaches ``level`` (NaN if none in the grid), the
    lowest rate at the larger M of the grid, and the best rate, beside the theory's scaled
    K ln K ln ln d (d = ``patch_dim``, one value per sweep) and the coupon-collector count."""
    import pandas as pd

    d_values = sorted({int(v) for v in df["patch_dim"]}) if "patch_dim" in df else [50]
    if len(d_values) != 1:
        raise ValueError(f"experts_threshold needs one patch_dim, the sweep has {d_values}")
    r = rates(df, ["n_clusters", "n_experts"], accuracy, stopping)
    rows = []
    for K, grp in r.groupby("n_clusters"):
        grp = grp.sort_values("n_experts")
        ok = grp[grp["success_rate"] >= level]
        best = grp.loc[grp["success_rate"].idxmax()]
        M = float(ok["n_experts"].iloc[0]) if len(ok) else math.nan
        above = grp[grp["n_experts"] > M]["success_rate"]  # empty when M is NaN
        rows.append({
            "K": int(K), "M_measured": M, "rate_at_M": float(ok["success_rate"].iloc[0]) if len(ok) else math.nan,
            "min_rate_above": float(above.min()) if len(above) else math.nan,
            "best_rate": float(best["success_rate"]), "M_at_best": int(best["n_experts"]),
            "M_theory": float(theory_experts(K, d_values[0])), "M_coupon": coupon_collector_experts(int(K), level),
            "M_max_tried": int(grp["n_experts"].max()),
        })
    return pd.DataFrame(rows)


# --- plots ------------------------------------------------------------------------------------

def _axes(ax, figsize=(6, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def _edges(values, log: bool = False) -> np.ndarray:
    """Cell edges around sorted grid values: midpoints (geometric on a log axis), half a gap beyond the ends."""
    v = np.log2(np.asarray(values, dtype=float)) if log else np.asarray(values, dtype=float)
    gaps = np.diff(v) if len(v) > 1 else np.array([1.0])
    e = np.concatenate([[v[0] - gaps[0] / 2], (v[:-1] + v[1:]) / 2, [v[-1] + gaps[-1] / 2]])
    return 2.0**e if log else e


def plot_experts_needed(df, ax=None, level: float = SUCCESS_LEVEL, accuracy: float = SUCCESS_ACCURACY,
                        anchor: tuple[int, int] = PAPER_POINT, stopping: str = "final"):
    """Success rate over (K, M) (M on a log axis), the theory's c·K ln K ln ln d through ``anchor``
    and, boxed, the smallest M per K whose success rate reaches ``level``."""
    from matplotlib import colors
    from matplotlib.patches import Rectangle

    fig, ax = _axes(ax, (6.4, 4.4))
    r = rates(df, ["n_clusters", "n_experts"], accuracy, stopping)
    Ks, Ms = sorted(int(k) for k in r["n_clusters"].unique()), sorted(int(m) for m in r["n_experts"].unique())
    grid = np.full((len(Ms), len(Ks)), np.nan)
    for row in r.itertuples():
        grid[Ms.index(int(row.n_experts)), Ks.index(int(row.n_clusters))] = row.success_rate
    xe, ye = _edges(Ks), _edges(Ms, log=True)
    im = ax.pcolormesh(xe, ye, np.ma.masked_invalid(grid), cmap="viridis", norm=colors.Normalize(0, 1))
    ax.set_yscale("log", base=2)
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax.text(Ks[j], Ms[i], f"{v:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, label=f"success rate (distinct experts, acc ≥ {accuracy:g} %)")
    d = int(df["patch_dim"].iloc[0]) if "patch_dim" in df else 50
    kk = np.linspace(xe[0], xe[-1], 200)
    kk = kk[kk > 1]
    ax.plot(kk, theory_experts(kk, d, anchor), color="tab:red", lw=2,
            label=f"theory: c·K ln K ln ln d through (K, M) = {anchor}")
    th = experts_threshold(df, level, accuracy, stopping).dropna(subset=["M_measured"])
    for n, row in enumerate(th.itertuples()):
        i, j = Ms.index(int(row.M_measured)), Ks.index(int(row.K))
        ax.add_patch(Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], fill=False, ec="white", lw=2.5,
                               label=f"smallest M with rate ≥ {level:g}" if n == 0 else None))
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    ax.set_xticks(Ks, [str(k) for k in Ks])
    ax.set_yticks(Ms, [str(m) for m in Ms])
    ax.minorticks_off()
    ax.set_xlabel("clusters K")
    ax.set_ylabel("experts M")
    leg = ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    for h in leg.legend_handles:
        if isinstance(h, Rectangle):
            h.set_edgecolor("black")
    return fig


def plot_rate_map(df, x: str, y: str, value: str = "success_rate", ax=None, accuracy: float = SUCCESS_ACCURACY,
                  xlabel: str | None = None, ylabel: str | None = None, fmt: str = "{:.1f}",
                  vmin: float | None = 0.0, vmax: float | None = 1.0, cmap: str = "viridis"):
    """A heatmap of ``value`` (a column of ``rates``) over two grid axes ``x`` and ``y``."""
    from matplotlib import colors

    fig, ax = _axes(ax)
    r = rates(df, [x, y], accuracy)
    xs, ys = sorted(r[x].unique()), sorted(r[y].unique())
    grid = np.full((len(ys), len(xs)), np.nan)
    for _, row in r.iterrows():
        grid[ys.index(row[y]), xs.index(row[x])] = row[value]
    lo = np.nanmin(grid) if vmin is None else vmin
    hi = np.nanmax(grid) if vmax is None else vmax
    im = ax.imshow(grid, origin="lower", cmap=cmap, norm=colors.Normalize(lo, hi), aspect="auto")
    mid = (lo + hi) / 2
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8, color="white" if v < mid else "black")
    fig.colorbar(im, ax=ax, label=value.replace("_", " "))
    ax.set_xticks(range(len(xs)), [_label(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_label(v) for v in ys])
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    return fig


def plot_curves(df, x: str, ax=None, accuracy: float = SUCCESS_ACCURACY, xlabel: str | None = None):
    """Against one grid axis (evenly spaced, labelled with its values): (a) the success rate with
    95 % Wilson intervals, after the last step and (where the trajectory metrics are there) at the
    lowest training loss; (b) mean test accuracy and mean training dispatch entropy (Eq. 6.1)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    else:
        fig = ax[0].figure
    r = rates(df, [x], accuracy)
    pos = np.arange(len(r))
    a0, a1 = ax
    a0.errorbar(pos, r["success_rate"], yerr=[r["success_rate"] - r["rate_low"], r["rate_high"] - r["success_rate"]],
                fmt="o-", capsize=3, label="after the last step")
    if "early_stop_distinct" in df:
        e = rates(df, [x], accuracy, stopping="early")
        a0.errorbar(pos + 0.08, e["success_rate"], yerr=[e["success_rate"] - e["rate_low"],
                    e["rate_high"] - e["success_rate"]], fmt="s--", capsize=3, color="tab:orange",
                    label="at the lowest training loss")
        a0.legend(fontsize=8)
    a0.set_ylim(-0.05, 1.05)
    a0.set_ylabel(f"success rate (acc ≥ {accuracy:g} %,\ndistinct experts)")
    a1.plot(pos, r["test_accuracy"], "s-", color="tab:green")
    a1.set_ylabel("mean test accuracy (%)", color="tab:green")
    a2 = a1.twinx()
    a2.plot(pos, r["dispatch_entropy"], "d--", color="tab:purple")
    a2.set_ylabel("mean dispatch entropy (Eq. 6.1)", color="tab:purple")
    for a in (a0, a1):
        a.set_xlabel(xlabel or x)
        a.set_xticks(pos, [_label(v) for v in r[x]])
        a.set_xlim(-0.5, len(r) - 0.5)
    return fig


def _label(v: typing.Any) -> str:
    if isinstance(v, tuple):
        return ",".join(f"{a:g}" for a in v)
    if isinstance(v, (float, np.floating)):
        return f"{v:g}"
    return str(v)
