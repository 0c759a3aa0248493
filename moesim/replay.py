"""Replay the official demo notebooks' own runs, run by run, with one ``torch.Generator``.

Each official demo notebook (``synthetic_demo_s1.ipynb`` ... ``s4`` of github.com/uclaml/MoE;
see the appendix *The paper and its official code*) seeds torch once in its first cell, and every
random number its models use comes from torch's CPU generator, in program order: each
``nn.Conv1d``'s default initialization (weight, then bias), the router's tie-break noise drawn at
construction, and a fresh ``U[0,1)`` router-noise matrix on every forward pass, the evaluation
passes included (the model stays in training mode). The data come from the stored files
(``moesim.data`` regenerates them exactly, ``data_rng="official"``).

This module consumes one ``torch.Generator`` exactly that way. A notebook's *program* (which cells
build what, loop counts, epoch budgets, evaluation order) and what the notebook *printed* are data
(``moesim/replay_data/<notebook>.json``, extracted by ``benchmarks/extract_notebook_runs.py``);
the MoE runs are trained by ``moesim.training.train`` with the replayed initialization and noise
(its ``init`` and ``noise`` arguments), and ``compare`` puts every replayed number beside the
printed one at the printed digits.

``moesim replay synthetic_demo_s1`` (``moesim.commands.replay``) prints the comparison and exits 1 on a
mismatch. It trains with ``engine="official-ops"`` (``moesim.engines.official_ops``: the official code's
own operations in its order, so float32 rounds as in the official code; slow); the library functions
default to moesim's fast engines, whose different summation order can move a sample on a rounding edge.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import data as data_mod
from .config import Config, preset
from .model import Params, generator
from .training import make_problem, train

DATA_DIR = Path(__file__).parent / "replay_data"


def notebooks() -> list[str]:
    """Names of the notebooks whose program and printed outputs are stored."""
    return sorted(p.stem for p in DATA_DIR.glob("*.json"))


def load_notebook(name: str) -> dict:
    """The stored program and printed outputs of notebook ``name`` (e.g. ``synthetic_demo_s1``)."""
    path = DATA_DIR / f"{name}.json"
    if not path.exists():
        raise ValueError(f"notebook={name!r} is not stored; choose one of: {', '.join(notebooks())}")
    return json.loads(path.read_text())


# --- the stream -----------------------------------------------------------------------------

class NotebookStream:
    """torch's CPU generator as a notebook consumes it after ``torch.manual_seed(seed)``."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)

    def conv1d(self, out_channels: int, kernel: int, bias: bool = True):
        """The draws of ``nn.Conv1d(1, out_channels, kernel, kernel, bias=bias)``'s default
        initialization: weight (out, 1, kernel) by Kaiming-uniform (a = sqrt 5), then the bias
        U(+-1/sqrt(fan_in)); float32, as the module holds them."""
        w = torch.empty(out_channels, 1, kernel)
        torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=self.gen)
        if not bias:
            return w, None
        bound = 1 / math.sqrt(kernel)
        b = torch.empty(out_channels)
        torch.nn.init.uniform_(b, -bound, bound, generator=self.gen)
        return w, b

    def normal(self, std: float, shape) -> torch.Tensor:
        return torch.normal(0.0, std, size=tuple(shape), generator=self.gen)

    def rand(self, shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen)

    def get_state(self) -> torch.Tensor:
        return self.gen.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)


def moe_init(stream: NotebookStream, cfg: Config, program: dict) -> Params:
    """Build an official MoE's parameters from the stream, in the order its constructor draws.

    Router ``Conv1d(1, M, d, d, bias=False)`` (then zeroed: Theta^(0) = 0, Algorithm 1), the
    router's tie-break normal noise (data_num, M) with std 1e-5, then for each expert m a
    ``Conv1d(1, 2J', d, d)`` (weight, bias), both times ``init_uniform_scale`` (0.001). Channel j
    of expert m is filter w_mj; the first J' channels are logit 0 (a_j = -1), the last J' logit 1
    (a_j = +1). With ``cfg.init == "gaussian"`` (Algorithm 1's N(0, sigma_0^2)) the same uniform
    draws u are mapped to Gaussians by the inverse CDF, sigma_0 * sqrt(2) * erfinv(u / bound):
    common random numbers for the initialization too.
    """
    M, d = cfg.experts, cfg.patch_dim
    stream.conv1d(M, d, bias=False)  # the router's default init, multiplied by 0
    stream.normal(1e-5, (program["data_num"], M))  # break_tie_noise (used only without noise)
    Ws, bs = [], []
    for _ in range(M):  # one module per expert, in construction order
        w, b = stream.conv1d(cfg.filters, d)
        Ws.append(w[:, 0])
        bs.append(b)
    W, b = torch.stack(Ws)[None], torch.stack(bs)[None]
    if cfg.init == "gaussian":
        bound, tiny = 1 / math.sqrt(d), 1e-12
        W, b = [(cfg.init_sigma * math.sqrt(2) * torch.erfinv((t.double() / bound).clamp(-1 + tiny, 1 - tiny))).float()
                for t in (W, b)]
    else:
        W, b = W * cfg.init_uniform_scale, b * cfg.init_uniform_scale
    return Params(W, b if cfg.expert_bias else None, torch.zeros(1, d, M))


