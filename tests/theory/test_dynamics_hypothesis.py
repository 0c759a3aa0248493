"""Theorem 4.2's dynamics claims on drawn configurations, with a decision rule over the draws.

Theorem 4.2 and the stage lemmas of Section 5 hold "with probability 1 - o(1)": at a finite size a
single configuration may fail. So nothing here is asserted draw by draw. One hypothesis example is
one *statistical experiment*: N independent draws (configuration, data seed, model seed) from a
domain (``strategies.batches``); each draw is trained once and every check of the claims
``no-collapse`` (Theorem 4.2 (3), (4)), ``router-centers`` (Section 5, router learning),
``exploration`` (Section 5, Lemma 5.2) and ``thm4.2`` gives a per-draw verdict (``moesim.claims``,
regime ``custom``, one model seed). The decision rule, fixed before the measurements:

    a check holds on a domain when the one-sided 95 % Clopper-Pearson lower bound on
    P(a draw passes it) is >= p0,  p0 = 0.5 (profile "ci") or 0.7 (profile "explore").

p0 = 0.5 is the project's statistical tier (``moesim.claims.base.MIN_SUCCESS_PROBABILITY``): the
finite-size reading of "1 - o(1)" as "for most configurations", the rule the full tier applies to
seeds, here applied to configurations and seeds together. The explore profile draws more
(N = 40) and asks more (p0 = 0.7: 1 - o(1) should be well above a half once N can resolve it).
With N = 16 the ci rule accepts 12 passing draws or more (a failure budget of 4 draws per check):
power 0.80 at a true pass rate of 0.8, the lowest rate measured for an asserted check being 0.77.

Which checks are asserted on which domain comes from the measurements recorded in
benchmarks/results/calibration/hypothesis_dynamics.md (commands and outputs there): the checks
that hold (``*_HOLDS``), the ones measured *not* to hold (``*_REFUTED``: asserted refuted, i.e.
the 95 % Clopper-Pearson *upper* bound < p0, so a change that makes them hold is noticed) and the
ones left open (``*_OPEN``, reported, not asserted: their measured rate is near p0). Every
narrowing of a domain is written there with its evidence, and the draws that showed it are kept
below as ``@example`` of ``test_recorded_counterexamples`` with their verdicts.

Profiles (tests/conftest.py, HYPOTHESIS_PROFILE): "ci" is derandomized (the same draws every run),
one experiment per test, no shrinking (phases explicit + generate: shrinking a batch seed would
retrain whole batches and means nothing); "explore" runs five fresh experiments per test. The
theorem-regime experiments at d >= 200 beyond the few default-tier draws are ``slow``.
"""

from __future__ import annotations

import os
import typing

import pytest
import torch
from hypothesis import Phase, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from strategies import (
    OFFICIAL,
    THEORY,
    THEORY_LARGE,
    THEORY_QUICK,
    Decision,
    Draw,
    batches,
    decide,
    draws,
    evaluate,
    official_draw,
    sample_official,
    sample_theory,
    theory_draw,
)

from moesim.claims import stats

torch.set_num_threads(1)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
EXPLORE = PROFILE == "explore"
#: p0 of the decision rule and N (draws per experiment) in each profile; see the module docstring.
P0 = 0.7 if EXPLORE else 0.5
OFFICIAL_N = 40 if EXPLORE else 16
#: Experiments (hypothesis examples) per test.
EXPERIMENTS = 5 if EXPLORE else 1
RULE = settings(max_examples=EXPERIMENTS, deadline=None, database=None, phases=(Phase.explicit, Phase.generate))

Check = tuple[str, str]  # (claim, start of the check's prediction)

