"""The claims in Theorem 4.2's own regime (``theory-d<d>``, ``moesim verify --regime theory``).

Measured at d = 100, 200, 400 with seeds 0-5 and the majority rule
(benchmarks/results/calibration/theory_regime.md): Theorem 4.2 (1), (2) and stage 1's uniform
routing hold at d = THEORY_TEST_DIM = 400; no-collapse (the router sending >= 90 % of every cluster
into its group), the router's logit margin > 1 and the experts' specialisation by
T1 = floor(eta^-1 sigma_0^(1/2)) do not yet. Those are findings, reported in the README and the book
and asserted here as findings: each failing check is a strict ``xfail`` (the test fails the day
the prediction starts to hold, so that the finding is re-examined, never silently kept).

Slow tier: 6 seeds at d = 400 train for several minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses

import pytest

from moesim.claims import QUICK, THEORY_TEST_DIM, Context, get

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def theory_ctx(run_cache):
    scale = dataclasses.replace(QUICK, seeds=tuple(range(6)))
    return Context(scale, regimes=("theory",), theory_dim=THEORY_TEST_DIM, cache=run_cache)


def check(ctx, claim: str, fragment: str):
    """The one check of ``claim`` whose prediction contains ``fragment``."""
    (found,) = [c for c in get(claim).check(ctx).checks if fragment in c.prediction]
    return found


@pytest.mark.parametrize("claim", ["thm4.2", "linear-experts", "noise-ablation"])
def test_holds_in_the_theory_regime(theory_ctx, passes, claim):
    """Theorem 4.2 (1), (2) (zero training error, test accuracy >= 98 %), and the two empirical
    contrasts (linear experts, no router noise: entropy higher by >= 0.2) hold at d = 400."""
    passes(theory_ctx, claim)


@pytest.mark.parametrize("claim, fragment", [
    ("exploration", "dispatch entropy >= 0.97 ln K"), ("exploration", "every load within n/M +- 5 sd"),
    ("router-centers", "argmax_k' <theta_m*(k), c_k'> = k"), ("no-collapse", "majority experts m*(k) distinct")])
def test_stage_one_and_alignment_hold(theory_ctx, claim, fragment):
    """Stage 1 routes uniformly (entropy, Binomial loads) and the router's argmax center is right."""
    c = check(theory_ctx, claim, fragment)
    assert c.passed, f"{claim}: {c.prediction}: {c.measured}"


@pytest.mark.xfail(strict=True, reason="finding at d = 400: the router does not yet send >= 90 % of every "
                                       "cluster into its group for a majority of seeds (3/6 measured)")
def test_finding_router_sends_clusters_to_groups(theory_ctx):
    c = check(theory_ctx, "no-collapse", "router sends >= 90 %")
    assert c.passed, c.measured


@pytest.mark.xfail(strict=True, reason="finding at d = 400: the logit margin > 1 on >= 99 % of each cluster "
                                       "(deterministic routing) holds in 1/6 seeds")
def test_finding_router_margin(theory_ctx):
    c = check(theory_ctx, "router-centers", "logit margin")
    assert c.passed, c.measured


@pytest.mark.xfail(strict=True, reason="finding at d = 400: at T1 = 67 steps only 1-4 of M = 10 experts are "
                                       "specialised (the stage needs longer than T1's formula at this d)")
def test_finding_experts_specialise_by_T1(theory_ctx):
    c = check(theory_ctx, "exploration", "specialised at step")
    assert c.passed, c.measured
