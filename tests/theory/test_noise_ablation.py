"""The role of the router noise (empirical ablation)."""

from __future__ import annotations

import pytest


def test_noise_ablation_quick(quick_ctx, passes):
    """Claim (role of the noise, Lemma 5.1): the noise makes routing explore; without it the routing at zero init is
    decided by tie-breaks and the dispatch ends less clean.

    Prediction (official semantics, setting 1, n = 4000, seeds 0, 1, 2): median over seeds of
    entropy(router_noise='none') - entropy(fresh U[0,1] noise) >= 0.2. Threshold: a margin on the
    measured paired differences 0.06-0.32, median 0.29 (benchmarks/results/calibration/claims.md).
    """
    passes(quick_ctx, "noise-ablation")


@pytest.mark.slow
def test_noise_ablation_full(full_ctx, passes):
    """As above at n = 16000, seeds 0-9: one-sided 95 % t lower bound of the mean paired difference >= 0.2."""
    passes(full_ctx, "noise-ablation")
