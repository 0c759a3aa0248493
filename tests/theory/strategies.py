"""Hypothesis strategies over the configurations of Theorem 4.2's dynamics claims.

A *draw* is one MoE configuration together with its own data seed and model seed. Two domains:

* **official neighbourhood**: the official code's semantics on setting 1 (``preset("official-s1")``,
  two heads, double-softmax loss, noisy-logit gate, early stopping, x10 data) with each size,
  data-distribution parameter and step size moved around its official value;
* **theorem regime**: Algorithm 1 on unit-scale data with M, J, sigma_0, eta, eta_r, n, T set from
  the orders of Theorem 4.2 (``moesim.config.theory_values``) with their constants drawn.

``Ranges`` holds the range of every drawn parameter; ``OFFICIAL`` and ``THEORY`` are the
neighbourhoods measured in benchmarks/results/calibration/hypothesis_dynamics.md (how they were
chosen, and every narrowing with its evidence, is written there). ``evaluate`` trains one draw and
returns each claim's verdict for its one model seed (``moesim.claims``, regime ``custom``);
``decide`` is the decision rule over a batch of draws.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from moesim import claims
from moesim.claims import stats
from moesim.config import Config, preset, theory_values

#: The data generator of every draw: the official generator's RNG order reproduces the official
#: files only at their own sizes (and is a per-sample Python loop); "torch" draws the same
#: distribution (Definition 3.1) for any K, P, d, n.
DATA_RNG = "torch"


@dataclass(frozen=True)
class Draw:
    """One drawn configuration: its domain, model seed and the drawn parameters (sorted pairs)."""

    domain: str  # "official" or "theory"
    seed: int  # model seed (W^(0), router noise)
    params: tuple[tuple[str, typing.Any], ...]

    def __getitem__(self, name: str):
        return dict(self.params)[name]

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example: re-usable as @example
        args = ", ".join(f"{k}={v!r}" for k, v in self.params)
        return f"{self.domain}_draw(seed={self.seed}, {args})"

    def config(self, **overrides) -> Config:
        """The MoE config of this draw (nonlinear model; ``overrides`` on top, e.g. a broken model)."""
        p = dict(self.params)
        data = dict(n_clusters=p["K"], n_patches=p["P"], sigma_p=p["sigma_p"], alpha_range=p["alpha_range"],
                    beta_range=p["beta_range"], gamma_range=p["gamma_range"], data_seed=p["data_seed"],
                    data_rng=DATA_RNG)
        if self.domain == "official":
            values = dict(data, patch_dim=p["d"], n_experts=p["M"], n_filters=p["J"], n_train=p["n"], n_test=p["n"],
                          init_uniform_scale=p["sigma0"], lr_expert=p["eta"], lr_router=p["eta_r"])
            values.update(overrides)
            return preset("official-s1", "moe-nonlinear", **values)
        constants = {k: p[k] for k in ("c_M", "c_J", "a_sigma", "c_eta", "c_router", "c_n", "c_T")}
        values = theory_values(p["d"], n_clusters=p["K"], **constants)
        values.update(data, architecture="moe", activation="cubic")
        values.update(overrides)
        return Config().replace(**values)


#: The official setting 1 (the centre of the official neighbourhood), in the drawn parameters.
OFFICIAL_CENTRE = dict(K=4, M=8, J=16, d=50, P=4, n=16000, sigma_p=1.0, alpha_range=(0.5, 2.0), beta_range=(1.0, 2.0),
                       gamma_range=(0.5, 3.0), sigma0=1e-3, eta=1e-3, eta_r=0.1, data_seed=12)
#: Theorem 4.2's regime as ``theory-d<d>`` builds it (``THEORY_CONSTANTS``), on setting 1's data.
THEORY_CENTRE = dict(K=4, d=200, P=4, sigma_p=1.0, alpha_range=(0.5, 2.0), beta_range=(1.0, 2.0),
                     gamma_range=(0.5, 3.0),
                     c_M=1.0, c_J=1.0, a_sigma=1 / 3, c_eta=1 / 25, c_router=1.0, c_n=20.0, c_T=10.0, data_seed=12)


def official_draw(seed: int = 0, **params) -> Draw:
    """A draw of the official neighbourhood: the official centre with ``params`` changed."""
    return _make("official", seed, OFFICIAL_CENTRE, params)


def theory_draw(seed: int = 0, **params) -> Draw:
    """A draw of the theorem regime: ``THEORY_CENTRE`` with ``params`` changed."""
    return _make("theory", seed, THEORY_CENTRE, params)


def _make(domain, seed, centre, params) -> Draw:
    unknown = sorted(set(params) - set(centre))
    if unknown:
        raise ValueError(f"unknown drawn parameter(s) {unknown}; allowed: {', '.join(centre)}")
    values = dict(centre, **params)
    return Draw(domain, int(seed), tuple(sorted(values.items())))


# --- ranges -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ranges:
    """The range of each drawn parameter (closed intervals; ``*_log``: drawn log-uniformly).

    Official domain: K, M (as M - K >= ``extra_experts[0]``), J (even: two heads), d, P, n; the
    distribution ranges' ends; sigma_0, eta, eta_r as factors on their official values.
    Theorem domain: K, d (from ``dims``), P, sigma_p, ranges, and the constants of
    ``THEORY_CONSTANTS`` (each order of Theorem 4.2 with its constant drawn). The defaults are the
    candidate official neighbourhood measured first (calibration file, batch 1).
    """

    K: tuple[int, int] = (3, 5)
    extra_experts: tuple[int, int] = (2, 6)  # M - K
    J: tuple[int, ...] = (8, 12, 16, 20, 24)
    d: tuple[int, int] = (32, 64)
    P: tuple[int, int] = (3, 6)
    n: tuple[int, int] = (1000, 4000)
    sigma_p: tuple[float, float] = (0.5, 2.0)
    alpha_lo: tuple[float, float] = (0.4, 0.7)
    alpha_hi: tuple[float, float] = (1.5, 2.5)
    beta_lo: tuple[float, float] = (0.8, 1.2)
    beta_hi: tuple[float, float] = (1.6, 2.4)
    gamma_lo: tuple[float, float] = (0.4, 0.7)
    gamma_hi: tuple[float, float] = (2.0, 3.5)
    sigma0_factor_log: tuple[float, float] = (0.5, 2.0)
    eta_factor_log: tuple[float, float] = (0.5, 2.0)
    eta_r_factor_log: tuple[float, float] = (0.5, 2.0)
    # theorem domain only
    dims: tuple[int, ...] = (200,)
    c_M: tuple[float, float] = (1.0, 1.0)
    c_J: tuple[float, float] = (1.0, 1.0)
    a_sigma: tuple[float, float] = (1 / 3, 1 / 3)
    c_eta: tuple[float, float] = (1 / 25, 1 / 25)
    c_router: tuple[float, float] = (1.0, 1.0)
    c_n: tuple[float, float] = (20.0, 20.0)
    c_T: tuple[float, float] = (10.0, 10.0)

    def replace(self, **changes) -> Ranges:
        return dataclasses.replace(self, **changes)


def _uniform(rng: np.random.Generator, lo_hi, digits: int = 3) -> float:
    """Uniform on [lo, hi], rounded to ``digits`` significant digits (short reprs for @example)."""
    lo, hi = lo_hi
    return float(lo) if lo == hi else float(f"{rng.uniform(lo, hi):.{digits}g}")


def _log_uniform(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = lo_hi
    return float(lo) if lo == hi else float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.3g}")


def _integer(rng: np.random.Generator, lo_hi) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _data(rng: np.random.Generator, r: Ranges) -> dict:
    return dict(
        P=_integer(rng, r.P), sigma_p=_uniform(rng, r.sigma_p),
        alpha_range=(_uniform(rng, r.alpha_lo), _uniform(rng, r.alpha_hi)),
        beta_range=(_uniform(rng, r.beta_lo), _uniform(rng, r.beta_hi)),
        gamma_range=(_uniform(rng, r.gamma_lo), _uniform(rng, r.gamma_hi)),
        data_seed=_integer(rng, (0, 2**16 - 1)),
    )


def sample_official(rng: np.random.Generator, r: Ranges | None = None) -> Draw:
    """One configuration of the official neighbourhood ``r`` (default ``OFFICIAL``), independently
    and uniformly drawn (sigma_0, eta, eta_r log-uniformly), with its data and model seeds."""
    r = r or OFFICIAL
    K = _integer(rng, r.K)
    params = dict(
        K=K, M=K + _integer(rng, r.extra_experts), J=int(rng.choice(r.J)),
        d=_integer(rng, (max(r.d[0], 2 * K), r.d[1])), n=_integer(rng, r.n),
        sigma0=round(1e-3 * _log_uniform(rng, r.sigma0_factor_log), 12),
        eta=round(1e-3 * _log_uniform(rng, r.eta_factor_log), 12),
        eta_r=round(0.1 * _log_uniform(rng, r.eta_r_factor_log), 12), **_data(rng, r),
    )
    return official_draw(_integer(rng, (0, 2**16 - 1)), **params)


def sample_theory(rng: np.random.Generator, r: Ranges | None = None) -> Draw:
    """One configuration of Theorem 4.2's regime ``r`` (default ``THEORY``), drawn as above."""
    r = r or THEORY
    params = dict(K=_integer(rng, r.K), d=int(rng.choice(r.dims)), **_data(rng, r))
    for name in ("c_M", "c_J", "a_sigma", "c_eta", "c_router", "c_n", "c_T"):
        params[name] = _uniform(rng, getattr(r, name), digits=4)
    return theory_draw(_integer(rng, (0, 2**16 - 1)), **params)


