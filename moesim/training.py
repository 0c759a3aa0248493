"""Full-batch training (Algorithm 1) of S independent runs as one batched tensor program.

Each step, for every run: draw fresh router noise, route each sample to one expert (noisy top-1),
evaluate the loss of Algorithm 1, take a normalized-GD step for every expert and a GD step for the
router. Single models (no router) take normalized-GD, GD or Adam steps. Every run has its own
``torch.Generator`` streams (init, router noise, evaluation noise) derived from its seed, so a run
gives the same numbers alone or batched with others.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import data as data_mod
from . import metrics
from . import fused
from . import official_ops
from . import step as step_mod
from .config import ENGINES, Config, default_lr_single
from .model import (
    Params, Workspace, expert_outputs_dense, expert_outputs_routed, gate_values, generator, init_params,
    load_balancing_loss, loss_from_margin, router_logits, second_layer,
)

#: The official code's MoE early stopping (book/official_code.md, 'The official early-stopping rule'):
#: tolerance and loss floor.
EARLY_STOP_TOLERANCE = 0.02
EARLY_STOP_FLOOR = 0.314
#: Official single models: the tolerance rule applies only after this epoch.
SINGLE_STOP_AFTER = 500


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; ``result`` holds the trajectory up to ``step``."""

    def __init__(self, step: int, seeds: list[int], result: "RunResult"):
        super().__init__(f"training diverged at step {step}: non-finite loss for seed(s) {seeds}; "
                         f"the trajectory before that step is kept in .result")
        self.step, self.seeds, self.result = step, seeds, result


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C, or a signal turned into ``KeyboardInterrupt``).

    ``result`` holds what was trained so far: the history of the ``steps_done`` completed
    updates, the snapshots taken, the parameters after them, an empty summary, and
    ``result.info["incomplete"] = True``. A ``KeyboardInterrupt``, so code that does not know it
    still stops.
    """

    def __init__(self, steps_done: int, result: "RunResult"):
        super().__init__(f"training interrupted after {steps_done} completed step(s)")
        self.steps_done, self.result = steps_done, result


@dataclass
class Problem:
    """Training and test data on the device, in the layout the kernels want."""

    x: torch.Tensor  # (n, P, d)
    x_sum: torch.Tensor  # (n, d) sum over patches, the router's input
    y: torch.Tensor  # (n,) +-1 as floats
    cluster: torch.Tensor  # (n,)
    x_test: torch.Tensor
    x_sum_test: torch.Tensor
    y_test: torch.Tensor
    cluster_test: torch.Tensor
    features: torch.Tensor  # (K, d) unit v_k
    centers: torch.Tensor  # (K, d) unit c_k

    @classmethod
    def build(cls, train: data_mod.Dataset, test: data_mod.Dataset, device, dtype) -> "Problem":
        tr, te = train.to(device, dtype), test.to(device, dtype)
        return cls(tr.x, tr.x.sum(1), tr.y.to(dtype), tr.cluster, te.x, te.x.sum(1), te.y.to(dtype), te.cluster,
                   tr.features, tr.centers)


@dataclass
class RunResult:
    """Everything a run produced, on the CPU.

    ``history`` has one row per training step (shape (T, S, ...)); ``snapshots`` one row per
    recorded step (``snapshots["step"]``); ``summary`` one value per run (seed). With the official
    early stopping (``stopping="official"``), a seed that stopped has NaN in the float arrays of
    ``history`` from then on (``stopped_at``): average over seeds with ``np.nanmean``.
    """

    config: Config
    seeds: list[int]
    history: dict[str, np.ndarray]
    snapshots: dict[str, np.ndarray]
    summary: dict[str, np.ndarray]
    params: Params | None = None
    wall_time: float = 0.0
    info: dict = field(default_factory=dict)

    def mean_std(self, key: str) -> tuple[float, float]:
        """Mean and population std (ddof = 0, as the paper) over seeds of a summary value."""
        v = np.asarray(self.summary[key], dtype=np.float64)
        return float(v.mean()), float(v.std())

    def stopped_at(self) -> np.ndarray | None:
        """Per seed, the first step whose ``history`` row is NaN (the run had stopped), or T if none.

        Only runs with early stopping (``stopping="official"``) end before T; the float arrays of
        ``history`` are NaN from that step on, so average over seeds with ``np.nanmean``.
        """
        floats = [v for v in self.history.values() if np.asarray(v).dtype.kind == "f" and np.ndim(v) >= 2]
        if not floats:
            return None
        finite = np.isfinite(np.asarray(floats[0])).reshape(len(floats[0]), len(self.seeds), -1).all(-1)
        return np.where(finite.all(0), len(finite), np.argmin(finite, axis=0))

    def __repr__(self) -> str:
        """A few lines: model, sizes, preset, seeds, and the shapes of ``history``/``snapshots``/``summary``."""
        c = self.config
        seeds = self.seeds if len(self.seeds) <= 6 else f"[{self.seeds[0]}, ..., {self.seeds[-1]}]"
        model = (f"moe, M={c.n_experts}" if c.architecture == "moe" else "single") + f", activation={c.activation!r}"
        lines = [f"RunResult({model}, preset {_preset_of(c)}, K={c.n_clusters}, P={c.n_patches}, "
                 f"d={c.patch_dim}, n_train={c.n_train}, {len(self.seeds)} seeds {seeds}, "
                 f"wall_time={self.wall_time:.1f} s"]
        for name, group in (("history", self.history), ("snapshots", self.snapshots), ("summary", self.summary)):
            lines.append(f"  {name}: " + _shapes(group))
        stop = self.stopped_at()
        if stop is not None and (stop < len(next(iter(self.history.values())))).any():
            early = [f"{s}@{int(t)}" for s, t in zip(self.seeds, stop) if t < len(next(iter(self.history.values())))]
            shown = ", ".join(early[:6]) + (", ..." if len(early) > 6 else "")
            lines.append(f"  stopped early (seed@step; history is NaN from there on, use np.nanmean): {shown}")
        return "\n".join(lines) + ")"


def _preset_of(cfg: Config) -> str:
    """The ``{paper|official}-{setting}`` preset whose switches and data ranges ``cfg`` has, or 'custom'.

    Sizes (n, T) are not compared: the repr prints them beside the preset.
    """
    from .config import SEMANTICS, SETTINGS

    def matches(values: dict) -> bool:
        return all(getattr(cfg, k) == (tuple(v) if isinstance(v, list) else v) for k, v in values.items()
                   if k not in ("n_steps", "n_steps_single"))

    sem = next((s for s, v in SEMANTICS.items() if matches(v)), None)
    setting = next((s for s, v in SETTINGS.items() if matches(v)), None)
    return f"{sem}-{setting}" if sem and setting else "custom"


def _shapes(group: dict) -> str:
    """``key (shape)``, keys of the same shape listed together: ``loss, train_accuracy (501, 10)``."""
    by_shape: dict[tuple, list[str]] = {}
    for k, v in group.items():
        by_shape.setdefault(tuple(np.shape(v)), []).append(k)
    return "; ".join(f"{', '.join(keys)} {shape}" for shape, keys in by_shape.items()) or "(empty)"


def _dtype(cfg: Config) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]


def check_device(device: str, name: str = "device") -> None:
    """Fail clearly (``ConfigError``) when ``device`` is not a device name, or names a GPU that is not there."""
    from .config import check_device_name

    check_device_name(device, name)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} is not available: torch sees no CUDA GPU; use device='cpu'")
        idx = int(device.split(":")[1]) if ":" in device else 0
        if idx >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} is not available: {torch.cuda.device_count()} CUDA device(s)")


class _Noise:
    """Router noise r of each run: fresh U[0,1] each step, one fixed draw, or a 1e-5 tie-break.

    With ``prefetch`` (CPU, fresh noise), each draw is written into one of two reused buffers, and
    the next step's draw is filled on a background thread while the current step computes (the
    generators are used in the same order, so the numbers are those of ``torch.rand``); a draw is
    valid until the next one. ``close()`` waits for a pending fill.
    """

    def __init__(self, cfg: Config, seeds: list[int], n: int, M: int, device, dtype, stream: str,
                 prefetch: bool = False):
        self.cfg, self.n, self.M, self.dtype = cfg, n, M, dtype
        self.gens = [generator(s, stream, device) for s in seeds]
        self.device = device
        self.fixed = None
        if cfg.router_noise == "fixed":
            self.fixed = self._fresh()
        elif cfg.router_noise == "none":
            self.fixed = torch.stack([torch.randn(n, M, generator=g, device=device, dtype=dtype)
                                      for g in self.gens]) * 1e-5
        self.pool = self.pending = None
        if prefetch and self.fixed is None and torch.device(device).type == "cpu":
            self.buffers = [torch.empty(len(seeds), n, M, device=device, dtype=dtype) for _ in range(2)]
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moesim-noise")

    def _uniform(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """U[0,1] for each run into ``out`` (default: a new tensor): what torch.rand(n, M,
        generator=g) draws for each run's generator g."""
        out = torch.empty(len(self.gens), self.n, self.M, device=self.device, dtype=self.dtype) if out is None else out
        for row, g in zip(out, self.gens):
            row.uniform_(generator=g)
        return out

    def _fresh(self, out: torch.Tensor | None = None) -> torch.Tensor:
        r = self._uniform(out)
        return r.mul_(self.cfg.noise_scale) if self.cfg.noise_scale != 1 else r

    def draw(self) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed
        if self.pool is None:
            return self._fresh()
        cur = self.pending.result() if self.pending is not None else self._fresh(self.buffers[0])
        nxt = self.buffers[1] if cur is self.buffers[0] else self.buffers[0]
        self.pending = self.pool.submit(self._fresh, nxt)
        return cur

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = self.pending = None


