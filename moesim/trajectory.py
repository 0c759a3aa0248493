"""Whole training trajectories of Algorithm 1 from given initial parameters and router noise.

``moesim.training.train`` draws W^(0) and the router noise r^(t) from each run's seed;
``run_trajectory`` takes both as arguments, so that runs can share them exactly (common random
numbers) or receive transformed copies (the invariance tests of ``tests/theory/test_invariances.py``).
Each step is the one ``train`` takes: the eager or fused engine's ``moe_step`` (``moesim.engines``)
for the loss and gradients, then ``moesim.optim.apply_update`` (normalized GD for the experts, GD
for the router).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import engines
from .config import Config
from .model import Params, second_layer
from .noise import NoiseStream
from .optim import apply_update
from .training import _dtype


def draw_noises(cfg: Config, seeds: list[int], n: int, *, steps: int | None = None, device="cpu") -> torch.Tensor:
    """The router noise r^(t) that ``train(cfg, seeds)`` draws at steps 0..T-1 (T = ``steps`` or
    ``cfg.steps``): (T, S, n, M), from each seed's ``router-noise`` stream."""
    noise = NoiseStream(cfg, [int(s) for s in seeds], n, cfg.experts, device, _dtype(cfg), "router-noise")
    return torch.stack([noise.draw().clone() for _ in range(cfg.steps if steps is None else steps)])


def run_trajectory(cfg: Config, params: Params, train_x: torch.Tensor, train_y: torch.Tensor,
                   noises: torch.Tensor | Sequence[torch.Tensor], *, engine: str = "eager") -> dict:
    """T = len(noises) full-batch steps of Algorithm 1 (Chen et al., 2022) for S runs from ``params``.

    Args:
        params: W^(0) (S, M, J, d), b^(0) or None, Theta^(0) (S, d, M); not modified.
        train_x: (n, P, d) samples; train_y: (n,) labels in {-1, +1}.
        noises: router noise r^(t) of each step, (T, S, n, M) or T tensors (S, n, M).
        engine: ``"eager"`` (``moesim.engines.eager``, any dtype) or ``"fused"`` (CPU float32 kernel).

    Returns: ``loss`` (T, S), ``expert`` (T, S, n) routed expert, ``margin`` (T, S, n) y*gate*f,
    each at the parameters before step t's update (as ``train``'s history), and ``params``
    after the T updates. Every step is taken (no early stopping).
    """
    if cfg.architecture != "moe" or cfg.load_balancing > 0:
        raise ValueError(f"cfg must be an MoE without load balancing (architecture={cfg.architecture!r}, "
                         f"load_balancing={cfg.load_balancing})")
    if engine not in ("eager", "fused"):
        raise ValueError(f"engine={engine!r} is not allowed; choose 'eager' or 'fused'")
    W = params.W
    if W.dim() != 4 or W.shape[1:3] != (cfg.experts, cfg.filters):
        raise ValueError(f"params.W has shape {tuple(W.shape)}; expected (S, {cfg.experts}, {cfg.filters}, d)")
    S, M, J, d = W.shape
    if params.theta.shape != (S, d, M):
        raise ValueError(f"params.theta has shape {tuple(params.theta.shape)}; expected {(S, d, M)}")
    if (params.b is not None) != cfg.expert_bias or (params.b is not None and params.b.shape != (S, M, J)):
        raise ValueError(f"params.b must be {'a (S, M, J) tensor' if cfg.expert_bias else 'None'} "
                         f"(cfg.expert_bias={cfg.expert_bias})")
    if train_x.dim() != 3 or train_x.shape[2] != d or train_x.dtype != W.dtype:
        raise ValueError(f"train_x has shape {tuple(train_x.shape)} and dtype {train_x.dtype}; "
                         f"expected (n, P, {d}) and {W.dtype}")
    n = train_x.shape[0]
    if train_y.shape != (n,) or not bool((train_y.abs() == 1).all()):
        raise ValueError(f"train_y must be ({n},) labels in {{-1, +1}}, got shape {tuple(train_y.shape)}")
    if len(noises) == 0 or any(r.shape != (S, n, M) or r.dtype != W.dtype for r in noises):
        raise ValueError(f"noises must be a non-empty sequence of ({S}, {n}, {M}) {W.dtype} tensors (one per step)")
    eng = engines.get(engine)
    if (reason := eng.unavailable(cfg, train_x)) is not None:
        raise ValueError(f"engine='fused' cannot run here: {reason}; use engine='eager'")
    p = params.detach()
    x, y = train_x, train_y.to(W.dtype)
    x_sum, a = x.sum(1), second_layer(cfg, J, W.dtype, W.device)
    active, workspace = torch.ones(S, dtype=torch.bool, device=W.device), eng.workspace()
    loss, expert, margin = [], [], []
    with torch.no_grad():
        for r in noises:
            out = eng.moe_step(cfg, p, x, x_sum, y, r, a, workspace)
            loss.append(out.loss)
            expert.append(out.expert)
            margin.append(out.margin)
            apply_update(cfg, p, out.grads, active, None)
    return dict(loss=torch.stack(loss), expert=torch.stack(expert), margin=torch.stack(margin), params=p)