#: Official neighbourhood (``strategies.OFFICIAL``), from 60 measured draws (calibration file,
#: "official neighbourhood"): holds = 95 % CP lower bound >= 0.5 there; refuted = upper bound < 0.5
#: and expected to stay below it at N = 16; open = the rest (reported by the test, not asserted).
OFFICIAL_HOLDS: list[Check] = [
    ("no-collapse", "majority experts m*(k) distinct"),
    ("no-collapse", "m*(k) alone >= 97 % on cluster k"),
    ("no-collapse", "m*(k) alone <= 75 % on another cluster"),
    ("router-centers", "argmax_k' <theta_m*(k), c_k'> = k"),
    ("router-centers", "<theta_m*(k), c_k> > max_j |<theta_m*(k), v_j>|"),
    ("exploration", "dispatch entropy >= 0.97 ln K"),
    ("exploration", "every load within n/M +- 5 sd"),
    ("exploration", "stage 2:"),
]
#: Deterministic routing (logit margin > 1) was measured refuted here (4/60) and is now reported, not
#: asserted, by router-centers under the official code's semantics (its early stopping ends runs first).
OFFICIAL_REFUTED: list[Check] = []
OFFICIAL_OPEN: list[Check] = [
    ("no-collapse", "K non-empty groups, router sends >= 90 %"),
    ("exploration", ">= M-1 experts specialised"),
    ("thm4.2", "training accuracy >= 98 %"),
    ("thm4.2", "test accuracy >= 98 %"),
]


# --- per-draw verdicts (each draw trained once per process) -------------------------------------

_VERDICTS: dict[tuple, dict[str, list[tuple[str, bool, str]]]] = {}


def verdicts(d: Draw, **overrides) -> dict[str, list[tuple[str, bool, str]]]:
    """Every check of every claim on draw ``d``: {claim: [(prediction, passed, measured), ...]}."""
    key = (d, tuple(sorted(overrides.items())))
    if key not in _VERDICTS:
        _VERDICTS[key] = {name: [(c.prediction.removeprefix("custom: "), c.passed, c.measured) for c in r.checks]
                          for name, r in evaluate(d, **overrides).items()}
    return _VERDICTS[key]


def check_of(v: dict, check: Check) -> tuple[bool, str]:
    """(passed, measured) of the check of ``v`` whose prediction starts with ``check[1]``."""
    claim, start = check
    hits = [(ok, measured) for pred, ok, measured in v[claim] if pred.startswith(start)]
    if len(hits) != 1:
        raise LookupError(f"claim {claim!r} has {len(hits)} checks starting with {start!r}: "
                          f"{[p for p, _, _ in v[claim]]}")
    return hits[0]


def experiment(batch: typing.Sequence[Draw], checks: typing.Sequence[Check], p0: float,
               **overrides) -> dict[Check, Decision]:
    """Train every draw of ``batch`` and apply the decision rule to each of ``checks``."""
    per_draw = [verdicts(d, **overrides) for d in batch]
    out = {}
    for check in checks:
        results = [check_of(v, check) for v in per_draw]
        out[check] = decide(f"{check[0]}: {check[1]}", [ok for ok, _ in results], p0)
        failed = [f"{d!r}: {measured}" for d, (ok, measured) in zip(batch, results) if not ok]
        if failed and currently_in_test_context():
            note(f"{check[0]}: {check[1]} failed on\n  " + "\n  ".join(failed))
    return out


def refuted(dec: Decision) -> bool:
    """The data refute P(pass) >= p0: the one-sided 95 % Clopper-Pearson upper bound is < p0."""
    return stats.clopper_pearson_upper(dec.passed_draws, dec.draws) < dec.p0


def assert_rule(decisions: dict[Check, Decision], holds, refute=()) -> None:
    """Every check of ``holds`` passes the rule; every check of ``refute`` is refuted; others are reported."""
    table = "\n".join(f"  [{'holds' if c in holds else 'refuted' if c in refute else 'open'}] {dec}"
                      for c, dec in decisions.items())
    if currently_in_test_context():
        note(table)
    print(table)  # shown by pytest -s / -rA: the open checks' numbers are reported even when it passes
    bad = [str(decisions[c]) for c in holds if not decisions[c].passed]
    bad += [f"{decisions[c]} (documented as refuted: CP upper bound "
            f"{stats.clopper_pearson_upper(decisions[c].passed_draws, decisions[c].draws):.3f} should be < p0)"
            for c in refute if not refuted(decisions[c])]
    assert not bad, "decision rule failed:\n  " + "\n  ".join(bad) + "\nall checks:\n" + table


