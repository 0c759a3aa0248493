"""The parameter updates of Algorithm 1: normalized GD for the experts, GD for the router, Adam for singles.

Engines compute a step's gradients; ``apply_update`` turns them into the update of every active
run (the ``official-ops`` engine has its own, the official optimizers' operations).
"""

from __future__ import annotations

import math

import torch

from .config import Config, default_lr_single
from .model import Params


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


class Adam:
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


def apply_update(cfg: Config, params: Params, grads, active: torch.Tensor, adam: Adam | None) -> None:
    """One update of the ``active`` runs: Algorithm 1's normalized GD for the experts (``expert_step``)
    and GD for the router, or the single models' GD or Adam (``adam``)."""
    tensors = params.tensors()
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
