"""Full-batch training (Algorithm 1) of S independent runs as one batched tensor program.

Each step, for every run: draw fresh router noise, route each sample to one expert (noisy top-1),
evaluate the loss of Algorithm 1, take a normalized-GD step for every expert and a GD step for the
router. Single models (no router) take normalized-GD, GD or Adam steps. Every run has its own
``torch.Generator`` streams (init, router noise, evaluation noise) derived from its seed, so a run
gives the same numbers alone or batched with others.

``train`` picks the step engine once (``moesim.engines.resolve``) and then loops: draw the noise
(``moesim.noise``), the engine's step, record the row (``moesim.recorder``), snapshot, the
engine's update (``moesim.optim``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import data as data_mod
from . import engines
from .config import Config, default_lr_single
from .model import Params, init_params, second_layer
from .noise import SeedNoise
from .optim import Adam
from .recorder import Recorder


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


def make_problem(cfg: Config, data=None) -> Problem:
    train_set, test_set = data if data is not None else data_mod.generate(cfg)
    return Problem.build(train_set, test_set, cfg.device, _dtype(cfg))


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
        engine: how a step's gradients are computed (``moesim.engines``). ``"fused"``: the fused
            C kernel of ``moesim.engines.fused`` (CPU, float32, power activations; an error where it
            cannot run); ``"eager"``: hand-written gradients in torch operations
            (``moesim.engines.eager``), any device; ``"autograd"``: the reference, autograd through
            ``moesim.engines.autograd.forward_train``; ``"official-ops"``: the official code's
            operations in its order, run by run and expert by expert
            (``moesim.engines.official_ops``; bit-level replay, slow); ``"auto"``
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
    seeds = _checked(cfg, seeds, engine, check_memory, generate=data is None and problem is None)
    t0 = time.perf_counter()
    dev, dt = cfg.device, _dtype(cfg)
    prob = problem if problem is not None else make_problem(cfg, data)
    S, T = len(seeds), cfg.steps
    a = second_layer(cfg, cfg.filters, dt, dev)
    params = init_params(cfg, seeds, device=dev, dtype=dt) if init is None else _given_init(cfg, init, S, dev, dt)
    eng = engines.resolve(cfg, engine, prob.x)  # chosen once
    if cfg.architecture != "moe":
        noise = None
    elif noise is None:
        noise = SeedNoise(cfg, seeds, prob.x.shape[0], prob.x_test.shape[0], dev, dt)
    adam = None
    if cfg.architecture != "moe" and cfg.single_optimizer == "adam":
        adam = Adam(params.tensors(), default_lr_single(cfg), cfg.weight_decay_single)
    rec = Recorder(cfg, seeds, prob, a, eng, noise, dev, dt)
    workspace = eng.workspace()  # the step's internal buffers, reused from step to step
    step, updates = 0, 0
    try:
        for step in range(T):
            out = eng.step(cfg, params, prob.x, prob.x_sum, prob.y, noise.draw() if noise is not None else None,
                           a, workspace)
            rec.record(step, out.loss, out.margin, out.expert)
            if step % cfg.record_every == 0:
                _check_finite(rec, t0)
                rec.snapshot(step, params)
            if not bool(rec.active.any()):
                break
            updates = step + 1
            eng.update(cfg, params, out.grads, rec.active, adam)
            if progress is not None:
                progress(step + 1, T)
        _check_finite(rec, t0)
    except KeyboardInterrupt as err:
        if isinstance(err, TrainingInterrupted):
            raise
        part = _result(rec, t0, updates)
        part.info.update(incomplete=True, steps_done=updates)
        part.params = _on_cpu(params, clone=True)
        raise TrainingInterrupted(updates, part) from None
    finally:
        if noise is not None:
            noise.close()  # the background noise thread
    if rec.last_snapshot() != updates:
        rec.snapshot(updates, params)
    res = _result(rec, t0, step + 1)
    res.summary = rec.summary(params, res.history)
    if keep_params:
        res.params = _on_cpu(params)
    res.wall_time = time.perf_counter() - t0
    return res


def _checked(cfg: Config, seeds: list[int] | int, engine: str, check_memory: bool, generate: bool) -> list[int]:
    """``train``'s arguments checked (config, device, engine name, memory, seeds); the seeds as a list."""
    cfg.validate()
    check_device(cfg.device)
    engines.check_name(engine)  # the registry itself, so a registered engine is accepted
    if check_memory:
        from . import memory

        n_seeds = seeds if isinstance(seeds, int) and not isinstance(seeds, bool) else len(seeds)
        memory.check(cfg, n_seeds, engine, option="check_memory=False", generate=generate)
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} contain duplicates")
    return seeds


def _result(rec: Recorder, t0: float, upto: int) -> RunResult:
    """The ``RunResult`` of the first ``upto`` steps recorded by ``rec`` (no summary yet)."""
    history, snapshots = rec.tables(upto)
    return RunResult(rec.cfg, rec.seeds, history, snapshots, {}, wall_time=time.perf_counter() - t0,
                     info=dict(engine=rec.engine.name))


def _check_finite(rec: Recorder, t0: float) -> None:
    """Raise ``DivergenceError`` (with the steps before it) once a run's loss was NaN or infinite."""
    if (bad := rec.diverged()) is not None:
        raise DivergenceError(bad[0], bad[1], _result(rec, t0, bad[0]))


def _on_cpu(params: Params, clone: bool = False) -> Params:
    """``params`` detached on the CPU (copies with ``clone``: training may still write into them)."""
    def move(t):
        return None if t is None else (t.detach().cpu().clone() if clone else t.detach().cpu())
    return Params(move(params.W), move(params.b), move(params.theta))


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