class StreamNoise:
    """A ``train`` noise source that draws the notebook's router noise from the stream.

    Each training forward pass draws ``rand(data_num, M)``; the first final evaluation draws one
    matrix for each of ``evals`` in the notebook's order (e.g. training set, then test set), so
    the stream advances exactly as the notebook's. Snapshots (moesim's diagnostics, not in the
    notebook) use a separate generator and leave the stream alone.
    """

    def __init__(self, stream: NotebookStream, cfg: Config, program: dict, evals: list[str], dtype):
        self.stream, self.cfg, self.evals, self.dtype = stream, cfg, evals, dtype
        self.shape = (program["data_num"], cfg.experts)
        self.side = generator(0, "replay-snapshot", "cpu")
        self.final: dict[str, torch.Tensor] | None = None

    def draw(self) -> torch.Tensor:
        return self._scaled(self.stream.rand(self.shape))

    def _scaled(self, r: torch.Tensor) -> torch.Tensor:
        r = r.to(self.dtype)[None]
        return r * self.cfg.noise_scale if self.cfg.noise_scale != 1 else r

    def eval(self, split: str) -> torch.Tensor | None:
        if split in self.evals and self.final is None:
            self.final = {e: self._scaled(self.stream.rand(self.shape)) for e in self.evals}
        if not self.cfg.test_noise:
            return None
        if split in self.evals:
            return self.final[split]
        return self._scaled(torch.rand(*self.shape, generator=self.side))

    def close(self) -> None:
        pass


# --- replaying ------------------------------------------------------------------------------

@dataclass
class RunReplay:
    """One MoE run as moesim replayed it (counts are training-set routing counts)."""

    cell: int
    run: int
    forwards: int  # training forward passes, the one at which early stopping fires included
    stopped_early: bool
    initial_counts: list[int] | None  # routing of the forward pass before training, if any
    final_counts: list[int]  # routing of the last training forward pass, per expert
    cluster_counts: list[list[int]]  # the same, per cluster (K, M)
    dispatch_entropy: float  # of the last training forward pass (Eq. 6.1)
    correct: dict[str, int]  # correctly classified samples of each evaluation pass
    n_eval: dict[str, int]
    losses: list[list[float]]  # [epoch (1-based), loss] of the lines a verbose run prints
    state: torch.Tensor = field(repr=False, default=None)  # the stream's state at the run's start

    def accuracy(self, split: str) -> float:
        """Accuracy in percent as the notebook computes it (100 * correct / n)."""
        return 100 * self.correct[split] / self.n_eval[split]


def cell_config(notebook: dict, cell: dict, **overrides) -> Config:
    """The official-code config of one MoE cell of ``notebook`` (its setting, model, epochs)."""
    model = "moe-nonlinear" if cell["activation"] == "cubic" else "moe-linear"
    values = dict(n_filters=cell["out_channels"], n_experts=notebook["experts"], n_steps=cell["epochs"],
                  n_train=notebook["data_num"], n_test=notebook["data_num"], record_every=10**6)
    values.update(overrides)
    return preset(f"official-{notebook['setting']}", model, **values)


@lru_cache(maxsize=4)
def _data(setting: str, n: int, scale: float):
    cfg = preset(f"official-{setting}", "moe-nonlinear", n_train=n, n_test=n, data_scale=scale)
    return data_mod.generate(cfg)


def replay_run(stream: NotebookStream, notebook: dict, cell: dict, run: int, *, engine: str = "auto",
               problem=None, **overrides) -> RunReplay:
    """Replay one run of an MoE cell from the stream's current state (which it advances)."""
    cfg = cell_config(notebook, cell, **overrides)
    state = stream.get_state()
    init = moe_init(stream, cfg, notebook)
    M = cfg.experts
    if problem is None:
        problem = make_problem(cfg, _data(notebook["setting"], notebook["data_num"], cfg.data_scale))
    prob = problem
    initial = None
    if cell["pre_forward"]:  # the untrained router is zero: the routing is the noise's argmax
        r = stream.rand((notebook["data_num"], M))
        initial = torch.bincount(r.argmax(-1), minlength=M).tolist()
    noise = StreamNoise(stream, cfg, notebook, cell["evals"], prob.x.dtype)
    res = train(cfg, [0], problem=prob, init=init, noise=noise, engine=engine, keep_params=False)
    forwards = res.history["loss"].shape[0]
    counts = res.history["dispatch_counts"][forwards - 1, 0]  # (K, M)
    stopped = bool(res.summary["stopped_early"][0])
    losses = [[e + 1, float(res.history["loss"][e, 0])] for e in range(0, forwards, 100)
              if not (stopped and e == forwards - 1)]
    n_eval = dict(train=prob.x.shape[0], test=prob.x_test.shape[0])
    correct = {s: int(round(float(res.summary[f"{s}_accuracy"][0]) * n_eval[s] / 100)) for s in ("train", "test")}
    return RunReplay(cell=cell["cell"], run=run, forwards=forwards, stopped_early=stopped,
                     initial_counts=initial, final_counts=counts.sum(0).tolist(), cluster_counts=counts.tolist(),
                     dispatch_entropy=float(res.summary["dispatch_entropy"][0]), correct=correct, n_eval=n_eval,
                     losses=losses if cell["verbose"] else [], state=state)


