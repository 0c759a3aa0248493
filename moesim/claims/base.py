"""What a claim is, what checking it returns, and the run cache that claims share.

A ``Claim`` names a statement of the paper (theorem, lemma, or empirical table), the finite-size
prediction that is checked, and where its thresholds come from. ``Claim.check(ctx)`` trains or
computes what it needs through the ``Context`` (which trains each distinct configuration once
per process and hands the same ``RunResult`` to every claim that asks for it) and returns a
``ClaimResult``: one ``Check`` per assertion, each with its measured value, threshold, rule and
verdict. ``moesim verify`` and ``tests/theory`` both call these objects; nothing is defined twice.

Two scales (``Scale``):

* ``QUICK``: n = 4000 training and test points, seeds 0, 1, 2. A per-seed property must hold for
  a majority of the seeds (i.e. the median seed), a quantity is compared through its median.
* ``FULL``: the paper's n = 16000, seeds 0..9. A per-seed property must have a one-sided 95 %
  Clopper-Pearson lower bound >= 1/2 on the probability that a seed satisfies it (10 seeds: at
  least 9 must); a quantity is compared through a one-sided 95 % Student-t bound on its mean.
"""

from __future__ import annotations

import dataclasses
import json
import time
import typing
from dataclasses import dataclass, field

import numpy as np

from ..config import Config, preset
from ..jsonable import jsonable
from . import stats

#: A per-seed property passes the statistical tier when P(seed satisfies it) >= this, at 95 %.
MIN_SUCCESS_PROBABILITY = 0.5
#: Where the dynamics claims can run: the official code (setting 1), Algorithm 1 at the official
#: operating point (``paper-s1``), and Theorem 4.2's own regime (``theory-d<d>``).
REGIMES = ("official", "paper", "theory")
#: ``moesim verify`` without ``--regime``: the paper's runs, under both semantics.
DEFAULT_REGIMES = ("official", "paper")
#: The patch dimension of the theory regime's checks: of d = 100, 200, 400 (6 seeds each,
#: benchmarks/results/calibration/theory_regime.md) the smallest at which Theorem 4.2 (1), (2) and
#: the uniform routing of stage 1 both hold for a majority of seeds. No-collapse, the router margin
#: and the experts' specialisation by T1 do not hold there yet (findings, asserted as such in
#: tests/theory/test_theory_regime.py).
THEORY_TEST_DIM = 400


@dataclass(frozen=True)
class Scale:
    """Problem size, seeds and decision rule of one verification tier."""

    name: str
    n: int  # n_train = n_test
    seeds: tuple[int, ...]
    statistics: str  # "median": majority of seeds / median; "confidence": one-sided 95 % bounds
    single_seeds: tuple[int, ...]  # seeds of the (expensive) single CNNs of Theorem 4.1
    verify_n_train: int  # training points of the Theorem 4.1 models (verify data; test set: n points)
    single_steps: int  # Adam steps of the single CNNs (official: up to 801)
    paper_steps: int  # T of the paper-semantics MoE runs (Algorithm 1, fixed T)
    lemma_pairs: int  # random (h, h_hat) pairs of the Lemma 5.1 check

    def __post_init__(self):
        if self.statistics not in ("median", "confidence"):
            raise ValueError(f"statistics={self.statistics!r}: choose 'median' or 'confidence'")
        if not self.seeds:
            raise ValueError("a scale needs at least one seed")

    def with_seeds(self, seeds: typing.Sequence[int]) -> "Scale":
        return dataclasses.replace(self, seeds=tuple(seeds))


#: Quick: the Theorem 4.1 models train on 2000 verify points and the
#: single CNNs take 200 Adam steps (their test accuracy is flat from step ~100 on; measured with 128
#: filters, n = 4000, 801 steps); paper-semantics MoE runs take T = 300 steps (at n = 4000 they
#: reach 100 % training accuracy and zero dispatch entropy by step ~100).
QUICK = Scale("quick", n=4000, seeds=(0, 1, 2), statistics="median", single_seeds=(0,), verify_n_train=2000,
              single_steps=200, paper_steps=300, lemma_pairs=400)
