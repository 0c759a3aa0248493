"""Fixtures of the theorem-verification suite: one run cache for the whole session.

Every claim test calls the same ``moesim.claims`` object that ``moesim verify`` runs. The
contexts below share one ``RunCache`` (keyed by whole configurations), so a trained run (say the
nonlinear MoE on setting 1) is trained once and read by every claim that needs it, including the
"broken model" contexts whose changed configurations get runs of their own.
"""

from __future__ import annotations

import pytest

from moesim.claims import FULL, QUICK, Context, RunCache


@pytest.fixture(scope="session")
def run_cache() -> RunCache:
    return RunCache()


@pytest.fixture(scope="session")
def quick_ctx(run_cache) -> Context:
    """The default tier: n = 4000, seeds 0, 1, 2 (the ``moesim verify --quick`` scale)."""
    return Context(QUICK, cache=run_cache)


@pytest.fixture(scope="session")
def full_ctx(run_cache) -> Context:
    """The slow tier: the paper's n = 16000, seeds 0..9 (the ``moesim verify --full`` scale)."""
    return Context(FULL, cache=run_cache)


@pytest.fixture(scope="session")
def passes():
    """``passes(ctx, name)``: check claim ``name`` and fail with its full check list unless it passes."""
    from moesim.claims import get

    def check(ctx: Context, name: str):
        result = get(name).check(ctx)
        assert result.passed, result.describe()
        return result

    return check
