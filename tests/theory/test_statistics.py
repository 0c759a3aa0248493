"""The decision rules of the two tiers: one-sided bounds and the per-seed / quantity checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moesim.claims import FULL, QUICK
from moesim.claims.base import per_seed_check, quantity_check
from moesim.claims.stats import clopper_pearson_lower, clopper_pearson_upper, t_lower, t_upper


def test_clopper_pearson_closed_forms():
    """k = n: lower bound (1 - c)^(1/n), e.g. 10/10 at 95 % -> 0.05^(1/10) = 0.741; k = 0: 0.
    Upper bound mirrors the lower bound: U(k, n) = 1 - L(n - k, n)."""
    assert clopper_pearson_lower(10, 10) == pytest.approx(0.05 ** 0.1, rel=1e-12)
    assert clopper_pearson_lower(0, 10) == 0.0
    assert clopper_pearson_upper(10, 10) == 1.0
    for k in range(11):
        assert clopper_pearson_upper(k, 10) == pytest.approx(1 - clopper_pearson_lower(10 - k, 10), abs=1e-12)


def test_clopper_pearson_covers_at_its_level():
    """Exact coverage: for p = 0.6, n = 10, P(lower bound <= p) >= 95 % (binomial sum, no simulation)."""
    p, n = 0.6, 10
    cover = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1) if clopper_pearson_lower(k, n) <= p)
    assert cover >= 0.95


def test_clopper_pearson_rejects_bad_counts():
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson_lower(11, 10)


def test_t_bounds():
    """mean -/+ t_{0.95, n-1} sd / sqrt(n); one value gives an infinite bound."""
    v = np.array([1.0, 2.0, 3.0, 4.0])
    half = 2.3533634 * v.std(ddof=1) / 2  # t_{0.95, 3} = 2.35336
    assert t_lower(v) == pytest.approx(2.5 - half, rel=1e-6)
    assert t_upper(v) == pytest.approx(2.5 + half, rel=1e-6)
    assert t_lower([1.0]) == -math.inf


def test_per_seed_rules():
    """Quick: a majority of seeds. Full: 95 % Clopper-Pearson lower bound >= 1/2, i.e. 9 of 10 seeds."""
    assert per_seed_check("p", [True, True, False], QUICK).passed
    assert not per_seed_check("p", [True, False, False], QUICK).passed
    assert per_seed_check("p", [True] * 9 + [False], FULL).passed
    assert not per_seed_check("p", [True] * 8 + [False] * 2, FULL).passed


def test_quantity_rules():
    """Quick compares the median; full compares the one-sided 95 % t bound of the mean."""
    assert quantity_check("q", [0.0, 5.0, 6.0], ">=", 4.0, QUICK).passed
    assert not quantity_check("q", [0.0, 1.0, 6.0], ">=", 4.0, QUICK).passed
    vals = [5.0, 5.1, 4.9, 5.0, 5.2, 4.8, 5.0, 5.1, 4.9, 5.0]
    assert quantity_check("q", vals, ">=", 4.8, FULL).passed
    assert not quantity_check("q", vals, ">=", 5.0, FULL).passed  # the mean is 5.0: its lower bound is below
    assert quantity_check("q", vals, "<=", 5.2, FULL).passed
    with pytest.raises(ValueError, match="op"):
        quantity_check("q", vals, ">", 1.0, FULL)