#: Full: the paper's and the official code's sizes and step counts.
#: Its single CNNs (one per activation, seed 0; 801 Adam steps at n = 16000 each cost minutes) are
#: each tested on their own 16000 test points: Theorem 4.1 bounds every model, not an average.
FULL = Scale("full", n=16000, seeds=tuple(range(10)), statistics="confidence", single_seeds=(0,),
             verify_n_train=16000, single_steps=801, paper_steps=500, lemma_pairs=4000)
SCALES = {"quick": QUICK, "full": FULL}


@dataclass
class Check:
    """One assertion of a claim: its prediction, what was measured, and the verdict."""

    prediction: str  # e.g. "test accuracy >= 98 %"
    measured: str  # human-readable value with its spread or interval
    passed: bool
    values: dict = field(default_factory=dict)  # numbers behind ``measured`` (JSON-serializable)


@dataclass(frozen=True)
class Statement:
    """What a claim says, shared by the claim (``Claim``) and the outcome of checking it (``ClaimResult``).

    Attributes:
        name: short id (``thm4.1-certificate``, ``lemma5.1``, ...).
        reference: where the paper states it (theorem, lemma, table).
        statement: the claim in words.
        prediction: what is checked at finite size.
        source: where each threshold comes from (paper, or a margin on a recorded measurement).
    """

    name: str
    reference: str
    statement: str
    prediction: str
    source: str


@dataclass(frozen=True)
class ClaimResult(Statement):
    """The outcome of checking one claim: its statement, the scale and seeds, and one check per assertion."""

    scale: str
    seeds: list[int]
    checks: list[Check]
    wall_time_s: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def describe(self) -> str:
        """Multi-line text of every check (pytest failure messages)."""
        lines = [f"{self.name} ({self.reference}) {self.verdict} at scale {self.scale}, seeds {self.seeds}"]
        for c in self.checks:
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.prediction}: {c.measured}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dict(name=self.name, reference=self.reference, statement=self.statement, prediction=self.prediction,
                    threshold_source=self.source, scale=self.scale, seeds=self.seeds, verdict=self.verdict,
                    wall_time_s=round(self.wall_time_s, 3),
                    checks=[dict(prediction=c.prediction, measured=c.measured, passed=c.passed,
                                 values=jsonable(c.values, nonfinite="text")) for c in self.checks])


@dataclass(frozen=True)
class Claim(Statement):
    """A statement of the paper (``Statement``) with its finite-size check.

    Attributes:
        measure: ``measure(ctx) -> list[Check]``.
        detects: the broken models (``moesim.claims.mutants``) this claim must fail on, each with
            the reason; the mutation matrix (``moesim verify --mutants``) asserts it.
        tier: ``"core"`` (``moesim verify``) or ``"scaling"`` (``moesim verify --scaling``).
    """

    measure: typing.Callable[["Context"], list[Check]]
    detects: dict = field(default_factory=dict)
    tier: str = "core"

    def check(self, ctx: "Context") -> ClaimResult:
        t0 = time.perf_counter()
        ctx.log(f"checking {self.name} ({self.reference})")
        checks = self.measure(ctx)
        return ClaimResult(self.name, self.reference, self.statement, self.prediction, self.source, ctx.scale.name,
                           list(ctx.scale.seeds), checks, time.perf_counter() - t0)


#: Every claim, in the order ``moesim verify`` prints them (filled by ``register``).
REGISTRY: dict[str, Claim] = {}


TIERS = ("core", "scaling")


def register(name: str, reference: str, statement: str, prediction: str, source: str, *,
             detects: dict[str, str] | None = None, tier: str = "core"):
    """Decorator: turn ``measure(ctx) -> list[Check]`` into a registered ``Claim``.

    ``detects``: {mutant name: why this claim must fail on it}; ``tier``: one of ``TIERS``.
    """
    if tier not in TIERS:
        raise ValueError(f"tier={tier!r}: choose one of {TIERS}")

    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"claim {name!r} registered twice")
        REGISTRY[name] = Claim(name, reference, statement, prediction, source, fn, dict(detects or {}), tier)
        return REGISTRY[name]

    return wrap


# --- the shared run cache -------------------------------------------------------------------