# --- (a) the official neighbourhood ---------------------------------------------------------------

@RULE
@given(batch=batches(sample_official, OFFICIAL_N, OFFICIAL))
def test_official_neighbourhood(batch):
    """Theorem 4.2 (3), (4) and the two stages of Section 5 around the official setting 1.

    Domain: ``strategies.OFFICIAL`` (the official code's semantics; K in {3, 4}, M - K in [2, 6],
    J, d, P, n in [1000, 4000], sigma_p, the alpha/beta/gamma ranges, sigma_0, eta, eta_r moved
    around setting 1). Holds (rule above): the K majority experts are distinct, each is >= 97 % on
    its cluster and <= 75 % on another; the router of m*(k) aligns with c_k (argmax, and more than
    with any feature v_j); stage 1 routes uniformly (entropy, loads) and stage 2 grows the router.
    Deterministic routing (logit margin > 1 on 99 % of each cluster) was measured refuted under the
    official code's early stopping (4/60 draws) and is now reported by router-centers, not asserted,
    under those semantics. The measurements: benchmarks/results/calibration/hypothesis_dynamics.md.
    """
    decisions = experiment(batch, OFFICIAL_HOLDS + OFFICIAL_REFUTED + OFFICIAL_OPEN, P0)
    assert_rule(decisions, OFFICIAL_HOLDS, OFFICIAL_REFUTED)


#: The broken model of the negative test: a frozen router (eta_r = 0, Theta stays 0).
BROKEN_N = 5
BROKEN_FAILS: list[Check] = [
    ("router-centers", "argmax_k' <theta_m*(k), c_k'> = k"),
    ("router-centers", "<theta_m*(k), c_k> > max_j |<theta_m*(k), v_j>|"),
    ("exploration", "stage 2:"),
]


@settings(max_examples=1, deadline=None, database=None, derandomize=True, phases=(Phase.generate,))
@given(batch=batches(sample_official, BROKEN_N, OFFICIAL))
def test_rule_rejects_a_frozen_router(batch):
    """The same rule refutes the broken model ``lr_router = 0`` on official-neighbourhood draws.

    With Theta frozen at 0 the router never aligns with any center (all <theta_m, c_k> = 0) and
    never grows, so the router checks that hold for the unbroken model fail on every draw: 0 of
    BROKEN_N = 5 passing draws give a 95 % Clopper-Pearson upper bound 0.45 < p0 = 0.5.
    """
    decisions = experiment(batch, BROKEN_FAILS, 0.5, lr_router=0.0)
    print("\n".join(map(str, decisions.values())))
    assert all(not d.passed for d in decisions.values()), decisions
    assert all(refuted(d) for d in decisions.values()), "\n".join(map(str, decisions.values()))


# --- (b) Theorem 4.2's regime -------------------------------------------------------------------

#: ``theory-d200`` itself (``strategies.THEORY_QUICK``, seeds drawn): the checks that held on >= 5
#: of the 6 measured draws (calibration file, "d = 200, centre").
QUICK_HOLDS: list[Check] = [
    ("thm4.2", "test accuracy >= 98 %"),
    ("no-collapse", "majority experts m*(k) distinct"),
    ("no-collapse", "m*(k) alone <= 75 % on another cluster"),
    ("exploration", "dispatch entropy >= 0.97 ln K"),
]
THEORY_N_QUICK = 3


