"""Paired ablations of the official code's quirks with common random numbers.

Each run of a replayed notebook cell (``moesim.replay``) is trained again from the same stream
state, so with the same initialization draws and the same router-noise matrices, with one official
choice switched to the paper's (Algorithm 1, Section 3; the differences are listed in the
appendix *The paper and its official code*). The effect of the switch on a run's test accuracy
and dispatch entropy (Eq. 6.1) is then a paired difference: the run-to-run spread that both
versions share cancels. Beside it, the unpaired estimate: the difference of means of the same
switch measured on independent seeds (moesim's own streams), with Welch's interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .config import PAPER_SEMANTICS
from .replay import NotebookStream, RunReplay, cell_config, load_notebook, replay, replay_run
from .training import make_problem, train

#: Each official quirk and the config fields that switch it to the paper's choice.
QUIRKS: dict[str, dict] = {
    "gate": dict(gate=PAPER_SEMANTICS["gate"]),
    "loss": dict(loss=PAPER_SEMANTICS["loss"]),
    "bias": dict(expert_bias=PAPER_SEMANTICS["expert_bias"]),
    "normalization": dict(normalization=PAPER_SEMANTICS["normalization"]),
    "init": dict(init=PAPER_SEMANTICS["init"]),
    "data scale": dict(data_scale=1.0),  # Definition 3.1 has no global factor
    "test-time noise": dict(test_noise=PAPER_SEMANTICS["test_noise"]),
    "early stopping": dict(stopping=PAPER_SEMANTICS["stopping"]),
}

METRICS = ("test_accuracy", "dispatch_entropy")


@dataclass
class Effect:
    """The effect of one switch on one metric: paired and unpaired, each with a 95 % interval."""

    quirk: str
    metric: str
    paired_mean: float
    paired_half_width: float
    unpaired_mean: float
    unpaired_half_width: float
    n: int

    @property
    def sharpening(self) -> float:
        """How many times narrower the paired interval is than the unpaired one."""
        return self.unpaired_half_width / self.paired_half_width if self.paired_half_width > 0 else math.inf


def paired_interval(base: np.ndarray, other: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean of the paired differences other - base and the half-width of its t interval."""
    d = np.asarray(other, float) - np.asarray(base, float)
    n = d.size
    half = stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n) if n > 1 else math.inf
    return float(d.mean()), float(half)


def welch_interval(base: np.ndarray, other: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Difference of means other - base of two independent samples and Welch's half-width."""
    a, b = np.asarray(base, float), np.asarray(other, float)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return float(b.mean() - a.mean()), 0.0
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return float(b.mean() - a.mean()), float(stats.t.ppf(0.5 + level / 2, dof) * se)


def _values(runs: list[RunReplay]) -> dict[str, np.ndarray]:
    return dict(test_accuracy=np.array([r.accuracy("test") for r in runs]),
                dispatch_entropy=np.array([r.dispatch_entropy for r in runs]))


def replay_with(name: str, base: list[RunReplay], overrides: dict, engine: str = "auto") -> list[RunReplay]:
    """The runs of ``base`` (one cell's replay) again, each from its own start state, with ``overrides``."""
    nb = load_notebook(name)
    cell = next(c for c in nb["cells"] if c["cell"] == base[0].cell)
    out = []
    for r in base:
        stream = NotebookStream(nb["seed"])
        stream.set_state(r.state)
        out.append(replay_run(stream, nb, cell, r.run, engine=engine, **overrides))
    return out


def independent_runs(name: str, cell_no: int, seeds: list[int], overrides: dict, engine: str = "auto"):
    """The cell's config (with ``overrides``) trained on moesim's own seed streams: (metric -> values)."""
    nb = load_notebook(name)
    cell = next(c for c in nb["cells"] if c["cell"] == cell_no)
    cfg = cell_config(nb, cell, **overrides)
    res = train(cfg, seeds, problem=make_problem(cfg), engine=engine, keep_params=False)
    return {m: np.asarray(res.summary[m], float) for m in METRICS}


def paired_ablation(name: str = "synthetic_demo_s1", cell: int = 18, quirks: list[str] | None = None,
                    engine: str = "auto", progress=None) -> tuple[dict, list[Effect]]:
    """Every quirk's effect on the runs of one loop cell: paired (common random numbers) and unpaired.

    Returns ``(values, effects)``: ``values[quirk][metric]`` the per-run values (``"official"``
    the replayed runs themselves, ``"<quirk> (independent)"`` the unpaired samples).
    """
    quirks = list(QUIRKS) if quirks is None else quirks
    unknown = sorted(set(quirks) - set(QUIRKS))
    if unknown:
        raise ValueError(f"quirks={unknown} are not known; choose from {', '.join(QUIRKS)}")
    base = replay(name, [cell])
    n = len(base)
    values = {"official": _values(base)}
    values["official (independent)"] = independent_runs(name, cell, list(range(n)), {}, engine)
    effects = []
    for q in quirks:
        values[q] = _values(replay_with(name, base, QUIRKS[q], engine))
        values[f"{q} (independent)"] = independent_runs(name, cell, list(range(n, 2 * n)), QUIRKS[q], engine)
        for m in METRICS:
            pm, ph = paired_interval(values["official"][m], values[q][m])
            um, uh = welch_interval(values["official (independent)"][m], values[f"{q} (independent)"][m])
            effects.append(Effect(q, m, pm, ph, um, uh, n))
        if progress is not None:
            progress(q)
    return values, effects