class SeedNoise:
    """The default noise source of ``train``: every run's router noise from its own seed's streams.

    A noise source supplies the router noise r of Algorithm 1 (Section 3's noisy top-1 routing):
    ``draw()`` for each training forward pass, in order, and ``eval(split)`` for an evaluation
    forward pass (``"snapshot"``, then ``"test"`` and ``"train"`` for the final summary; ``None``
    when the config evaluates without noise). ``moesim.replay`` supplies another one (one stream
    shared by consecutive runs, as the official notebooks draw it).
    """

    def __init__(self, cfg: Config, seeds: list[int], n: int, n_test: int, device, dtype):
        M = cfg.experts
        self.cfg, self.seeds, self.n, self.dtype = cfg, seeds, n, dtype
        self.train = _Noise(cfg, seeds, n, M, device, dtype, "router-noise", prefetch=True)
        self.test = None
        if cfg.test_noise:
            # the entropy notebooks add their one fixed noise matrix to the test rows too (row by row)
            same_rows = cfg.router_noise == "fixed" and n_test == n
            self.test = self.train if same_rows else _Noise(cfg, seeds, n_test, M, device, dtype, "eval-noise")

    def draw(self) -> torch.Tensor:
        return self.train.draw()

    def eval(self, split: str) -> torch.Tensor | None:
        if self.test is None:
            return None
        if split != "train":
            return self.test.draw()
        dev = self.cfg.device
        g = [generator(s, "eval-noise-train", dev) for s in self.seeds]
        return torch.stack([torch.rand(self.n, self.cfg.experts, generator=gi, device=dev, dtype=self.dtype)
                            for gi in g]) * self.cfg.noise_scale

    def close(self) -> None:
        self.train.close()