@RULE
@given(batch=batches(sample_theory, THEORY_N_QUICK, THEORY_QUICK))
def test_theory_regime_quick(batch):
    """Theorem 4.2 (2), (3) at d = 200 (``theory-d200``, data and model seeds drawn), three draws.

    Three draws cannot reach a Clopper-Pearson bound >= 0.5 (3 of 3 gives 0.37), so this default-tier
    check applies the quick tier's rule of ``moesim.claims`` (a majority: >= 2 of 3 draws) to the
    checks that hold there; the Clopper-Pearson rule runs on more draws in the slow tests below.
    """
    per_draw = [verdicts(d) for d in batch]
    for check in QUICK_HOLDS:
        results = [check_of(v, check) for v in per_draw]
        k = sum(ok for ok, _ in results)
        print(f"{check}: {k}/{len(results)} draws pass: {[m for _, m in results]}")
        assert 2 * k > len(results), f"{check}: {k}/{len(results)} draws pass: {[m for _, m in results]}"


#: Theorem regime with its constants drawn (``strategies.THEORY``, d = 200; 24 draws measured:
#: calibration file, "d = 200"). "m*(k) distinct" was asserted here until the ci experiment below
#: (``THEORY_CI_BATCH``) gave 6/10: pooled 18/24 (p ~ 0.75) holds at p0 = 0.5 but cannot be resolved
#: by 10 draws (>= 9 needed), so it is now reported, not asserted (calibration file, "narrowing 3").
THEORY_HOLDS: list[Check] = [
    ("thm4.2", "test accuracy >= 98 %"),
]
THEORY_REFUTED: list[Check] = [
    ("exploration", ">= M-1 experts specialised"),
    ("exploration", "stage 2:"),
]
THEORY_OPEN: list[Check] = [
    ("thm4.2", "zero training error"),
    ("no-collapse", "majority experts m*(k) distinct"),
    ("no-collapse", "m*(k) alone >= 97 % on cluster k"),
    ("no-collapse", "m*(k) alone <= 75 % on another cluster"),
    ("no-collapse", "K non-empty groups, router sends >= 90 %"),
    ("router-centers", "argmax_k' <theta_m*(k), c_k'> = k"),
    ("router-centers", "<theta_m*(k), c_k> > max_j |<theta_m*(k), v_j>|"),
    ("router-centers", "logit margin of m*(k) over experts outside M_k > 1"),
    ("exploration", "dispatch entropy >= 0.97 ln K"),
    ("exploration", "every load within n/M +- 5 sd"),
]
#: The ci experiment of ``test_theory_regime`` (derandomized): the counterexample batch of
#: "narrowing 3" (m*(k) distinct on 6 of these 10 draws).
THEORY_CI_BATCH = [
    theory_draw(seed=35627, K=4, P=4, a_sigma=0.2801, alpha_range=(0.412, 1.52), beta_range=(1.13, 2.33), c_J=1.408,
                c_M=1.234, c_T=10.0, c_eta=0.04762, c_n=22.3, c_router=0.5504, d=200, data_seed=41436,
                gamma_range=(0.582, 3.09), sigma_p=0.77),
    theory_draw(seed=42414, K=4, P=3, a_sigma=0.3332, alpha_range=(0.562, 1.8), beta_range=(0.969, 1.62), c_J=1.192,
                c_M=1.154, c_T=10.0, c_eta=0.04968, c_n=21.5, c_router=1.528, d=200, data_seed=34446,
                gamma_range=(0.437, 3.01), sigma_p=1.36),
    theory_draw(seed=61213, K=4, P=5, a_sigma=0.2972, alpha_range=(0.441, 2.22), beta_range=(1.01, 1.85), c_J=1.286,
                c_M=1.089, c_T=10.0, c_eta=0.04324, c_n=18.92, c_router=1.007, d=200, data_seed=4780,
                gamma_range=(0.546, 3.33), sigma_p=0.889),
    theory_draw(seed=3838, K=3, P=5, a_sigma=0.304, alpha_range=(0.587, 1.58), beta_range=(1.13, 2.23), c_J=1.075,
                c_M=1.084, c_T=10.0, c_eta=0.04661, c_n=15.52, c_router=0.846, d=200, data_seed=5196,
                gamma_range=(0.472, 3.31), sigma_p=0.727),
    theory_draw(seed=23927, K=4, P=4, a_sigma=0.3294, alpha_range=(0.427, 2.08), beta_range=(0.919, 2.14), c_J=1.315,
                c_M=1.026, c_T=10.0, c_eta=0.04067, c_n=20.0, c_router=1.932, d=200, data_seed=3184,
                gamma_range=(0.46, 3.41), sigma_p=0.699),
    theory_draw(seed=51497, K=3, P=4, a_sigma=0.3179, alpha_range=(0.699, 2.45), beta_range=(0.984, 2.21), c_J=1.367,
                c_M=1.104, c_T=10.0, c_eta=0.04887, c_n=22.29, c_router=0.6724, d=200, data_seed=15089,
                gamma_range=(0.549, 2.79), sigma_p=1.12),
    theory_draw(seed=58322, K=4, P=5, a_sigma=0.2924, alpha_range=(0.404, 2.36), beta_range=(1.19, 2.37), c_J=1.24,
                c_M=1.206, c_T=10.0, c_eta=0.0467, c_n=17.66, c_router=1.885, d=200, data_seed=24066,
                gamma_range=(0.445, 3.46), sigma_p=1.47),
    theory_draw(seed=1048, K=3, P=4, a_sigma=0.3296, alpha_range=(0.679, 1.54), beta_range=(1.09, 2.09), c_J=1.256,
                c_M=1.189, c_T=10.0, c_eta=0.03443, c_n=15.67, c_router=1.762, d=200, data_seed=20330,
                gamma_range=(0.409, 3.08), sigma_p=0.943),
    theory_draw(seed=8162, K=4, P=4, a_sigma=0.3096, alpha_range=(0.69, 2.06), beta_range=(0.904, 1.79), c_J=1.293,
                c_M=1.072, c_T=10.0, c_eta=0.04683, c_n=17.88, c_router=1.341, d=200, data_seed=8221,
                gamma_range=(0.666, 2.34), sigma_p=0.93),
    theory_draw(seed=9533, K=3, P=4, a_sigma=0.2823, alpha_range=(0.588, 2.46), beta_range=(0.948, 2.04), c_J=1.455,
                c_M=1.102, c_T=10.0, c_eta=0.04705, c_n=23.3, c_router=1.123, d=200, data_seed=61902,
                gamma_range=(0.578, 3.27), sigma_p=1.32),
]