#: The seed of one statistical experiment (hypothesis draws it; derandomized in the "ci" profile).
BATCH_SEEDS = st.integers(0, 2**32 - 1)


def batches(sampler, size: int, r: Ranges | None = None):
    """A strategy for ``size`` independent draws of ``sampler`` (one statistical experiment).

    Hypothesis chooses only the experiment's seed; the draws inside are i.i.d. from ``r``. Not
    hypothesis's own per-field generation: that is deliberately not i.i.d. (it starts from the
    all-minimum example, repeated in every list element, and then mutates earlier examples; measured
    in benchmarks/results/calibration/hypothesis_dynamics.md: 60 examples held 18 distinct model
    seeds), which would void the binomial model of the decision rule (``decide``).
    """
    return BATCH_SEEDS.map(lambda s: [sampler(rng, r) for rng in [np.random.default_rng(s)] for _ in range(size)])


def draws(sampler, r: Ranges | None = None):
    """A strategy for one draw of ``sampler`` (the per-draw tests, and reproducing a reported draw)."""
    return BATCH_SEEDS.map(lambda s: sampler(np.random.default_rng(s), r))


#: The official neighbourhood the claims are asserted on: the candidate ranges of ``Ranges()``
#: narrowed to K <= 4 and eta <= 1.2e-3 (evidence: the calibration file).
OFFICIAL = Ranges(K=(3, 4), eta_factor_log=(0.5, 1.2))
#: Theorem 4.2's regime at d = 200 with the data parameters and the constants of each order drawn.
THEORY = Ranges(K=(3, 4), P=(3, 5), sigma_p=(0.5, 1.5), dims=(200,), c_M=(1.0, 1.25), c_J=(1.0, 1.5),
                a_sigma=(0.28, 1 / 3), c_eta=(1 / 30, 1 / 20), c_router=(0.5, 2.0), c_n=(15.0, 25.0), c_T=(10.0, 10.0))
