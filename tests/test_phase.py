"""Phase-diagram helpers: the success criterion, the theory's curve, the measured threshold.

These check the arithmetic on hand-made tables whose answers follow from the definitions; the
measured diagrams themselves are in book/beyond.md.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from moesim import phase

matplotlib.use("Agg")


def _runs(rates: dict[tuple[int, int], float], seeds: int = 10) -> pd.DataFrame:
    """Runs whose success rate at (K, M) is ``rates[K, M]`` (the first ``rate * seeds`` seeds succeed)."""
    rows = []
    for (K, M), rate in rates.items():
        for s in range(seeds):
            ok = s < round(rate * seeds)
            rows.append(dict(n_clusters=K, n_experts=M, patch_dim=50, seed=s, status="done",
                             distinct_majority=ok, test_accuracy=100.0 if ok else 95.0, dispatch_entropy=0.1))
    return pd.DataFrame(rows)


def test_success_needs_distinct_experts_high_accuracy_and_a_finished_run():
    df = pd.DataFrame(dict(status=["done", "done", "done", "failed"], distinct_majority=[True, False, True, np.nan],
                           test_accuracy=[99.0, 100.0, 98.99, np.nan]))
    assert phase.success(df).tolist() == [True, False, False, False]


def test_early_success_is_read_where_the_training_loss_was_lowest():
    df = pd.DataFrame(dict(status=["done", "done", "done"], distinct_majority=[False, True, True],
                           test_accuracy=[80.0, 99.5, 99.5], early_stop_distinct=[1.0, 0.0, np.nan],
                           early_stop_test_accuracy=[99.5, 99.5, np.nan]))
    assert phase.success(df).tolist() == [False, True, True]
    assert phase.success(df, stopping="early").tolist() == [True, False, False]
    with pytest.raises(ValueError, match="stopping"):
        phase.success(df, stopping="best")


def test_theory_curve_passes_through_the_paper_point_and_grows_like_k_log_k():
    assert phase.theory_experts(4, 50) == pytest.approx(8.0)
    assert phase.theory_experts(4, 50, anchor=(4, 16)) == pytest.approx(16.0)
    # the ratio of two K does not depend on the constant or on d: (8 ln 8) / (4 ln 4) = 3
    assert phase.theory_experts(8, 50) / phase.theory_experts(4, 50) == pytest.approx(3.0)
    assert phase.theory_experts(8, 1000) / phase.theory_experts(4, 1000) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="d > e"):
        phase.theory_experts(4, 2)


def test_coverage_probability_is_the_coupon_collector():
    assert phase.coverage_probability(2, 1) == 0.0
    assert phase.coverage_probability(2, 2) == pytest.approx(0.5)  # two experts, two clusters: 2/4
    assert phase.coverage_probability(3, 3) == pytest.approx(math.factorial(3) / 3**3)
    rng = np.random.default_rng(0)  # Monte Carlo: 20000 draws, 3 sigma
    draws = rng.integers(0, 4, size=(20000, 8))
    mc = np.mean([len(set(row)) == 4 for row in draws])
    assert abs(mc - phase.coverage_probability(4, 8)) < 3 * math.sqrt(0.25 / 20000)
    m = phase.coupon_collector_experts(4, 0.9)
    assert phase.coverage_probability(4, m) >= 0.9 > phase.coverage_probability(4, m - 1)


def test_threshold_is_the_smallest_m_reaching_the_level():
    df = _runs({(2, 2): 0.5, (2, 4): 0.9, (2, 8): 1.0, (2, 16): 0.7, (4, 4): 0.2, (4, 8): 0.8, (4, 16): 0.7})
    th = phase.experts_threshold(df, level=0.9).set_index("K")
    assert th.loc[2, "M_measured"] == 4 and th.loc[2, "rate_at_M"] == pytest.approx(0.9)
    assert th.loc[2, "min_rate_above"] == pytest.approx(0.7)  # more experts need not keep the rate up
    assert math.isnan(th.loc[4, "min_rate_above"])
    assert math.isnan(th.loc[4, "M_measured"]) and th.loc[4, "best_rate"] == pytest.approx(0.8)
    assert th.loc[4, "M_at_best"] == 8 and th.loc[4, "M_theory"] == pytest.approx(8.0)


def test_rates_have_wilson_intervals_around_them():
    r = phase.rates(_runs({(2, 2): 0.5, (2, 4): 1.0}), ["n_clusters", "n_experts"])
    assert r["success_rate"].tolist() == [0.5, 1.0] and r["runs"].tolist() == [10, 10]
    assert (r["rate_low"] <= r["success_rate"]).all() and (r["success_rate"] <= r["rate_high"] + 1e-12).all()
    assert r["rate_high"].iloc[1] == pytest.approx(1.0) and r["rate_low"].iloc[1] > 0.6


def test_plots_draw_every_grid_point():
    df = _runs({(K, M): min(1.0, M / (2 * K)) for K in (2, 4) for M in (2, 4, 8)}, seeds=4)
    fig = phase.plot_experts_needed(df)
    assert len(fig.axes[0].texts) == 6
    fig = phase.plot_rate_map(df, "n_clusters", "n_experts")
    assert len(fig.axes[0].texts) == 6
    fig = phase.plot_curves(df[df.n_clusters == 2], "n_experts")
    assert len(fig.axes) == 3
