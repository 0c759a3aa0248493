"""Exact routing probabilities of noisy top-1 routing (Lemma 5.1's p_m(h))."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.routing import routing_probabilities, routing_probabilities_mc


@pytest.mark.parametrize("M", [1, 2, 3, 8, 16])
def test_zero_logits_route_uniformly(M):
    torch.testing.assert_close(routing_probabilities(torch.zeros(M)), torch.full((M,), 1 / M, dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9).flatmap(lambda M: st.lists(st.floats(-2, 2), min_size=M, max_size=M)))
def test_probabilities_sum_to_one(h):
    p = routing_probabilities(torch.tensor(h))
    assert (p >= -1e-15).all() and math.isclose(p.sum().item(), 1.0, abs_tol=1e-12)


@pytest.mark.parametrize("delta", [0.0, 0.3, 0.9, 1.0, 1.7])
def test_two_experts_closed_form(delta):
    """M = 2: P(h1 + r1 > h2 + r2) = 1 - (1 - delta)^2 / 2 for delta = h1 - h2 in [0, 1], else 1."""
    p = routing_probabilities(torch.tensor([delta, 0.0], dtype=torch.float64))[0].item()
    expected = 1 - (1 - delta) ** 2 / 2 if delta <= 1 else 1.0
    assert math.isclose(p, expected, abs_tol=1e-14)


def test_exact_agrees_with_monte_carlo():
    """Monte Carlo with 200,000 draws agrees within 4 binomial standard errors for each expert."""
    g = torch.Generator().manual_seed(0)
    h = torch.tensor([0.3, -0.2, 0.0, 0.55, 0.1, -0.8, 0.25, 0.05], dtype=torch.float64)
    n = 200_000
    exact = routing_probabilities(h)
    mc = routing_probabilities_mc(h, n, generator=g)
    se = torch.sqrt(exact * (1 - exact) / n)
    assert (torch.abs(mc - exact) < 4 * se + 1e-12).all()


def test_batched_matches_rows():
    H = torch.randn(5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(routing_probabilities(H), torch.stack([routing_probabilities(h) for h in H]))