class RunCache:
    """Trained runs and generated datasets, keyed by their full configuration (safe to share)."""

    def __init__(self):
        self.runs: dict[str, typing.Any] = {}
        self.datasets: dict[str, tuple] = {}


class Context:
    """Scale, the model under test, and a cache of trained runs shared by all claims.

    Args:
        scale: ``QUICK``, ``FULL`` or a custom ``Scale``.
        overrides: config fields applied to every MoE run *of the model under test* (e.g.
            ``{"activation": "linear"}`` or ``{"lr_router": 0.0}`` to break it on purpose). They are
            applied before a claim's own changes (e.g. the linear-expert contrast or the no-noise
            ablation set their defining field last). Single CNNs (Theorem 4.1's sum-form models)
            are not the model under test and do not receive them.
        device: ``cpu`` or ``cuda[:i]``.
        regimes: where the dynamics claims run (``REGIMES``): the official code's semantics
            (setting 1), the paper's Algorithm 1 at the official operating point (setting 1, x10
            data), and/or Theorem 4.2's own regime (``theory-d<theory_dim>``).
        theory_dim: the patch dimension d of the theory regime (default ``THEORY_TEST_DIM``).
        custom: run the dynamics claims on this one MoE config instead (regime ``"custom"``; its own
            n and T; the hypothesis tests draw these). The overrides still apply on top.
        progress: ``progress(desc, total) -> (update(step, total), close())`` for training runs.
        log: called with one line of text per event.
        cache: a ``RunCache`` to share with other contexts (keys are whole configs, so contexts
            with other overrides or scales never collide); default a new one.
    """

    def __init__(self, scale: Scale = QUICK, overrides: dict | None = None, device: str = "cpu",
                 progress=None, log=None, cache: RunCache | None = None,
                 regimes: typing.Sequence[str] = DEFAULT_REGIMES, theory_dim: int | None = None,
                 custom: Config | None = None):
        self.scale = scale
        if custom is not None:
            regimes = ("custom",)
        unknown = [r for r in regimes if r not in REGIMES + (("custom",) if custom is not None else ())]
        if unknown or not regimes:
            raise ValueError(f"regimes={list(regimes)!r}: choose one or more of {', '.join(REGIMES)}")
        self.regimes = tuple(regimes)
        self.custom = custom
        self.theory_dim = THEORY_TEST_DIM if theory_dim is None else theory_dim
        self.overrides = dict(overrides or {})
        self.device = device
        self.progress = progress
        self.log = log or (lambda text: None)
        self.cache = cache if cache is not None else RunCache()
        self.train_seconds = 0.0
        if self.overrides:
            preset("official-s1", "moe-nonlinear", **self.overrides)  # fail early on a bad override

    def config(self, base: str, model: str, *, subject: bool = True, sized: bool = True, **changes) -> Config:
        """The config of ``base`` (``official-s1``, ``paper-verify``, ...) and ``model`` at this scale.

        ``subject``: apply the model-under-test overrides (MoE runs only). ``sized``: n_train =
        n_test = the scale's n (a ``theory-d<d>`` preset keeps its own n = c_n d).
        """
        values = dict(n_train=self.scale.n, n_test=self.scale.n) if sized else {}
        values["device"] = self.device
        if subject and model.startswith("moe"):
            values.update(self.overrides)
        values.update(changes)
        return preset(base, model, **values)

    def dataset(self, cfg: Config):
        """``(train, test)`` of ``cfg``'s data fields, generated once per process."""
        from ..data import DATA_FIELDS, generate

        key = json.dumps({f: getattr(cfg, f) for f in DATA_FIELDS}, sort_keys=True, default=list)
        if key not in self.cache.datasets:
            self.cache.datasets[key] = generate(cfg)
        return self.cache.datasets[key]

    def train(self, cfg: Config, seeds: typing.Sequence[int] | None = None, label: str = ""):
        """``moesim.training.train(cfg, seeds)``, once per distinct (config, seeds) in this context."""
        from ..training import train

        seeds = list(self.scale.seeds if seeds is None else seeds)
        key = json.dumps(cfg.to_dict(), sort_keys=True) + repr(seeds)
        if key not in self.cache.runs:
            desc = label or f"{cfg.architecture} {cfg.activation}"
            if cfg.architecture == "moe" and self.overrides:
                desc += f" [model under test changed: {self.overrides}]"
            update, close = self.progress(f"{desc} x{len(seeds)}", cfg.steps) if self.progress else (None, None)
            t0 = time.perf_counter()
            try:
                self.cache.runs[key] = train(cfg, seeds, data=self.dataset(cfg), progress=update)
            finally:
                if close is not None:
                    close()
            dt = time.perf_counter() - t0
            self.train_seconds += dt
            self.log(f"trained {desc}, {len(seeds)} seed(s), n={cfg.n_train}: {dt:.1f} s")
        return self.cache.runs[key]