def replay(name: str, cells: list[int] | None = None, runs: dict[int, int] | None = None, *,
           engine: str = "auto", progress=None, states: dict | None = None, **overrides) -> list[RunReplay]:
    """Replay the MoE runs of notebook ``name``.

    Args:
        cells: the MoE cells to replay (default: all). The stream still passes through every
            earlier cell, so the cells before the last one asked for are trained too.
        runs: at most this many runs of a cell (``{18: 2}``: its first two); the stream stops
            after the last run replayed.
        states: ``{(cell, run): state}``: start those runs from these stream states instead
            (common random numbers: the same initialization and noise as another replay).
        overrides: config fields changed in every replayed run (an ablation).
    """
    nb = load_notebook(name)
    moe_cells = [c["cell"] for c in nb["cells"] if c["model"] == "moe"]
    wanted = moe_cells if cells is None else list(cells)
    bad = sorted(set(wanted) - set(moe_cells))
    if bad:
        raise ValueError(f"cells={bad} are not MoE cells of {name}; choose from {moe_cells}")
    runs = runs or {}
    last = max(wanted)
    stream = NotebookStream(nb["seed"])
    out = []
    for cell in nb["cells"]:
        if cell["cell"] > last:
            break
        if cell["model"] == "single":  # Adam training draws nothing: only the construction counts
            stream.conv1d(cell["out_channels"], nb["patch_len"])
            continue
        n_runs = min(cell["runs"], runs.get(cell["cell"], cell["runs"])) if cell["cell"] == last else cell["runs"]
        for i in range(n_runs):
            if states is not None and (cell["cell"], i) in states:
                stream.set_state(states[(cell["cell"], i)])
            rr = replay_run(stream, nb, cell, i, engine=engine, **overrides)
            if cell["cell"] in wanted:
                out.append(rr)
            if progress is not None:
                progress(rr)
    return out


# --- comparison -----------------------------------------------------------------------------

@dataclass
class Check:
    """One printed number beside its replayed value."""

    cell: int
    what: str
    printed: object
    replayed: object
    n_samples: int | None = None  # for an accuracy of one run: the samples it is computed on

    @property
    def ok(self) -> bool:
        return self.printed == self.replayed

    @property
    def samples_off(self) -> int | None:
        """For an accuracy of one run: how many samples' predictions the difference amounts to."""
        if self.n_samples is None:
            return None
        return round(abs(self.printed - self.replayed) * self.n_samples / 100)


def _round(v: float, digits: int) -> float:
    return float(f"{v:.{digits}f}")


def compare(name: str, replays: list[RunReplay]) -> list[Check]:
    """Every number the notebook printed for the replayed cells beside moesim's, at the printed digits."""
    nb = load_notebook(name)
    by_cell: dict[int, list[RunReplay]] = {}
    for r in replays:
        by_cell.setdefault(r.cell, []).append(r)
    checks = []
    for cell in nb["cells"]:
        rs = by_cell.get(cell["cell"])
        if cell["model"] != "moe" or not rs:
            continue
        p, c = cell["printed"], cell["cell"]
        if cell["runs"] == 1:
            r = rs[0]
            if p.get("initial_counts") is not None:
                checks.append(Check(c, "routing before training", p["initial_counts"], r.initial_counts))
            if "losses" in p:
                checks.append(Check(c, "printed loss lines", [[e, v] for e, v in p["losses"]],
                                    [[e, _round(v, 3)] for e, v in r.losses]))
            checks.append(Check(c, "routing after training", p["final_counts"], r.final_counts))
            for split, acc in p["accuracy"].items():
                checks.append(Check(c, f"{split} accuracy (%)", acc, _round(r.accuracy(split), 4), r.n_eval[split]))
            checks.append(Check(c, "routing per cluster", p["cluster_counts"], r.cluster_counts))
            continue
        for i, r in enumerate(rs):
            checks.append(Check(c, f"run {i + 1} test accuracy (%)", p["test_accuracy"][i],
                                _round(r.accuracy("test"), 4), r.n_eval["test"]))
        if len(rs) == cell["runs"]:
            acc = np.array([r.accuracy("test") for r in rs])
            ent = np.array([r.dispatch_entropy for r in rs], dtype=np.float32)
            checks += [Check(c, "mean test accuracy", p["mean_accuracy"], round(float(acc.mean()), 2)),
                       Check(c, "std test accuracy", p["std_accuracy"], round(float(acc.std()), 2)),
                       Check(c, "mean dispatch entropy", round(p["mean_entropy"], 3), round(float(ent.mean()), 3)),
                       Check(c, "std dispatch entropy", round(p["std_entropy"], 3), round(float(ent.std()), 3))]
    return checks
