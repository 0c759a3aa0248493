"""Breaking the model on purpose makes the relevant claims fail (the suite can fail).

The claims are checked on a model under test changed through ``Context(overrides=...)``, the
same mechanism as ``moesim verify --set NAME=VALUE``. Quick scale: n = 4000, seeds 0, 1, 2.
"""

from __future__ import annotations

import pytest

from moesim.claims import QUICK, Context, get

#: (change, claims that must fail, claims that must still pass)
BREAKS = [
    pytest.param(
        {"activation": "linear"},
        # Theorem 4.2 and its stages are about nonlinear experts; linear ones neither fit every
        # point nor specialise, so the router has no cluster signal (SPEC 6.6).
        ("thm4.2", "no-collapse", "router-centers", "exploration", "linear-experts"),
        (),
        id="linear-experts-instead-of-cubic",
    ),
    pytest.param(
        {"lr_router": 0.0},
        # A router that never learns keeps routing at random: no specialisation per cluster and
        # no alignment with the centers. The exploration stage, where the router has not moved
        # yet anyway, is unaffected and must still pass.
        ("thm4.2", "no-collapse", "router-centers"),
        ("exploration",),
        id="no-router-learning",
    ),
]


@pytest.mark.parametrize("overrides, must_fail, must_pass", BREAKS)
def test_broken_model_fails_the_relevant_claims(run_cache, overrides, must_fail, must_pass):
    """Prediction: every claim in ``must_fail`` fails (some check fails) and every claim in
    ``must_pass`` still passes, with the thresholds of the claims themselves (nothing relaxed)."""
    ctx = Context(QUICK, overrides, cache=run_cache)
    for name in must_fail:
        result = get(name).check(ctx)
        assert not result.passed, f"{overrides} should break {name}:\n{result.describe()}"
    for name in must_pass:
        result = get(name).check(ctx)
        assert result.passed, f"{overrides} should not affect {name}:\n{result.describe()}"
