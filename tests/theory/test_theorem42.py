"""Theorem 4.2 (1), (2): the nonlinear MoE reaches zero training error and small test error."""

from __future__ import annotations

import pytest


def test_theorem42_quick(quick_ctx, passes):
    """Theorem 4.2: with noisy top-1 routing, normalized GD on the experts and GD on the router
    (Algorithm 1), the nonlinear MoE has zero training error and o(1) test error w.p. 1 - o(1).

    Prediction (setting 1, n = 4000, seeds 0, 1, 2), for a majority of seeds: paper semantics
    (Algorithm 1), training accuracy 100 % and test accuracy >= 98 %; official code's semantics,
    training and test accuracy >= 98 %. Thresholds: 100 % from "zero training error"; 98 % a margin
    under the measured 99.85-100 % (benchmarks/results/calibration/claims.md). Zero training error is
    not asserted for the official code (not Algorithm 1; its runs do not all reach it, Table 1's
    99.46 +- 0.55 % test accuracy); the table counts its seeds that do.
    """
    passes(quick_ctx, "thm4.2")


@pytest.mark.slow
def test_theorem42_full(full_ctx, passes):
    """As above at n = 16000 (paper semantics T = 500), seeds 0-9: one-sided 95 % Clopper-Pearson lower
    bound >= 1/2 on the probability that a seed satisfies each property (at least 9 of 10 seeds)."""
    passes(full_ctx, "thm4.2")
