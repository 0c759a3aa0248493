"""Theorem 4.1 (b): trained single experts err on at least 1/8 of the D_alpha = D_gamma data."""

from __future__ import annotations

import dataclasses

import pytest

from moesim.claims import QUICK, Context, get
from moesim.claims.single_expert import TRAINED_LOSS_RATIO, error_margin


def test_error_margin_is_three_binomial_sigmas():
    """The margin of the statistical check: 1/8 - 3 sqrt(1/8 * 7/8 / n) (0.109 at n = 4000)."""
    assert error_margin(4000) == pytest.approx(0.125 - 3 * (0.125 * 0.875 / 4000) ** 0.5)
    assert 0.1093 < error_margin(4000) < 0.1094


def test_theorem41_error_quick(quick_ctx, passes):
    """Theorem 4.1: if D_alpha = D_gamma, any F(x) = sum_p f(x^(p)) has Pr[y F(x) <= 0] >= 1/8.

    Prediction: each single CNN (128 filters, official Adam, seed 0) with linear, cubic, ReLU, tanh,
    GELU and CELU activation, trained on the verify data (n = 2000 training points, 200 steps), is
    trained (final training loss <= 0.25 x initial; measured 0.000-0.047) and has test error
    >= 1/8 - 3 sigma = 10.93 % on 4000 test points (measured 24.5-32.3 %). Thresholds: 1/8 from the
    theorem, 3 binomial sigmas for the finite test set; the training floor from
    benchmarks/results/calibration/theorem41.md.
    """
    passes(quick_ctx, "thm4.1-error")


@pytest.mark.slow
def test_theorem41_error_full(full_ctx, passes):
    """As above at the paper's size: n = 16000 (threshold 1/8 - 3 sigma = 11.73 %), seeds 0-1 per activation."""
    passes(full_ctx, "thm4.1-error")


@pytest.mark.parametrize("steps", [1, 5])
def test_theorem41_error_fails_for_untrained_networks(run_cache, steps):
    """The claim can fail: single CNNs after 1 or 5 Adam steps (an untrained model errs on more than
    1/8 anyway, so the bound alone would pass it). Prediction: the training check fails (final/initial
    loss 1.0 after 1 step, 0.47-0.84 after 5, above TRAINED_LOSS_RATIO = 0.25) and the claim fails."""
    ctx = Context(dataclasses.replace(QUICK, name=f"untrained-{steps}", single_steps=steps), cache=run_cache)
    result = get("thm4.1-error").check(ctx)
    assert not result.passed, result.describe()
    trained, bound = result.checks
    assert not trained.passed and max(trained.values["loss_ratio"].values()) > TRAINED_LOSS_RATIO
    assert bound.passed  # the error bound itself holds for any sum-form model, trained or not