# --- building checks ------------------------------------------------------------------------

def per_seed_check(prediction: str, ok: typing.Sequence[bool], scale: Scale, values=None, fmt: str = "{:.3g}",
                   per_seed_label: str = "") -> Check:
    """A property that each seed either satisfies or not.

    ``median`` scale: a majority of seeds must satisfy it. ``confidence`` scale: the one-sided
    95 % Clopper-Pearson lower bound on P(a seed satisfies it) must be >= ``MIN_SUCCESS_PROBABILITY``.
    ``values``: the per-seed numbers shown beside the count (optional).
    """
    ok = [bool(v) for v in ok]
    k, S = sum(ok), len(ok)
    shown = ""
    if values is not None:
        vals = np.asarray(values, dtype=np.float64)
        shown = f" ({per_seed_label}{_spread(vals, fmt)})"
    if scale.statistics == "median":
        passed = 2 * k > S
        measured = f"{k}/{S} seeds{shown}"
        bound = None
    else:
        bound = stats.clopper_pearson_lower(k, S)
        passed = bound >= MIN_SUCCESS_PROBABILITY
        measured = f"{k}/{S} seeds, P >= {bound:.2f} (95 % CP){shown}"
    out = dict(successes=k, trials=S, per_seed=ok, rule=scale.statistics, cp_lower_95=bound,
               required=("majority" if scale.statistics == "median" else f"cp_lower >= {MIN_SUCCESS_PROBABILITY}"))
    if values is not None:
        out["values"] = np.asarray(values, dtype=np.float64).tolist()
    return Check(f"{prediction} [per seed]", measured, passed, out)


def quantity_check(prediction: str, values: typing.Sequence[float], op: str, threshold: float, scale: Scale,
                   fmt: str = "{:.3g}") -> Check:
    """A quantity over seeds compared with ``threshold`` (``op`` is ``">="`` or ``"<="``).

    ``median`` scale: the median is compared. ``confidence`` scale: the one-sided 95 % t bound on
    the mean (lower bound for ``>=``, upper for ``<=``) is compared.
    """
    if op not in (">=", "<="):
        raise ValueError(f"op={op!r}: choose '>=' or '<='")
    v = np.asarray(values, dtype=np.float64)
    if scale.statistics == "median":
        stat, name = float(np.median(v)), "median"
    elif op == ">=":
        stat, name = stats.t_lower(v), "95 % lower bound of mean"
    else:
        stat, name = stats.t_upper(v), "95 % upper bound of mean"
    passed = bool(stat >= threshold) if op == ">=" else bool(stat <= threshold)
    if scale.statistics == "median":
        measured = f"median {fmt.format(stat)} {_spread(v, fmt)}"
    else:
        measured = f"mean {fmt.format(v.mean())} ± {fmt.format(v.std())}, {name} {fmt.format(stat)}"
    return Check(f"{prediction} {op} {fmt.format(threshold)}", measured, passed,
                 dict(values=v.tolist(), statistic=name, value=stat, op=op, threshold=threshold))


def exact_check(prediction: str, passed: bool, measured: str, **values) -> Check:
    """A deterministic assertion (no statistics: it must hold exactly)."""
    return Check(prediction, measured, bool(passed), values)


def _spread(v: np.ndarray, fmt: str) -> str:
    if v.size == 1:
        return fmt.format(v[0])
    return f"[{fmt.format(v.min())}, {fmt.format(v.max())}]"

