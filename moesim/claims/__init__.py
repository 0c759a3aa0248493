"""The paper's claims as checkable objects, shared by ``moesim verify`` and ``tests/theory``.

Usage::

    from moesim.claims import QUICK, Context, get, run_claims
    ctx = Context(QUICK)                      # one run cache for every claim
    result = get("thm4.2").check(ctx)         # a ClaimResult: checks, measured values, verdict
    results = run_claims(ctx)                 # every claim, in order

Modules: ``base`` (Claim, Check, Scale, Context), ``stats`` (confidence bounds), ``swap`` (the
Theorem 4.1 construction), and one module per group of claims (``single_expert``, ``tightness``,
``moe``, ``lemma51``, ``lemma52``, ``ablations``; the ``scaling`` tier is a package, one module per
claim). ``mutants`` holds the broken models a claim's ``detects`` names.

To add a claim: write ``measure(ctx) -> list[Check]`` decorated with ``base.register(...)`` in the
module of its group (a new module is also imported below, where its place sets its row in the
table), and its test in ``tests/theory``.
"""

from __future__ import annotations

# import order = registration order = the order of the verify table
from . import single_expert, tightness, moe, lemma51, lemma52, ablations, scaling  # noqa: F401, I001
from .base import (DEFAULT_REGIMES, FULL, QUICK, REGIMES, REGISTRY, SCALES, THEORY_TEST_DIM, Check, Claim, ClaimResult,
                   Context, RunCache, Scale)


def names(tier: str | None = "core") -> list[str]:
    """Every claim's name of ``tier`` (None: every tier), in table order."""
    return [n for n, c in REGISTRY.items() if tier is None or c.tier == tier]


def get(name: str) -> Claim:
    """The claim called ``name`` (``ValueError`` naming the allowed ones otherwise)."""
    if name not in REGISTRY:
        raise ValueError(f"claim {name!r} is not known; choose from: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def run_claims(ctx: Context, selected: list[str] | None = None, on_result=None) -> list[ClaimResult]:
    """Check ``selected`` claims (default all) in table order; ``on_result(result)`` after each."""
    chosen = [get(n) for n in (selected or names())]
    out = []
    for claim in chosen:
        res = claim.check(ctx)
        out.append(res)
        if on_result is not None:
            on_result(res)
    return out


__all__ = ["DEFAULT_REGIMES", "REGIMES", "THEORY_TEST_DIM", "FULL", "QUICK", "SCALES", "Check", "Claim", "ClaimResult", "Context", "RunCache", "Scale", "get", "names",
           "run_claims"]
