"""Exploration stage (Section 5, Lemma 5.2): uniform routing while the router is near zero,
and the experts already specialise."""

from __future__ import annotations

import pytest


def test_exploration_quick(quick_ctx, passes):
    """Claim: in stage 1 the router barely moves (zero init + noise keep routing uniform, loads ~ n/M)
    while the experts diverge and each becomes good on one cluster.

    Prediction (official semantics, setting 1, n = 4000, seeds 0, 1, 2), for a majority of seeds:
    max_m ||theta_m|| after 20 steps <= 0.01 x its final value; dispatch entropy >= 0.97 ln K and
    every load within n/M +- 25 % for the first 20 steps; after 35 steps >= M - 1 experts have
    best-cluster accuracy >= 0.9 and worst-cluster accuracy <= 0.75. Thresholds: SPEC 6.4 T4
    (measured ||theta|| 1.1e-3 at step 20 vs ~0.45 final, entropy >= 0.98 ln 4, loads 451-535 of 500).
    """
    passes(quick_ctx, "exploration")


@pytest.mark.slow
def test_exploration_full(full_ctx, passes):
    """As above at n = 16000, seeds 0-9 (one-sided 95 % Clopper-Pearson rule)."""
    passes(full_ctx, "exploration")