@pytest.mark.slow
@RULE
@example(batch=THEORY_CI_BATCH)  # verdict: the asserted checks narrowed (see THEORY_HOLDS)
@given(batch=batches(sample_theory, 10, THEORY))
def test_theory_regime(batch):
    """Theorem 4.2 at d = 200 with its constants drawn, ten draws, the Clopper-Pearson rule (>= 9 of 10)."""
    decisions = experiment(batch, THEORY_HOLDS + THEORY_REFUTED + THEORY_OPEN, 0.5)
    assert_rule(decisions, THEORY_HOLDS, THEORY_REFUTED)


#: ``theory-d400`` (``strategies.THEORY_LARGE``). Only 4 draws are measured (calibration file,
#: "d = 400"): all passed every check except the exploration stage at T1 (0/4) and the routing
#: margin / routed share (3/4). Four draws cannot calibrate a 6-of-6 rule over nine checks, so only
#: the test accuracy (also 22/24 at d = 200) is asserted; the rest is reported.
LARGE_HOLDS: list[Check] = [
    ("thm4.2", "test accuracy >= 98 %"),
]
LARGE_REFUTED: list[Check] = [
    ("exploration", ">= M-1 experts specialised"),
    ("exploration", "stage 2:"),
]
LARGE_OPEN: list[Check] = [
    ("thm4.2", "zero training error"),
    ("no-collapse", "majority experts m*(k) distinct"),
    ("no-collapse", "m*(k) alone >= 97 % on cluster k"),
    ("no-collapse", "m*(k) alone <= 75 % on another cluster"),
    ("no-collapse", "K non-empty groups, router sends >= 90 %"),
    ("router-centers", "argmax_k' <theta_m*(k), c_k'> = k"),
    ("router-centers", "<theta_m*(k), c_k> > max_j |<theta_m*(k), v_j>|"),
    ("router-centers", "logit margin of m*(k) over experts outside M_k > 1"),
    ("exploration", "dispatch entropy >= 0.97 ln K"),
    ("exploration", "every load within n/M +- 5 sd"),
]