#: ``theory-d200`` itself (setting 1's data at unit scale, the constants of ``THEORY_CONSTANTS``):
#: only the data seed and the model seed are drawn (the default tier's few theorem-regime draws).
THEORY_QUICK = Ranges(K=(4, 4), P=(4, 4), sigma_p=(1.0, 1.0), alpha_lo=(0.5, 0.5), alpha_hi=(2.0, 2.0),
                      beta_lo=(1.0, 1.0), beta_hi=(2.0, 2.0), gamma_lo=(0.5, 0.5), gamma_hi=(3.0, 3.0), dims=(200,))
#: ``theory-d400`` itself (setting 1's data at unit scale, the constants of ``THEORY_CONSTANTS``):
#: only the data seed and the model seed are drawn (a d = 400 run costs minutes).
THEORY_LARGE = THEORY_QUICK.replace(dims=(400,))


# --- verdicts and the decision rule -------------------------------------------------------------

CLAIMS = ("thm4.2", "no-collapse", "router-centers", "exploration")


def evaluate(d: Draw, names: typing.Sequence[str] = CLAIMS, **overrides) -> dict[str, claims.ClaimResult]:
    """Train draw ``d`` (its one model seed) and check each claim of ``names`` on it.

    One seed: a claim's per-seed rule is then that seed's verdict. ``overrides``: config fields of
    the model under test (a broken model), applied by the claims' ``Context``.
    """
    scale = dataclasses.replace(claims.QUICK, seeds=(d.seed,))
    ctx = claims.Context(scale, overrides=overrides or None, custom=d.config())
    return {name: claims.get(name).check(ctx) for name in names}


