"""The mutation matrix: every claim can fail, on the broken models it declares.

Each claim of ``moesim.claims`` declares (``Claim.detects``) which broken models of
``moesim.claims.mutants`` it must fail on, and why. Asserted here, at the quick scale (n = 4000,
seeds 0, 1, 2, the official and paper regimes), with the claims' own thresholds (nothing relaxed):

* the unbroken model passes every claim (``test_*_quick`` in the other files of this folder);
* every claim fails on every mutant it declares (one test per declared cell, below);
* every mutant is declared by at least one claim, and every declaration names a real mutant.

``moesim verify --mutants`` prints the whole matrix, undeclared cells included.
"""

from __future__ import annotations

import pytest

from moesim import claims
from moesim.claims import QUICK, Context, mutants

#: (claim, mutant) for every declared detection among the core claims.
DECLARED = [(c, m) for c in claims.names() for m in claims.get(c).detects]


def test_every_mutant_is_declared_by_some_claim():
    declared = {m for _, m in DECLARED}
    assert set(mutants.MUTANTS) <= declared, f"no claim must catch {sorted(set(mutants.MUTANTS) - declared)}"


def test_every_declaration_names_a_known_mutant_with_a_reason():
    for c, m in DECLARED:
        assert m in mutants.MUTANTS, f"{c} declares unknown mutant {m!r}"
        assert len(claims.get(c).detects[m]) > 10, f"{c} gives no reason for detecting {m}"


def test_mutant_overrides_are_valid_configs():
    for m in mutants.MUTANTS.values():
        Context(QUICK, m.overrides)  # raises ConfigError on a bad override


@pytest.fixture(scope="module")
def mutant_contexts(run_cache):
    return {name: Context(QUICK, m.overrides, cache=run_cache) for name, m in mutants.MUTANTS.items()}


@pytest.mark.parametrize("claim, mutant", DECLARED, ids=[f"{c}-catches-{m}" for c, m in DECLARED])
def test_claim_fails_on_the_mutant_it_declares(claim, mutant, mutant_contexts):
    """Prediction: the claim's verdict on the broken model is FAIL (some check fails)."""
    result = claims.get(claim).check(mutant_contexts[mutant])
    assert not result.passed, (f"{claim} must detect {mutant} ({claims.get(claim).detects[mutant]}), but:\n"
                               + result.describe())


def test_matrix_markdown_marks_missed_cells():
    """A declared cell where the claim passed is reported as MISSED and makes the matrix incomplete."""
    m = mutants.Matrix(["thm4.2"], ["frozen-router"], {"thm4.2": True}, {("frozen-router", "thm4.2"): True},
                       {("frozen-router", "thm4.2"): True})
    assert not m.ok and m.missed == [("frozen-router", "thm4.2")]
    assert "**MISSED**" in mutants.matrix_markdown(m, QUICK, ("official",), 1.0)


def test_matrix_plain_text_is_aligned_without_markdown():
    """The terminal matrix has the same cells, aligned, with no pipes or emphasis (mutants.md keeps them)."""
    m = mutants.Matrix(["thm4.2", "no-collapse"], ["frozen-router"], {"thm4.2": True, "no-collapse": True},
                       {("frozen-router", "thm4.2"): True, ("frozen-router", "no-collapse"): False},
                       {("frozen-router", "thm4.2"): True, ("frozen-router", "no-collapse"): True})
    text = mutants.matrix_plain_text(m, QUICK, ("official",), 1.0)
    assert "|" not in text and "**" not in text and "MISSED" in text and "caught" in text
    rows = [line for line in text.splitlines() if line.startswith(("claim", "thm4.2", "no-collapse"))]
    assert len(rows) == 3 and len({r.index("unbroken" if r.startswith("claim") else "pass") for r in rows}) == 1
