"""Theorem 4.1 (a): the exact swap certificate for sum-over-patches models.

Claim (Theorem 4.1): if D_alpha = D_gamma, every F(x) = sum_p f(x^(p)) has Pr[y F(x) <= 0] >= 1/8.
Proof mechanism (the proof of Theorem 4.1): each latent tuple gives a quadruple of four equally likely points
(``moesim.claims.swap``) of which at least one is misclassified by any such F.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim import generate, preset
from moesim.claims.swap import (
    PATCH_ACTIVATIONS, QUADRUPLE_LABELS, quadruple_has_error, random_patch_network, sum_form_correct, swap_quadruples,
)


@pytest.fixture(scope="module")
def verify_quads():
    """512 quadruples from the D_alpha = D_gamma (verify) distribution, torch generator, data seed 11."""
    _, test = generate(preset("paper-verify", n_train=8, n_test=512))
    return test, swap_quadruples(test)


def test_swap_points_are_samples_of_definition_3_1(verify_quads):
    """Every constructed point is a Definition 3.1 sample with the stated label.

    Prediction: point j of a quadruple is [signal y a v_k, center beta c_k, xi, feature noise
    e g v_k'] up to patch order, with k' != k, its label y the sign of its signal patch, the
    magnitudes (a, g) = (alpha, gamma) for x and (gamma, alpha) for the swap partner x', and the
    source sample's beta and Gaussian patches xi. Exact up to float64 rounding; data seed 11.
    """
    data, quads = verify_quads
    s = data.scale
    V, C = data.features * s, data.centers * s
    xi = quads.x[:, 0, 2]
    assert torch.equal(quads.y, torch.tensor(QUADRUPLE_LABELS).expand_as(quads.y))
    for j in range(4):
        k, k2, y = quads.cluster[:, j], quads.noise_cluster[:, j], quads.y[:, j].double()
        partner = j in (1, 3)  # x' keeps its signal in the last slot, its feature noise in the first
        sig_pos, noise_pos = (3, 0) if partner else (0, 3)
        a, g = (data.gamma, data.alpha) if partner else (data.alpha, data.gamma)
        eps = quads.x[:, j, noise_pos] @ V.T  # the feature-noise patch's coordinates on the features
        assert bool((k != k2).all())
        torch.testing.assert_close(quads.x[:, j, sig_pos], (y * a)[:, None] * V[k], rtol=0, atol=1e-12)
        torch.testing.assert_close(quads.x[:, j, 1], data.beta[:, None] * C[k], rtol=0, atol=1e-12)
        torch.testing.assert_close(quads.x[:, j, 2], xi, rtol=0, atol=0)
        sign = torch.sign(eps.gather(1, k2[:, None])[:, 0])
        torch.testing.assert_close(quads.x[:, j, noise_pos], (sign * g)[:, None] * V[k2], rtol=0, atol=1e-12)
    torch.testing.assert_close(xi, data.x[torch.arange(data.n), _gaussian_slot(data)], rtol=0, atol=0)


def _gaussian_slot(data):
    """Position of the single Gaussian patch of each sample (P = 4)."""
    taken = torch.stack([data.signal_patch, data.center_patch, data.noise_patch], 1)
    free = torch.ones(data.n, data.x.shape[1], dtype=torch.bool)
    free[torch.arange(data.n)[:, None], taken] = False
    return free.float().argmax(1)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), width=st.integers(1, 32), depth=st.integers(1, 3),
       activation=st.sampled_from(sorted(PATCH_ACTIVATIONS)), weight_scale=st.floats(0.01, 10.0))
def test_certificate_holds_for_random_per_patch_networks(verify_quads, seed, width, depth, activation, weight_scale):
    """Any per-patch network f (hypothesis: random MLPs of any width, depth, activation, scale).

    Prediction: F(x) = sum_p f(x^(p)) misclassifies at least one point of every one of the 512
    quadruples (fraction exactly 1; ties count as errors). Threshold: exact, from the proof.
    """
    _, quads = verify_quads
    f = random_patch_network(seed, quads.x.shape[-1], width, depth, activation, weight_scale)
    assert bool(quadruple_has_error(sum_form_correct(f, quads)).all())


def test_certificate_detects_a_model_that_is_not_a_sum(verify_quads):
    """The certificate can fail: an oracle MoE that reads the cluster from the center patch.

    F(x) = <x^(p), v_k> summed over patches, with k the cluster whose center is present: a routed
    linear expert, not of sum form. Prediction: it classifies every point, so no quadruple holds an
    error (fraction 0). Data seed 11.
    """
    data, quads = verify_quads
    x, y = quads.flat()
    k = torch.einsum("npd,kd->npk", x, data.centers).abs().amax(1).argmax(-1)  # cluster of the center patch
    F = torch.einsum("npd,nd->n", x, data.features[k])
    assert not bool(quadruple_has_error(y * F > 0).any())


def test_theorem41_certificate_quick(quick_ctx, passes):
    """Theorem 4.1 certificate on trained models, quick scale (``moesim verify`` claim thm4.1-certificate).

    Prediction: single CNNs (128 filters, official Adam training, verify data n = 4000, seed 0) with
    linear, cubic, ReLU, tanh, GELU and CELU activations, and 16 random per-patch MLPs (seeds 0-15),
    each misclassify a point of every one of the 4000 test-set quadruples. Threshold: exact (the proof's pigeonhole argument).
    """
    passes(quick_ctx, "thm4.1-certificate")


@pytest.mark.slow
def test_theorem41_certificate_full(full_ctx, passes):
    """As above at the paper's size: n = 16000 quadruples, single CNNs seeds 0-1, 64 random MLPs."""
    passes(full_ctx, "thm4.1-certificate")