@dataclass
class Decision:
    """The decision rule's verdict for one claim over a batch of draws."""

    claim: str
    passed_draws: int
    draws: int
    cp_lower: float  # one-sided 95 % Clopper-Pearson lower bound on P(a draw passes)
    p0: float

    @property
    def passed(self) -> bool:
        return self.cp_lower >= self.p0

    def __str__(self) -> str:
        return (f"{self.claim}: {self.passed_draws}/{self.draws} draws pass, P >= {self.cp_lower:.3f} (95 % CP) "
                f"{'>=' if self.passed else '<'} p0 = {self.p0}")


def decide(claim: str, verdicts: typing.Sequence[bool], p0: float) -> Decision:
    """The rule: the one-sided 95 % Clopper-Pearson lower bound on P(draw passes) must be >= p0."""
    k = sum(bool(v) for v in verdicts)
    return Decision(claim, k, len(verdicts), stats.clopper_pearson_lower(k, len(verdicts)), p0)


def min_passes(draws: int, p0: float) -> int:
    """The fewest passing draws out of ``draws`` that the rule accepts at ``p0``."""
    return next(k for k in range(draws + 1) if stats.clopper_pearson_lower(k, draws) >= p0)


# --- calibration command line (benchmarks/results/calibration/hypothesis_dynamics.md) -------------

def _main(argv: list[str]) -> None:
    """``measure DOMAIN N BATCH_SEED OUT.jsonl [RANGES] [OVERRIDES-JSON]``: N i.i.d. draws of DOMAIN
    (``official``/``theory``) from ``RANGES`` (a Python expression over this module, default the
    domain's neighbourhood), every check's verdict appended to OUT.jsonl;
    ``fixed DOMAIN SEEDS PARAMS-JSON OUT.jsonl [OVERRIDES-JSON]``: the centre with PARAMS changed, one draw
    per model seed s of SEEDS (data seed 100 + s); ``summary OUT.jsonl [TAG]``: counts per check
    with their 95 % Clopper-Pearson bounds."""
    import json
    import time

    import torch

    torch.set_num_threads(1)
    cmd, args = argv[0], argv[1:]
    if cmd == "summary":
        with open(args[0]) as f:
            recs = [json.loads(line) for line in f]
        recs = [r for r in recs if len(args) < 2 or args[1] in r["tag"]]
        secs = sorted(r["seconds"] for r in recs)
        print(f"{len(recs)} draws; seconds per draw: median {secs[len(secs) // 2]:.1f}, max {secs[-1]:.1f}")
        for claim, checks in recs[0]["checks"].items():
            for j, (pred, _, _) in enumerate(checks):
                k = sum(r["checks"][claim][j][1] for r in recs)
                lo, hi = stats.clopper_pearson_lower(k, len(recs)), stats.clopper_pearson_upper(k, len(recs))
                print(f"  {k:3d}/{len(recs)} [{lo:.2f}, {hi:.2f}]  {claim}: {pred.removeprefix('custom: ')}")
        return
    domain = args[0]
    if cmd == "measure":
        n, batch_seed, out = int(args[1]), int(args[2]), args[3]
        r = eval(args[4], globals()) if len(args) > 4 and args[4] else None
        overrides = json.loads(args[5]) if len(args) > 5 else {}
        rng = np.random.default_rng(batch_seed)
        sampler = sample_official if domain == "official" else sample_theory
        todo = [sampler(rng, r) for _ in range(n)]
    elif cmd == "fixed":
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args[2]).items()}
        out = args[3]
        overrides = json.loads(args[4]) if len(args) > 4 else {}
        make = official_draw if domain == "official" else theory_draw
        todo = [make(int(s), **{"data_seed": 100 + int(s), **params}) for s in args[1].split(",")]
    else:
        raise SystemExit(_main.__doc__)
    tag = " ".join(argv)
    with open(out, "a") as f:
        for i, d in enumerate(todo):
            t = time.perf_counter()
            res = evaluate(d, **overrides)
            rec = dict(tag=tag, draw=repr(d), seconds=round(time.perf_counter() - t, 2),
                       checks={k: [[c.prediction, c.passed, c.measured] for c in v.checks] for k, v in res.items()})
            f.write(json.dumps(rec) + "\n")
            f.flush()
            print(i, f"{rec['seconds']:.1f}s", {k: int(v.passed) for k, v in res.items()}, rec["draw"], flush=True)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
