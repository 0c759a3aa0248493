"""Router-learning stage: the router aligns with the cluster centers c_k, not with the features v_j."""

from __future__ import annotations

import pytest


def test_router_centers_quick(quick_ctx, passes):
    """Claim (Section 5, router-learning stage): the router gradient of an expert in M_k is dominated
    by +beta c_k (feature patches and noise average out), so theta_m aligns with c_k.

    Prediction (official and paper semantics, setting 1, n = 4000, seeds 0, 1, 2), for a majority of
    seeds and every cluster k with m = m*(k): argmax_k' <theta_m, c_k'> = k; <theta_m, c_k> >
    max_j |<theta_m, v_j>|; the clean logit margin of m over every expert outside M_k exceeds 1
    (the width of the noise support: routing is deterministic) on >= 99 % of cluster k. Derived
    thresholds, no calibrated margin.
    """
    passes(quick_ctx, "router-centers")


@pytest.mark.slow
def test_router_centers_full(full_ctx, passes):
    """As above at n = 16000, seeds 0-9 (one-sided 95 % Clopper-Pearson rule)."""
    passes(full_ctx, "router-centers")