def _normalized(g: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    norm = norm.reshape(norm.shape + (1,) * (g.dim() - norm.dim()))
    return torch.where(norm > 0, g / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(g))


def expert_step(cfg: Config, gW: torch.Tensor, gb: torch.Tensor | None, lr: float):
    """The expert update of Algorithm 1: -lr * grad / ||grad|| for each expert (S, M).

    ``frobenius``: joint norm of all of the expert's gradients (paper). ``sum_of_norms``:
    ||g_W||_F + ||g_b|| (official demo notebooks). ``per_tensor``: each tensor to norm lr
    (official entropy notebooks). ``none``: plain GD. An expert with zero gradient (no sample
    routed to it) does not move.
    """
    nW = gW.flatten(2).norm(dim=-1)  # (S, M)
    nb = gb.norm(dim=-1) if gb is not None else torch.zeros_like(nW)
    if cfg.normalization == "none":
        return -lr * gW, (None if gb is None else -lr * gb)
    if cfg.normalization == "per_tensor":
        return -lr * _normalized(gW, nW), (None if gb is None else -lr * _normalized(gb, nb))
    den = torch.sqrt(nW**2 + nb**2) if cfg.normalization == "frobenius" else nW + nb
    return -lr * _normalized(gW, den), (None if gb is None else -lr * _normalized(gb, den))


class _Adam:
    """torch.optim.Adam (L2 weight decay, as the official single models) with a per-run mask."""

    def __init__(self, tensors: list[torch.Tensor], lr: float, weight_decay: float,
                 betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.wd, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(t) for t in tensors]
        self.v = [torch.zeros_like(t) for t in tensors]
        self.t = 0

    def steps(self, tensors, grads) -> list[torch.Tensor]:
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        out = []
        for p, g, m, v in zip(tensors, grads, self.m, self.v):
            g = g + self.wd * p
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            out.append(-(self.lr / bc1) * m / (v.sqrt() / math.sqrt(bc2) + self.eps))
        return out


def _stop_rule(cfg: Config, step: int, loss: torch.Tensor, best: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official early-stopping rules; returns (stop now, new running minimum)."""
    if cfg.architecture == "moe":
        improved = loss <= best
        stop = ~improved & ((loss > best + EARLY_STOP_TOLERANCE) | (loss <= EARLY_STOP_FLOOR))
    else:
        improved = loss < best
        stop = ~improved & (loss > best + EARLY_STOP_TOLERANCE) & (step > SINGLE_STOP_AFTER)
    return stop, torch.where(improved, loss, best)


def _choose_engine(cfg: Config, engine: str, x: torch.Tensor) -> str:
    """The engine that runs: ``auto`` resolved, and ``fused``/``eager`` checked against ``cfg``."""
    if cfg.load_balancing > 0:
        if engine in ("fused", "eager"):
            raise ValueError(f"engine={engine!r} cannot train load_balancing={cfg.load_balancing} > 0; "
                             "use engine='autograd' or 'auto'")
        return "autograd"
    if engine == "auto":
        return "fused" if fused.available(cfg, x) is None else "eager"
    if engine == "official-ops" and (reason := official_ops.unavailable(cfg)) is not None:
        raise ValueError(f"engine='official-ops' cannot train this config: {reason}")
    if engine == "fused":
        reason = fused.available(cfg, x)
        if reason is not None:
            raise ValueError(f"engine='fused' cannot run here: {reason}; use engine='eager' or 'auto'")
    return engine


def make_problem(cfg: Config, data=None) -> Problem:
    train_set, test_set = data if data is not None else data_mod.generate(cfg)
    return Problem.build(train_set, test_set, cfg.device, _dtype(cfg))


def forward_train(cfg: Config, params: Params, prob: Problem, noise: torch.Tensor, a: torch.Tensor,
                  buffer: Workspace | None = None):
    """Loss of Algorithm 1 at the current parameters: (loss per run (S,), margins (S, n), expert (S, n))."""
    if cfg.architecture == "single":
        f = expert_outputs_dense(cfg, params, prob.x, a)[:, 0]
        margin = prob.y * f
        expert = torch.zeros_like(margin, dtype=torch.long)
        return torch.nn.functional.softplus(-margin).mean(1), margin, expert
    h = router_logits(params, prob.x_sum)
    noisy = h + noise
    expert = noisy.argmax(-1)
    gate = gate_values(cfg, h, noisy, expert)
    f = expert_outputs_routed(cfg, params, prob.x, a, expert, buffer=buffer)
    margin = prob.y * gate * f
    loss = loss_from_margin(cfg, margin).mean(1)
    if cfg.load_balancing > 0:
        loss = loss + cfg.load_balancing * load_balancing_loss(h, expert, cfg.n_experts)
    return loss, margin, expert


def _fused_ok(cfg: Config, x: torch.Tensor, engine: str) -> bool:
    return engine in ("auto", "fused") and fused.available(cfg, x) is None


@torch.no_grad()
def evaluate(cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor, y: torch.Tensor,
             noise: torch.Tensor | None, a: torch.Tensor, chunk_elements: int = 2**23, engine: str = "auto"):
    """Predictions of the trained layer: (correct (S, n) bool, routed expert (S, n)).

    Routing uses the clean logits h, plus ``noise`` when the config evaluates with noise. With
    ``engine`` "auto" or "fused" the fused kernel computes it where it can (one pass, no large
    temporaries); otherwise samples are evaluated in chunks whose largest temporary
    (S x samples x P x max(d, J) values) stays near ``chunk_elements``: memory does not grow with n.
    """
    S, _, J, d = params.W.shape
    n, P, _ = x.shape
    if engine == "official-ops":
        return official_ops.evaluate(cfg, params, x, y, noise)
    if _fused_ok(cfg, x, engine):
        if cfg.architecture == "single":
            f = fused.expert_outputs(cfg, params, x, a)[:, 0]
            return y * f > 0, torch.zeros(S, n, dtype=torch.long, device=x.device)
        f, gate, expert = fused.routed_outputs(cfg, params, x, x_sum, noise, a)
        return y * gate * f > 0, expert
    step = max(1, chunk_elements // (S * P * max(d, J)))
    parts = [_evaluate_chunk(cfg, params, x[i:i + step], x_sum[i:i + step], y[i:i + step],
                             None if noise is None else noise[:, i:i + step], a) for i in range(0, n, step)]
    if not parts:
        return torch.zeros(S, 0, dtype=torch.bool, device=x.device), torch.zeros(S, 0, dtype=torch.long, device=x.device)
    return torch.cat([c for c, _ in parts], 1), torch.cat([e for _, e in parts], 1)


def _evaluate_chunk(cfg: Config, params: Params, x, x_sum, y, noise, a):
    S = params.W.shape[0]
    if cfg.architecture == "single":
        f = expert_outputs_dense(cfg, params, x, a)[:, 0]
        return y * f > 0, torch.zeros(S, x.shape[0], dtype=torch.long, device=x.device)
    h = router_logits(params, x_sum)
    noisy = h + noise if noise is not None else h
    expert = noisy.argmax(-1)
    gate = gate_values(cfg, h, noisy, expert)
    f = expert_outputs_routed(cfg, params, x, a, expert)
    return y * gate * f > 0, expert


@torch.no_grad()
def expert_cluster_accuracy(cfg: Config, params: Params, x: torch.Tensor, y: torch.Tensor, cluster: torch.Tensor,
                            a: torch.Tensor, chunk_elements: int = 2**24, engine: str = "auto") -> torch.Tensor:
    """Accuracy of each expert alone, sign(f_m(x)), on each cluster: (S, M, K)."""
    S, M, J, _ = params.W.shape
    K = int(cluster.max().item()) + 1 if cluster.numel() else 1
    n, P, _ = x.shape
    if _fused_ok(cfg, x, engine):
        correct = fused.expert_outputs(cfg, params, x, a) * y > 0  # (S, M, n)
    else:
        step = max(1, chunk_elements // max(1, S * M * J * P))
        correct = torch.cat([(expert_outputs_dense(cfg, params, x[i:i + step], a) * y[i:i + step]) > 0
                             for i in range(0, n, step)], dim=2)  # (S, M, n)
    return metrics.per_cluster_accuracy(correct, cluster, K).to(torch.float32)


def train(cfg: Config, seeds: list[int] | int = 1, *, data=None, problem: Problem | None = None,
          progress: Callable[[int, int], None] | None = None, keep_params: bool = True,
          engine: str = "auto", check_memory: bool = True, init: Params | None = None,
          noise=None) -> RunResult:
    """Train ``len(seeds)`` independent runs of ``cfg`` as one batched program.

    Args:
        cfg: the configuration (validated again here).
        seeds: model seeds (init and noise streams); an int ``S`` means ``range(S)``.
        data: ``(train, test)`` datasets; default ``moesim.data.generate(cfg)``.
        problem: the data already on the device (overrides ``data``).
        progress: called as ``progress(step, total)`` after each step.
        keep_params: return the final parameters in ``result.params``.
        engine: how a step's gradients are computed. ``"fused"``: the fused C kernel of
            ``moesim.fused`` (CPU, float32, power activations; an error where it cannot run);
            ``"eager"``: hand-written gradients in torch operations (``moesim.step``), any device;
            ``"autograd"``: the reference, autograd through ``forward_train``;
            ``"official-ops"``: the official code's operations in its order, run by run and
            expert by expert (``moesim.official_ops``; bit-level replay, slow); ``"auto"``
            (default): ``"fused"`` where it can run, else ``"eager"``. All compute the same
            numbers up to float rounding (tested); ``result.engine`` says which one ran. The
            load-balancing loss always uses autograd.
        check_memory: before allocating, compare ``moesim.memory.estimate`` with the available
            memory and raise ``MemoryCheckError`` (a ``ConfigError``) when it does not fit.
        init: the initial parameters W^(0), b^(0), Theta^(0) of the S runs (default:
            ``init_params(cfg, seeds)``); shapes (S, M, J, d), (S, M, J) or None, (S, d, M).
        noise: where the router noise comes from (default: ``SeedNoise``, each run's own streams);
            any object with ``draw()``, ``eval(split)`` and ``close()`` as ``SeedNoise``.

    Raises:
        DivergenceError: the loss became NaN or inf; ``err.result`` keeps the steps before it.
        TrainingInterrupted: Ctrl-C (``KeyboardInterrupt``) during the steps; ``err.result``
            keeps the completed steps, marked ``info["incomplete"]``.
    """
    cfg.validate()
    check_device(cfg.device)
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not allowed; choose one of {', '.join(ENGINES)}")
    if check_memory:
        from . import memory

        n_seeds = seeds if isinstance(seeds, int) and not isinstance(seeds, bool) else len(seeds)
        memory.check(cfg, n_seeds, engine, option="check_memory=False", generate=data is None and problem is None)
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} contain duplicates")
    t0 = time.perf_counter()
    dev, dt = cfg.device, _dtype(cfg)
    prob = problem if problem is not None else make_problem(cfg, data)
    S, M, K = len(seeds), cfg.experts, cfg.n_clusters
    n, n_test = prob.x.shape[0], prob.x_test.shape[0]
    T = cfg.steps
    a = second_layer(cfg, cfg.filters, dt, dev)
    params = init_params(cfg, seeds, device=dev, dtype=dt) if init is None else _given_init(cfg, init, S, dev, dt)
    tensors = params.tensors()
    is_moe = cfg.architecture == "moe"
    engine = _choose_engine(cfg, engine, prob.x)
    use_fast = engine in ("fused", "eager", "official-ops")
    for t in tensors:
        t.requires_grad_(not use_fast)
    if is_moe and noise is None:
        noise = SeedNoise(cfg, seeds, n, n_test, dev, dt)
    elif not is_moe:
        noise = None
    adam = None
    if not is_moe and cfg.single_optimizer == "adam":
        adam = _Adam(tensors, default_lr_single(cfg), cfg.weight_decay_single)

    loss_hist = torch.full((T, S), float("nan"), device=dev, dtype=dt)
    acc_hist = torch.full((T, S), float("nan"), device=dev, dtype=dt)
    count_hist = torch.zeros((T, S, K, M), device=dev, dtype=torch.long)
    active = torch.ones(S, dtype=torch.bool, device=dev)
    stopped = torch.zeros(S, dtype=torch.bool, device=dev)
    last_step = torch.full((S,), T - 1, dtype=torch.long, device=dev)  # last forward pass of each run
    first_bad = torch.full((S,), T, dtype=torch.long, device=dev)  # first non-finite loss
    best = torch.full((S,), float("inf"), device=dev, dtype=dt)
    snaps: list[dict[str, torch.Tensor]] = []
    buffer = Workspace()  # the step's internal buffers, reused from step to step
    kernels = {"fused": fused, "official-ops": official_ops}.get(engine, step_mod)  # (unless autograd)
    update = official_ops.apply_update if engine == "official-ops" else _apply_update

    def snapshot(step: int) -> None:
        p = params.detach()
        correct, _ = evaluate(cfg, p, prob.x_test, prob.x_sum_test, prob.y_test,
                              noise.eval("snapshot") if noise is not None else None, a, engine=engine)
        snaps.append(dict(
            step=torch.tensor(step),
            test_accuracy=100 * correct.to(torch.float64).mean(1),
            router_center=metrics.router_alignment(p.theta, prob.centers),
            router_feature=metrics.router_alignment(p.theta, prob.features),
            expert_feature=metrics.signed_filter_alignment(p.W, a, prob.features),
            expert_center=metrics.signed_filter_alignment(p.W, a, prob.centers),
            expert_cluster_accuracy=expert_cluster_accuracy(cfg, p, prob.x_test, prob.y_test, prob.cluster_test, a,
                                                            engine=engine),
        ))

    def result(upto: int) -> RunResult:
        hist = dict(loss=loss_hist[:upto], train_accuracy=acc_hist[:upto], dispatch_counts=count_hist[:upto])
        hist = {k: v.detach().cpu().numpy() for k, v in hist.items()}
        ran = np.arange(upto)[:, None] <= last_step.cpu().numpy()[None, :]
        hist["dispatch_entropy"] = np.where(
            ran, metrics.dispatch_entropy(torch.from_numpy(hist["dispatch_counts"])).numpy(), np.nan)
        hist["load"] = hist["dispatch_counts"].sum(2)
        hist["train_accuracy"] = 100 * hist["train_accuracy"]
        sn = {k: torch.stack([s[k] for s in snaps]).cpu().numpy() for k in snaps[0]} if snaps else {}
        return RunResult(cfg, seeds, hist, sn, {}, wall_time=time.perf_counter() - t0, info=dict(engine=engine))

    def check_finite() -> None:
        if bool((first_bad < T).any()):
            step_bad = int(first_bad.min())
            bad_seeds = [seeds[i] for i in (first_bad == step_bad).nonzero()[:, 0].tolist()]
            raise DivergenceError(step_bad, bad_seeds, result(step_bad))

    step, updates = 0, 0
    try:
        for step in range(T):
            r = noise.draw() if noise is not None else None
            if use_fast:
                out = (kernels.moe_step(cfg, params, prob.x, prob.x_sum, prob.y, r, a, buffer) if is_moe
                       else kernels.single_step(cfg, params, prob.x, prob.y, a, buffer))
                loss, margin, expert, grads = out.loss, out.margin, out.expert, out.grads
            else:
                loss, margin, expert = forward_train(cfg, params, prob, r, a, buffer)
            with torch.no_grad():
                lv = loss.detach()
                loss_hist[step] = torch.where(active, lv, loss_hist[step])
                acc_hist[step] = torch.where(active, (margin > 0).to(dt).mean(1), acc_hist[step])
                count_hist[step] = metrics.dispatch_counts(expert, prob.cluster, K, M) * active[:, None, None]
                bad = active & ~torch.isfinite(lv)
                first_bad = torch.where(bad, step, first_bad)
                stop = bad
                if cfg.stopping == "official":
                    rule, best = _stop_rule(cfg, step, lv, best)
                    stop = stop | (rule & active)
                    stopped |= rule & active
                last_step = torch.where(stop, step, last_step)
                active = active & ~stop
            if step % cfg.record_every == 0:
                check_finite()
                snapshot(step)
            if not bool(active.any()):
                break
            updates = step + 1
            if not use_fast:
                grads = torch.autograd.grad(loss.sum(), tensors)
            with torch.no_grad():
                update(cfg, params, tensors, grads, active, adam)
            if progress is not None:
                progress(step + 1, T)
        check_finite()
    except KeyboardInterrupt as err:
        if isinstance(err, TrainingInterrupted):
            raise
        part = result(updates)
        part.info.update(incomplete=True, steps_done=updates)
        part.params = Params(params.W.detach().cpu().clone(),
                             None if params.b is None else params.b.detach().cpu().clone(),
                             params.theta.detach().cpu().clone())
        raise TrainingInterrupted(updates, part) from None
    finally:
        if noise is not None:
            noise.close()  # the background noise thread
    if not snaps or int(snaps[-1]["step"]) != updates:
        snapshot(updates)
    res = result(step + 1)
    _summarize(cfg, res, params, prob, last_step, stopped, a, noise, engine)
    if keep_params:
        res.params = Params(params.W.detach().cpu(), None if params.b is None else params.b.detach().cpu(),
                            params.theta.detach().cpu())
    res.wall_time = time.perf_counter() - t0
    return res


def _given_init(cfg: Config, init: Params, S: int, dev, dt) -> Params:
    """``init`` checked against the config and moved to the device (a copy: training writes into it)."""
    M, J, d = cfg.experts, cfg.filters, cfg.patch_dim
    want = dict(W=(S, M, J, d), b=(S, M, J) if cfg.expert_bias else None, theta=(S, d, M))
    for name, shape in want.items():
        t = getattr(init, name)
        got = None if t is None else tuple(t.shape)
        if (shape is None) != (t is None) or (t is not None and got != shape):
            raise ValueError(f"init.{name} has shape {got}; this config and {S} seed(s) need {shape}")
    return Params(init.W.to(dev, dt).clone(), None if init.b is None else init.b.to(dev, dt).clone(),
                  init.theta.to(dev, dt).clone())


def _apply_update(cfg: Config, params: Params, tensors, grads, active: torch.Tensor, adam: _Adam | None) -> None:
    mask = active.to(tensors[0].dtype)
    gW, gb = grads[0], (grads[1] if params.b is not None else None)
    g_theta = grads[-1]
    if adam is not None:
        steps = adam.steps(tensors[:-1], grads[:-1])
    elif cfg.architecture == "single" and cfg.single_optimizer == "gd":
        lr = default_lr_single(cfg)
        steps = [-lr * g for g in grads[:-1]]
    else:
        lr = cfg.lr_expert if cfg.architecture == "moe" else default_lr_single(cfg)
        dW, db = expert_step(cfg, gW, gb, lr)
        steps = [dW] + ([db] if db is not None else [])
    for p, d in zip(tensors[:-1], steps):
        p.add_(d * mask.view(-1, *([1] * (d.dim() - 1))))
    if cfg.architecture == "moe":
        params.theta.add_(-cfg.lr_router * g_theta * mask.view(-1, 1, 1))


def _summarize(cfg: Config, res: RunResult, params: Params, prob: Problem, last_step: torch.Tensor,
               stopped: torch.Tensor, a: torch.Tensor, noise, engine: str) -> None:
    S = len(res.seeds)
    p = params.detach()
    last = last_step.cpu().numpy()
    idx = np.arange(S)
    correct_test, expert_test = evaluate(cfg, p, prob.x_test, prob.x_sum_test, prob.y_test,
                                         noise.eval("test") if noise is not None else None, a, engine=engine)
    train_noise = noise.eval("train") if noise is not None else None
    correct_train, _ = evaluate(cfg, p, prob.x, prob.x_sum, prob.y, train_noise, a, engine=engine)
    test_counts = metrics.dispatch_counts(expert_test, prob.cluster_test, cfg.n_clusters, cfg.experts)
    res.summary = dict(
        seed=np.array(res.seeds),
        updates=np.where(stopped.cpu().numpy(), last, cfg.steps),
        stopped_early=stopped.cpu().numpy(),
        loss=res.history["loss"][last, idx],
        dispatch_entropy=res.history["dispatch_entropy"][last, idx],
        test_accuracy=100 * correct_test.to(torch.float64).mean(1).cpu().numpy(),
        train_accuracy=100 * correct_train.to(torch.float64).mean(1).cpu().numpy(),
        test_dispatch_entropy=metrics.dispatch_entropy(test_counts).cpu().numpy(),
        test_dispatch_counts=test_counts.cpu().numpy(),
    )