@pytest.mark.slow
@RULE
@given(batch=batches(sample_theory, 6, THEORY_LARGE))
def test_theory_regime_d400(batch):
    """Theorem 4.2 at d = 400, six draws (data and model seeds), the Clopper-Pearson rule (6 of 6)."""
    decisions = experiment(batch, LARGE_HOLDS + LARGE_REFUTED + LARGE_OPEN, 0.5)
    assert_rule(decisions, LARGE_HOLDS, LARGE_REFUTED)


# --- counterexamples found by the draws, with their verdicts -------------------------------------

#: The official centre at n = 4000 with data seed 101, model seed 1 (calibration file, "centre").
CENTRE_SEED1 = official_draw(seed=1, n=4000, data_seed=101)


@settings(deadline=None, database=None, phases=(Phase.explicit,))
# K = 5 narrowed away (calibration file, "narrowing 1"): m*(k) reaches 47.8 % on its own cluster.
@example(draw=official_draw(seed=29018, J=8, K=5, M=8, P=6, alpha_range=(0.551, 1.52), beta_range=(0.997, 2.38),
                            d=64, data_seed=57993, eta=0.00122, eta_r=0.0848, gamma_range=(0.486, 3.12), n=3015,
                            sigma0=0.000823, sigma_p=1.07),
         check=("no-collapse", "m*(k) alone >= 97 % on cluster k"), verdict=False)
# eta > 1.2e-3 narrowed away ("narrowing 2"): the router leaves uniform routing before the fixed
# exploration step 20 (loads up to 11.7 sd off n/M).
@example(draw=official_draw(seed=21396, J=16, K=3, M=6, P=3, alpha_range=(0.654, 2.16), beta_range=(0.889, 2.24),
                            d=40, data_seed=48253, eta=0.00163, eta_r=0.145, gamma_range=(0.51, 3.34), n=3335,
                            sigma0=0.000962, sigma_p=1.49),
         check=("exploration", "every load within n/M +- 5 sd"), verdict=False)
# At the official centre itself ("refuted"): routing was not deterministic when the official code's
# early stopping ended the run (margin > 1 on 89.1 % only). Verdict: the router-centers claim no longer
# asserts the margin under the official code's semantics (it reports it), so the check is gone here.
# The same draw's 8 specialised experts at step 35 missed a cluster (the coupon-collector bound):
# verdict: exploration now asserts >= 2 distinct clusters (independent inits) and reports coverage.
@example(draw=CENTRE_SEED1, check=("exploration", ">= M-1 experts specialised"), verdict=True)
# ... while the specialisation itself holds there.
@example(draw=CENTRE_SEED1, check=("no-collapse", "m*(k) alone >= 97 % on cluster k"), verdict=True)
@given(draw=draws(sample_official), check=st.just(("no-collapse", "")), verdict=st.booleans())
def test_recorded_counterexamples(draw, check, verdict):
    """Each draw that narrowed a domain (or refuted a check) still gives its recorded verdict."""
    ok, measured = check_of(verdicts(draw), check)
    assert ok == verdict, f"{draw!r}: {check} gave {measured}, recorded verdict {verdict}: update the calibration"
